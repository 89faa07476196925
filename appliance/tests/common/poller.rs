//! The reference poller (`vigil poll`) run against test boxes, and the
//! polling contract checked on what it wrote.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use super::{StreetBox, VIGIL};

pub fn start_poller(boxes: &[&StreetBox], out: &Path, state: &Path, once: bool) -> Child {
    let mut cmd = Command::new(VIGIL);
    cmd.arg("poll");
    for b in boxes {
        cmd.args(["--from", &b.url, "--token", &b.token]);
    }
    cmd.arg("--out").arg(out).arg("--state").arg(state);
    cmd.args(["--interval", "0.3"]);
    if once {
        cmd.arg("--once");
    }
    cmd.stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Every line of the output.
pub fn written(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect()
}

pub fn events_from(out: &Path, source: &str) -> usize {
    written(out)
        .iter()
        .filter(|l| l["source"] == source && l.get("event").is_some())
        .count()
}

/// The contract, after a final drain: no gap, no change written twice,
/// revisions in order, and every event the box stored (up to the last
/// revision drained) in its final state. Returns how many events arrived.
pub fn assert_every_change_once(out: &Path, x: &StreetBox) -> usize {
    let mut seen = HashSet::new();
    let mut latest: BTreeMap<i64, i64> = BTreeMap::new();
    let mut last_revision = 0;
    for l in written(out)
        .iter()
        .filter(|l| l["source"] == x.url.as_str())
    {
        assert!(l.get("gap").is_none(), "no gap expected: {l}");
        let e = &l["event"];
        let (id, revision) = (e["id"].as_i64().unwrap(), e["revision"].as_i64().unwrap());
        assert!(
            seen.insert((id, revision)),
            "({id}, {revision}) written twice"
        );
        assert!(revision > last_revision, "revisions in order");
        last_revision = revision;
        latest.insert(id, revision);
    }
    for (id, revision) in x
        .stored_events()
        .into_iter()
        .filter(|(_, revision)| *revision <= last_revision)
    {
        assert_eq!(latest.get(&id), Some(&revision), "{}: event {id}", x.url);
    }
    latest.len()
}
