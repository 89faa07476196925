//! The REST API over real HTTP against a real SQLite history and redb hot
//! store: event paging by revision, filters, counts, snapshots, bad input.

mod common;

use std::cell::RefCell;

use common::TestServer;
use serde_json::Value;
use vigil_storage::{spawn_writer, EventRecord, MinuteCount, WriteOp, WriterConfig};

thread_local! {
    /// The read-only API token of this test's server, sent with every request.
    static TOKEN: RefCell<String> = const { RefCell::new(String::new()) };
}

fn use_token(t: &str) {
    TOKEN.with(|c| *c.borrow_mut() = t.to_string());
}

fn bearer() -> String {
    TOKEN.with(|c| format!("Bearer {}", c.borrow()))
}

fn event(uid: &str, start_ms: i64, end_ms: Option<i64>, zones: &[&str], score: f32) -> EventRecord {
    EventRecord {
        uid: uid.into(),
        camera: "gate".into(),
        track_id: 1,
        label: "person".into(),
        start_ms,
        end_ms,
        max_score: score,
        best_box: [1.0, 2.0, 3.0, 4.0],
        zones: zones.iter().map(|z| z.to_string()).collect(),
        snapshot: None,
    }
}

fn get(url: &str) -> (u16, Value) {
    match ureq::get(url).header("Authorization", bearer()).call() {
        Ok(mut r) => (
            r.status().as_u16(),
            serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap(),
        ),
        Err(ureq::Error::StatusCode(code)) => (code, Value::Null),
        Err(e) => panic!("{url}: {e}"),
    }
}

fn write(path: &std::path::Path, ops: Vec<WriteOp>) {
    let writer = spawn_writer(path, WriterConfig::default()).unwrap();
    for op in ops {
        writer.sender().send(op).unwrap();
    }
    writer.finish();
}

#[test]
fn events_page_by_revision_and_filters_counts_snapshots_and_bad_input() {
    let mut server = TestServer::start();
    let snapshot = server.hot.put_snapshot(&[0xFF, 0xD8, 0xFF, 0xD9]).unwrap();
    let mut first = event("a", 1_000, None, &["drive"], 0.9);
    first.snapshot = Some(snapshot);
    let db = server.db.clone();
    write(
        &db,
        vec![
            WriteOp::Event(first.clone()),
            WriteOp::Event(event("b", 2_000, None, &[], 0.4)),
            WriteOp::Event(event("c", 3_000, Some(4_000), &["lawn"], 0.8)),
            WriteOp::Counts(vec![MinuteCount {
                camera: "gate".into(),
                minute_ms: 60_000,
                label: "person".into(),
                zone: "drive".into(),
                count: 3,
            }]),
        ],
    );
    use_token(&server.read_token);
    let base = server.api();

    // A poller pages through every change by revision.
    let (status, page) = get(&format!("{base}/events?after=0&limit=2"));
    assert_eq!(status, 200);
    let uids: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["uid"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(page["events"].as_array().unwrap().len(), 2, "{page}");
    assert!(uids.iter().all(|u| u.is_empty()), "uids stay internal");
    let first_json = &page["events"][0];
    assert_eq!(first_json["start_time"], "1970-01-01T00:00:01.000Z");
    assert_eq!(first_json["end_time"], Value::Null);
    assert_eq!(first_json["zones"][0], "drive");
    let snap_url = first_json["snapshot"].as_str().unwrap().to_string();
    let cursor = page["next_after"].as_i64().unwrap();
    let (_, rest) = get(&format!("{base}/events?after={cursor}"));
    assert_eq!(rest["events"].as_array().unwrap().len(), 1);
    let cursor = rest["next_after"].as_i64().unwrap();

    // Event "a" closes: the poller gets exactly that change next.
    let mut closed = first;
    closed.end_ms = Some(9_000);
    write(&db, vec![WriteOp::Event(closed)]);
    let (_, change) = get(&format!("{base}/events?after={cursor}"));
    let changes = change["events"].as_array().unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0]["end_time"], "1970-01-01T00:00:09.000Z");
    let (_, none) = get(&format!("{base}/events?after={}", change["next_after"]));
    assert!(none["events"].as_array().unwrap().is_empty());

    // People scroll back: the newest changes before a revision, newest last.
    let newest = change["next_after"].as_i64().unwrap();
    let (_, back) = get(&format!("{base}/events?before={newest}&limit=2"));
    let back: Vec<i64> = back["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["revision"].as_i64().unwrap())
        .collect();
    assert_eq!(back.len(), 2, "{back:?}");
    assert!(back[0] < back[1] && back[1] < newest, "{back:?}");

    // Filters.
    let (_, lawn) = get(&format!("{base}/events?zone=lawn"));
    assert_eq!(lawn["events"].as_array().unwrap().len(), 1);
    let (_, strong) = get(&format!("{base}/events?min_score=0.5&from=500&to=2500"));
    assert_eq!(strong["events"].as_array().unwrap().len(), 1);

    // Counts and snapshots.
    let (_, counts) = get(&format!("{base}/counts?camera=gate&from=0&to=120000"));
    assert_eq!(counts["counts"][0]["count"], 3);
    assert_eq!(counts["counts"][0]["minute"], "1970-01-01T00:01:00.000Z");
    let (_, by_zone) = get(&format!(
        "{base}/counts?camera=gate&from=0&to=120000&zone=drive&label=person"
    ));
    assert_eq!(by_zone["counts"].as_array().unwrap().len(), 1);
    let (_, other) = get(&format!(
        "{base}/counts?camera=gate&from=0&to=120000&zone=lawn"
    ));
    assert!(other["counts"].as_array().unwrap().is_empty());
    let mut jpeg = ureq::get(&format!("{}{snap_url}", server.origin))
        .header("Authorization", bearer())
        .call()
        .unwrap();
    assert_eq!(
        jpeg.body_mut().read_to_vec().unwrap(),
        vec![0xFF, 0xD8, 0xFF, 0xD9]
    );
    assert_eq!(get(&format!("{base}/snapshots/999.jpg")).0, 404);

    // Bad input: clear 400s, never a crash.
    for bad in [
        "events?limit=0",
        "events?min_score=2",
        "events?after=-1",
        "events?from=yesterday",
        "events?camera=../x",
        "events?colour=red",
        "counts?camera=gate&from=5&to=5",
        "counts?camera=gate&from=0",
        "counts",
        "detections?limit=100000",
    ] {
        assert_eq!(get(&format!("{base}/{bad}")).0, 400, "{bad}");
    }
    assert_eq!(get(&format!("{base}/no-such-thing")).0, 404);
    let (_, one) = get(&format!("{base}/events/1"));
    assert_eq!(one["id"], 1);
    assert_eq!(get(&format!("{base}/events/999")).0, 404);
    assert_eq!(get(&format!("{base}/events/x")).0, 400);
    server.stop();
}

/// Reads a server-sent event feed on its own thread: `(id, data)` pairs.
fn follow(url: String, last_event_id: Option<&str>) -> std::sync::mpsc::Receiver<(i64, Value)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut request = ureq::get(&url).header("Authorization", bearer());
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    let response = request.call().expect("feed opens");
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    std::thread::spawn(move || {
        use std::io::BufRead;
        let reader = std::io::BufReader::new(response.into_body().into_reader());
        let mut id = None;
        for line in reader.lines() {
            let Ok(line) = line else { return };
            if let Some(v) = line.strip_prefix("id: ") {
                id = v.parse::<i64>().ok();
            } else if let Some(data) = line.strip_prefix("data: ") {
                let value = serde_json::from_str(data).unwrap();
                if tx.send((id.take().unwrap(), value)).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

fn next(rx: &std::sync::mpsc::Receiver<(i64, Value)>) -> (i64, Value) {
    rx.recv_timeout(std::time::Duration::from_secs(10))
        .expect("a live event within 10 s")
}

#[test]
fn live_feed_pushes_each_stored_change_and_resumes_from_last_event_id() {
    let mut server = TestServer::start();
    let writer = spawn_writer(&server.db, WriterConfig::default()).unwrap();
    let send = |e: EventRecord| writer.sender().send(WriteOp::Event(e)).unwrap();
    send(event("old", 1_000, Some(2_000), &[], 0.9));
    use_token(&server.read_token);
    let base = server.api();
    // Wait until "old" is committed, so "from now" means after it.
    while get(&format!("{base}/events")).1["events"]
        .as_array()
        .is_none_or(|e| e.is_empty())
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let feed = follow(format!("{base}/events/live"), None);
    let lawn_only = follow(format!("{base}/events/live?zone=lawn"), None);
    let opened = event("new", 5_000, None, &[], 0.7);
    send(opened.clone());
    let (open_id, open_data) = next(&feed);
    assert_eq!(open_data["start_time"], "1970-01-01T00:00:05.000Z");
    assert_eq!(open_data["end_time"], Value::Null);
    assert_eq!(open_data["revision"], open_id);
    let mut closed = opened;
    closed.end_ms = Some(8_000);
    closed.zones = vec!["lawn".into()];
    send(closed);
    let (close_id, close_data) = next(&feed);
    assert!(close_id > open_id);
    assert_eq!(close_data["end_time"], "1970-01-01T00:00:08.000Z");
    // "old" predates the feed and never shows; the zone filter applies.
    assert_eq!(next(&lawn_only).0, close_id);

    // A client that saw only the opening resumes and gets the close; one
    // that saw everything gets nothing more.
    let resumed = follow(format!("{base}/events/live"), Some(&open_id.to_string()));
    assert_eq!(next(&resumed).0, close_id);
    let caught_up = follow(format!("{base}/events/live"), Some(&close_id.to_string()));
    assert!(caught_up
        .recv_timeout(std::time::Duration::from_millis(800))
        .is_err());
    // From revision 0: the whole history, oldest first.
    let replay = follow(format!("{base}/events/live?after=0"), None);
    assert_eq!(next(&replay).1["start_time"], "1970-01-01T00:00:01.000Z");

    let bad = ureq::get(&format!("{base}/events/live"))
        .header("Authorization", bearer())
        .header("Last-Event-ID", "yesterday")
        .call();
    assert!(matches!(bad, Err(ureq::Error::StatusCode(400))), "{bad:?}");

    // Open feeds end when the server stops rather than holding it up for
    // the full shutdown timeout (5 s).
    let stopping = std::time::Instant::now();
    server.stop();
    assert!(stopping.elapsed() < std::time::Duration::from_secs(3));
    writer.finish();
}

#[test]
fn live_streams_end_when_their_token_is_revoked() {
    let server = TestServer::start();
    let (info, secret) = server
        .auth
        .create_token("short-lived", vigil_storage::Scope::Read)
        .unwrap();
    use_token(&secret);
    let feed = follow(format!("{}/events/live", server.api()), None);
    let mjpeg = ureq::get(&format!("{}/cameras/gate/stream.mjpeg", server.api()))
        .header("Authorization", bearer())
        .call()
        .expect("the MJPEG stream opens");
    let mjpeg_ended = std::thread::spawn(move || {
        let mut body = mjpeg.into_body().into_reader();
        std::io::copy(&mut body, &mut std::io::sink()).is_ok()
    });
    // Open feeds stay open while the token is good.
    assert_eq!(
        feed.recv_timeout(std::time::Duration::from_millis(2500)),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout)
    );
    assert!(!mjpeg_ended.is_finished());
    server.auth.revoke_token(&info.id).unwrap();
    assert_eq!(
        feed.recv_timeout(std::time::Duration::from_secs(10)),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected),
        "the feed ends"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !mjpeg_ended.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(mjpeg_ended.is_finished(), "the MJPEG stream ends");
}

#[test]
fn a_cursor_behind_retention_is_told_of_the_gap() {
    let server = TestServer::start();
    use_token(&server.read_token);
    let base = server.api();
    let mut config = WriterConfig::default();
    config.retention.check_every = std::time::Duration::from_millis(50);
    let writer = spawn_writer(&server.db, config).unwrap();
    // Two events from 1970 (deleted by retention at once), then a fresh one.
    writer
        .sender()
        .send(WriteOp::Event(event("old1", 1_000, Some(2_000), &[], 0.9)))
        .unwrap();
    writer
        .sender()
        .send(WriteOp::Event(event("old2", 1_000, Some(2_000), &[], 0.9)))
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while get(&format!("{base}/events?after=0")).1["gap"].is_null() {
        assert!(
            std::time::Instant::now() < deadline,
            "retention deleted them"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    writer
        .sender()
        .send(WriteOp::Event(event("new", now, None, &[], 0.9)))
        .unwrap();
    writer.finish();

    let (_, behind) = get(&format!("{base}/events?after=0"));
    assert_eq!(behind["gap"]["after"], 0, "{behind}");
    assert_eq!(behind["gap"]["deleted_up_to"], 2, "{behind}");
    assert_eq!(
        behind["events"][0]["revision"], 3,
        "the new one still comes"
    );
    assert_eq!(behind["box"].as_str().unwrap().len(), 32);
    let (_, current) = get(&format!("{base}/events?after=2"));
    assert!(current["gap"].is_null(), "{current}");
    let (_, newest) = get(&format!("{base}/events"));
    assert!(newest["gap"].is_null(), "no cursor, no gap");

    // The live feed says it first.
    let response = ureq::get(&format!("{base}/events/live"))
        .header("Authorization", bearer())
        .header("Last-Event-ID", "0")
        .call()
        .unwrap();
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(response.into_body().into_reader()).lines();
    let mut head = String::new();
    while !head.contains("data: ") {
        head.push_str(&lines.next().unwrap().unwrap());
        head.push('\n');
    }
    assert!(
        head.contains("event: gap\ndata: {\"after\":0,\"deleted_up_to\":2}"),
        "{head}"
    );
}
