#!/usr/bin/env bash
# Installs what building, running and testing Vigil needs on Debian 12:
# ffmpeg's libraries and headers (and its CLI: benchmark anchor and test
# clips), GStreamer's RTSP server with Python bindings (a real camera peer in
# the tests), clang for bindgen, Node.js (model fetch and
# the JPEG reference decoder), Chromium (UI tests), mosquitto (MQTT tests),
# debootstrap, lintian and cargo-deb (the package tests), systemd (a real
# journald for the structured-log test), schemathesis (the
# API conformance test), cargo-fuzz (the fuzz targets' short run), g++ (the
# CUDA kernels' source compiled for the host, so their tests need no GPU) and
# the Rust toolchain.
# Safe to run again: it installs only what is missing.
set -euo pipefail

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

packages=(pkg-config clang libclang-dev g++ libavcodec-dev libavformat-dev libavutil-dev libavdevice-dev libjpeg-turbo-progs
          libswscale-dev ffmpeg procps ca-certificates curl
          python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good
          gstreamer1.0-plugins-bad mosquitto wrk debootstrap lintian python3-venv systemd)
command -v node >/dev/null || packages+=(nodejs)
command -v npm >/dev/null || packages+=(npm)
command -v chromium >/dev/null || packages+=(chromium)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    echo "Rust is installed in ~/.cargo/bin: add it to PATH (source ~/.cargo/env)" >&2
  else
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal \
      --component rustfmt,clippy
    echo "Rust installed: run 'source ~/.cargo/env' or open a new shell, then run make again" >&2
  fi
  exit 1
fi

# The Debian package is built with cargo-deb (pinned: its options are part
# of packaging/test-deb.sh).
if ! cargo deb --version 2>/dev/null | grep -q "3.8.0"; then
  cargo install --locked --quiet cargo-deb@3.8.0
fi

# The fuzz targets' short run in the test command (scripts/fuzz-smoke.sh).
if ! cargo fuzz --version 2>/dev/null | grep -q "0.13.2"; then
  cargo install --locked --quiet cargo-fuzz@0.13.2
fi

# schemathesis in its own virtual environment under target/ (pinned: its
# checks are part of appliance/tests/openapi_conformance.rs).
schemathesis_env="$(dirname "$0")/../target/schemathesis"
if ! "$schemathesis_env/bin/schemathesis" --version 2>/dev/null | grep -q "4.32.5"; then
  /usr/bin/python3 -m venv "$schemathesis_env"
  "$schemathesis_env/bin/pip" install --quiet --disable-pip-version-check schemathesis==4.32.5
fi
