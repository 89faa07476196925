//! The REST API over real HTTP against a real SQLite history and redb hot
//! store: event paging by revision, filters, counts, snapshots, bad input.

use std::sync::Arc;

use serde_json::Value;
use vigil_storage::{
    prepare, spawn_writer, EventRecord, HotStore, MinuteCount, Reader, WriteOp, WriterConfig,
};
use vigil_web_ui::{AppState, CameraDirectory, CameraStatus, LiveFrames, ServerConfig};

/// The appliance's role: it knows which cameras exist.
struct OneCamera;

impl CameraDirectory for OneCamera {
    fn cameras(&self) -> Vec<CameraStatus> {
        vec![CameraStatus {
            id: "gate".into(),
            source: "rtsp://***@cam/1".into(),
            detect_fps: 5.0,
            ingest: serde_json::json!({ "state": "streaming" }),
        }]
    }
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
    match ureq::get(url).call() {
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
    let dir = tempfile::tempdir().unwrap();
    let db = prepare(dir.path()).unwrap();
    let hot = Arc::new(HotStore::open(dir.path(), 1 << 20).unwrap());
    let snapshot = hot.put_snapshot(&[0xFF, 0xD8, 0xFF, 0xD9]).unwrap();
    let mut first = event("a", 1_000, None, &["drive"], 0.9);
    first.snapshot = Some(snapshot);
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
    let server = vigil_web_ui::start(
        &ServerConfig {
            listen: "127.0.0.1:0".into(),
            workers: 1,
        },
        AppState {
            cameras: Arc::new(OneCamera),
            live: Arc::new(LiveFrames::default()),
            reader: Arc::new(Reader::new(&db)),
            storage_health: Arc::new(Default::default()),
            hot,
        },
    )
    .unwrap();
    let base = format!("http://{}/api/v1", server.local_addr);

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

    // Filters.
    let (_, lawn) = get(&format!("{base}/events?zone=lawn"));
    assert_eq!(lawn["events"].as_array().unwrap().len(), 1);
    let (_, strong) = get(&format!("{base}/events?min_score=0.5&from=500&to=2500"));
    assert_eq!(strong["events"].as_array().unwrap().len(), 1);

    // Counts and snapshots.
    let (_, counts) = get(&format!("{base}/counts?camera=gate&from=0&to=120000"));
    assert_eq!(counts["counts"][0]["count"], 3);
    assert_eq!(counts["counts"][0]["minute"], "1970-01-01T00:01:00.000Z");
    let mut jpeg = ureq::get(&format!("http://{}{snap_url}", server.local_addr))
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
        "counts",
        "detections?limit=100000",
    ] {
        assert_eq!(get(&format!("{base}/{bad}")).0, 400, "{bad}");
    }
    assert_eq!(get(&format!("{base}/no-such-thing")).0, 404);
    let (_, health) = get(&format!("{base}/health"));
    assert_eq!(health["status"], "ok");
    server.stop();
}
