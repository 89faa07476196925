//! The polling contract end to end: two real boxes on the street clip, the
//! reference poller following both, one box and the poller restarted
//! mid-way. Every event each box stored reaches the poller's output in its
//! final state, and no change is written twice.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{assets, free_port, import_model, Guard, VIGIL};
use serde_json::Value;

struct TestBox {
    config: PathBuf,
    data: PathBuf,
    url: String,
    token: String,
}

fn make_box(dir: &Path, name: &str) -> TestBox {
    let port = free_port();
    let data = dir.join(name);
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[storage]\npath = {data:?}\n\
             [[cameras]]\nid = \"street\"\nurl = \"file://{}?loop=1\"\ndetect_fps = 3\n",
            assets().join("video/vtest.avi").display()
        ),
    )
    .unwrap();
    let out = Command::new(VIGIL)
        .args(["token", "create", "hq", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success());
    TestBox {
        config,
        data,
        url: format!("http://127.0.0.1:{port}"),
        token: String::from_utf8(out.stdout).unwrap().trim().to_string(),
    }
}

fn start_box(b: &TestBox, models: &Path) -> Guard {
    Guard(Some(
        Command::new(VIGIL)
            .args(["run", "--config"])
            .arg(&b.config)
            .env("VIGIL_MODEL_DIR", models)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ))
}

fn start_poller(boxes: &[&TestBox], out: &Path, state: &Path, once: bool) -> Child {
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

/// Stops a child with SIGTERM and waits for a clean exit.
fn stop(mut guard: Guard) {
    let mut child = guard.0.take().unwrap();
    common::signal(&child, "TERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            return;
        }
        assert!(Instant::now() < deadline, "no exit within 30 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The output's event lines per source.
fn written(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect()
}

fn events_from(out: &Path, source: &str) -> usize {
    written(out)
        .iter()
        .filter(|l| l["source"] == source && l.get("event").is_some())
        .count()
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !ok() {
        assert!(Instant::now() < deadline, "{what} within 90 s");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `(id, revision)` of every event a box stored.
fn stored(data: &Path) -> BTreeMap<i64, i64> {
    let db = rusqlite::Connection::open(data.join("vigil.sqlite3")).unwrap();
    let mut stmt = db.prepare("SELECT id, revision FROM events").unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows
}

#[test]
fn every_event_of_two_boxes_arrives_once_across_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    import_model(&models);
    let a = make_box(tmp.path(), "a");
    let b = make_box(tmp.path(), "b");
    let out = tmp.path().join("events.jsonl");
    let state = tmp.path().join("poll-state");

    let box_a = start_box(&a, &models);
    let box_b = start_box(&b, &models);
    let poller = Guard(Some(start_poller(&[&a, &b], &out, &state, false)));
    wait_for("events from both boxes", || {
        events_from(&out, &a.url) >= 3 && events_from(&out, &b.url) >= 3
    });

    // Box b restarts (its events stay in its database, revisions go on);
    // the poller retries it meanwhile and keeps following a.
    stop(box_b);
    let before_restart = events_from(&out, &b.url);
    std::thread::sleep(Duration::from_secs(2));
    let box_b = start_box(&b, &models);
    wait_for("events from b after its restart", || {
        events_from(&out, &b.url) > before_restart + 2
    });

    // The poller restarts and resumes from its cursors.
    stop(poller);
    let poller = Guard(Some(start_poller(&[&a, &b], &out, &state, false)));
    let so_far = events_from(&out, &a.url);
    wait_for("events from a after the poller's restart", || {
        events_from(&out, &a.url) > so_far + 2
    });

    // Everything stops cleanly: a clean stop closes the open events, a
    // last change each. The boxes come back and the poller drains them once.
    stop(poller);
    stop(box_a);
    stop(box_b);
    let box_a = start_box(&a, &models);
    let box_b = start_box(&b, &models);
    wait_for("both boxes answer again", || {
        [&a, &b]
            .iter()
            .all(|x| ureq::get(&format!("{}/healthz", x.url)).call().is_ok())
    });
    let mut drain = start_poller(&[&a, &b], &out, &state, true);
    let status = drain.wait().unwrap();
    assert!(status.success());
    stop(box_a);
    stop(box_b);
    // Every event a box stored, in its final state, is in the output, except
    // changes made after the drain (by the cameras running again, or the
    // last stop): those have revisions above the last one drained.
    let lines = written(&out);
    for x in [&a, &b] {
        let mut seen = HashSet::new();
        let mut latest: BTreeMap<i64, i64> = BTreeMap::new();
        let mut last_revision = 0;
        for l in lines.iter().filter(|l| l["source"] == x.url.as_str()) {
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
        let db = stored(&x.data);
        let drained: BTreeMap<i64, i64> = db
            .into_iter()
            .filter(|(_, revision)| *revision <= last_revision)
            .collect();
        for (id, revision) in &drained {
            assert_eq!(latest.get(id), Some(revision), "{}: event {id}", x.url);
        }
        assert!(latest.len() >= 5, "{}: {} events", x.url, latest.len());
    }
}
