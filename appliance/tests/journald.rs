//! Logs under systemd reach journald as structured entries: a real
//! `systemd-journald` runs in a private mount namespace (its own `/run`,
//! nothing written to the host's journal), `vigil run` starts with stderr
//! on a journal stream and `JOURNAL_STREAM` naming it, exactly as systemd
//! starts a service, and the test reads the journal back with `journalctl`.
//! Needs root (a mount namespace), as the package test does.

mod common;

use std::process::Command;

use common::{import_model, StreetBox, VIGIL};
use serde_json::Value;

/// Runs inside the namespace: $1 vigil, $2 config, $3 models, $4 output.
const SCRIPT: &str = r#"
set -eu
mount -t tmpfs tmpfs /run
mkdir -p /run/systemd/journal /run/log/journal
if [ -d /var/log/journal ]; then mount -t tmpfs tmpfs /var/log/journal; fi
/lib/systemd/systemd-journald > /dev/null 2>&1 &
journald=$!
vigil=
# Whatever happens, nothing outlives the namespace (or holds its pipes).
trap 'kill $vigil $journald 2>/dev/null' EXIT
i=0
until [ -S /run/systemd/journal/socket ]; do
  i=$((i + 1)); [ "$i" -lt 100 ] || { echo "journald did not start" >&2; exit 1; }
  sleep 0.1
done
# As systemd starts a service: stderr is a journal stream, and
# JOURNAL_STREAM holds that stream's device:inode.
VIGIL_MODEL_DIR="$3" systemd-cat -t vigil-stderr sh -c \
  'JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec "$0" run --config "$1"' "$1" "$2" &
vigil=$!
i=0
until journalctl --no-pager -q CAMERA=door | grep -q . && journalctl --no-pager -q CAMERA=street | grep -q .; do
  i=$((i + 1)); [ "$i" -lt 600 ] || { echo "no per-camera entries in 60 s" >&2; exit 1; }
  sleep 0.1
done
kill -TERM "$vigil"
wait "$vigil"
vigil=
journalctl --no-pager -o json > "$4"
"#;

fn field<'a>(entry: &'a Value, name: &str) -> Option<&'a str> {
    entry.get(name).and_then(Value::as_str)
}

#[test]
fn journald_gets_structured_entries_per_camera() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    import_model(&models);
    // The street camera streams; the door camera's file does not exist.
    let door = "[[cameras]]\nid = \"door\"\nurl = \"file:///nonexistent/door.mp4\"\n";
    let street = StreetBox::new(tmp.path(), "box", door);
    let out = tmp.path().join("journal.json");
    let run = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            SCRIPT,
            "journald-test",
        ])
        .arg(VIGIL)
        .arg(&street.config)
        .arg(&models)
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "the run under journald failed (a mount namespace needs root): {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let entries: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ours: Vec<&Value> = entries
        .iter()
        .filter(|e| field(e, "SYSLOG_IDENTIFIER") == Some("vigil"))
        .collect();
    assert!(!ours.is_empty(), "no native entries from vigil");

    // The failing camera: a warning, its camera and error as fields.
    let failed = ours
        .iter()
        .find(|e| {
            field(e, "CAMERA") == Some("door") && field(e, "MESSAGE") == Some("source failed")
        })
        .unwrap_or_else(|| panic!("no 'source failed' entry for door in {ours:#?}"));
    assert_eq!(field(failed, "PRIORITY"), Some("4"), "{failed:#?}");
    assert!(
        field(failed, "ERROR").is_some_and(|e| e.contains("door.mp4")),
        "{failed:#?}"
    );
    assert!(field(failed, "CODE_FILE").is_some() && field(failed, "TARGET").is_some());

    // The streaming camera: its own entries, with the decoder as a field.
    let opened = ours
        .iter()
        .find(|e| {
            field(e, "CAMERA") == Some("street") && field(e, "MESSAGE") == Some("source opened")
        })
        .unwrap_or_else(|| panic!("no 'source opened' entry for street in {ours:#?}"));
    assert_eq!(field(opened, "PRIORITY"), Some("5"));
    assert!(field(opened, "DECODER").is_some(), "{opened:#?}");

    // Entries outside any camera carry no CAMERA field, and nothing went
    // to the journal as plain text through stderr.
    assert!(ours.iter().any(|e| e.get("CAMERA").is_none()));
    let text: Vec<_> = entries
        .iter()
        .filter(|e| field(e, "SYSLOG_IDENTIFIER") == Some("vigil-stderr"))
        .collect();
    assert!(text.is_empty(), "text lines on stderr: {text:#?}");
}
