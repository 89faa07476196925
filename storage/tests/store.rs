//! The writer and reader against real SQLite files.

use std::time::Duration;

use vigil_storage::{
    prepare, spawn_writer, DetectionQuery, EventQuery, EventRecord, MinuteCount, Reader, WriteOp,
    WriterConfig,
};

mod common;
use common::{record, write_all};

#[test]
fn everything_sent_before_finish_is_committed_and_paged_without_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let path = prepare(dir.path()).unwrap();
    let writer = spawn_writer(&path, WriterConfig::default()).unwrap();
    let tx = writer.sender();
    for i in 0..250u64 {
        let cam = if i % 2 == 0 { "a" } else { "b" };
        tx.send(WriteOp::Detections(vec![record(cam, i, 1_000 + i as i64)]))
            .unwrap();
    }
    drop(tx);
    writer.finish();

    let reader = Reader::new(&path);
    // Page through camera "a" with the cursor: every row once, in order.
    let mut seen = Vec::new();
    let mut after = Some(0);
    loop {
        let page = reader
            .detections(&DetectionQuery {
                camera: Some("a".into()),
                after_id: after,
                limit: 40,
                ..Default::default()
            })
            .unwrap();
        if page.is_empty() {
            break;
        }
        after = Some(page.last().unwrap().id);
        seen.extend(page.into_iter().map(|d| d.record.frame_seq));
    }
    let expected: Vec<u64> = (0..250).filter(|i| i % 2 == 0).collect();
    assert_eq!(seen, expected);

    // No cursor: the newest rows, oldest first.
    let tail = reader
        .detections(&DetectionQuery {
            limit: 3,
            ..Default::default()
        })
        .unwrap();
    let seqs: Vec<u64> = tail.iter().map(|d| d.record.frame_seq).collect();
    assert_eq!(seqs, vec![247, 248, 249]);

    let since = reader
        .detections(&DetectionQuery {
            since_ms: Some(1_245),
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(since.len(), 5);
    assert_eq!(since[0].record, record("b", 245, 1_245));
}

#[test]
fn rows_are_readable_while_the_writer_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = prepare(dir.path()).unwrap();
    let writer = spawn_writer(
        &path,
        WriterConfig {
            commit_interval: Duration::from_millis(20),
            ..Default::default()
        },
    )
    .unwrap();
    writer
        .sender()
        .send(WriteOp::Detections(vec![record("a", 1, 5)]))
        .unwrap();
    let reader = Reader::new(&path);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let rows = reader
            .detections(&DetectionQuery {
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        if rows.len() == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "row never became visible"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    writer.finish();
}

#[test]
fn reopening_keeps_data_and_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_all(
        dir.path(),
        vec![WriteOp::Detections(vec![record("a", 1, 5)])],
    );
    assert_eq!(prepare(dir.path()).unwrap(), path);
    let rows = Reader::new(&path)
        .detections(&DetectionQuery {
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(rows.len(), 1);

    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = prepare(dir.path()).unwrap_err().to_string();
    assert!(err.contains("schema version 99"), "{err}");
}

fn event(
    uid: &str,
    camera: &str,
    start_ms: i64,
    end_ms: Option<i64>,
    zones: &[&str],
) -> EventRecord {
    EventRecord {
        uid: uid.into(),
        camera: camera.into(),
        track_id: 7,
        label: "person".into(),
        start_ms,
        end_ms,
        max_score: 0.8,
        best_box: [1.0, 2.0, 3.0, 4.0],
        zones: zones.iter().map(|z| z.to_string()).collect(),
        snapshot: Some(3),
    }
}

#[test]
fn event_updates_get_new_revisions_so_pollers_see_every_change_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_all(
        dir.path(),
        vec![
            WriteOp::Event(event("e1", "gate", 100, None, &[])),
            WriteOp::Event(event("e2", "yard", 200, None, &["lawn"])),
        ],
    );
    let reader = Reader::new(&path);
    let page = reader
        .events(&EventQuery {
            after_revision: Some(0),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(page.len(), 2);
    let cursor = page.last().unwrap().revision;

    // e1 closes after the poller read it: the change comes on the next page.
    let closed = event("e1", "gate", 100, Some(900), &["drive"]);
    write_all(dir.path(), vec![WriteOp::Event(closed)]);
    let next = reader
        .events(&EventQuery {
            after_revision: Some(cursor),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].record.uid, "e1");
    assert_eq!(next[0].record.end_ms, Some(900));
    assert_eq!(next[0].id, page[0].id, "same event, new revision");
    assert!(next[0].revision > cursor);

    let drive = reader
        .events(&EventQuery {
            zone: Some("drive".into()),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(drive.len(), 1);
    assert_eq!(drive[0].record.uid, "e1");
    let in_zone = reader
        .events(&EventQuery {
            zone: Some("lawn".into()),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(in_zone.len(), 1);
    assert_eq!(in_zone[0].record, event("e2", "yard", 200, None, &["lawn"]));
    let by_time = reader
        .events(&EventQuery {
            camera: Some("gate".into()),
            start_from_ms: Some(50),
            start_to_ms: Some(150),
            min_score: Some(0.5),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(by_time.len(), 1);
}

#[test]
fn events_left_open_by_a_crash_close_at_start_at_their_cameras_last_sighting() {
    let dir = tempfile::tempdir().unwrap();
    // A run that died: gate's event open, last gate detection at 5 000 ms;
    // yard's event open with no detections at all; one event closed.
    let path = write_all(
        dir.path(),
        vec![
            WriteOp::Detections(vec![record("gate", 1, 4_000), record("gate", 2, 5_000)]),
            WriteOp::Event(event("g", "gate", 3_000, None, &["drive"])),
            WriteOp::Event(event("y", "yard", 7_000, None, &[])),
            WriteOp::Event(event("done", "gate", 100, Some(200), &[])),
        ],
    );
    let reader = Reader::new(&path);
    let all = |after| {
        reader
            .events(&EventQuery {
                after_revision: Some(after),
                limit: 10,
                ..Default::default()
            })
            .unwrap()
    };
    let cursor = all(0).last().unwrap().revision;

    assert_eq!(vigil_storage::close_interrupted_events(&path).unwrap(), 2);
    let changes = all(cursor);
    let ends: Vec<(&str, Option<i64>)> = changes
        .iter()
        .map(|e| (e.record.uid.as_str(), e.record.end_ms))
        .collect();
    assert_eq!(ends, vec![("g", Some(5_000)), ("y", Some(7_000))]);
    // The zone index moved with the event: zone pollers see the close too.
    let drive = reader
        .events(&EventQuery {
            zone: Some("drive".into()),
            after_revision: Some(cursor),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(drive.len(), 1);
    // Nothing is left open; a second start changes nothing.
    assert_eq!(vigil_storage::close_interrupted_events(&path).unwrap(), 0);
    // The writer carries on after the new revisions.
    write_all(
        dir.path(),
        vec![WriteOp::Event(event("n", "gate", 9_000, None, &[]))],
    );
    let last = all(changes.last().unwrap().revision);
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].record.uid, "n");
}

#[test]
fn minute_counts_add_up_and_cameras_are_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let count = |minute_ms, n| MinuteCount {
        camera: "gate".into(),
        minute_ms,
        label: "car".into(),
        zone: String::new(),
        count: n,
    };
    let camera = vigil_storage::CameraRecord {
        id: "gate".into(),
        source: "rtsp://***@cam/1".into(),
        seen_ms: 5,
    };
    let path = write_all(
        dir.path(),
        vec![
            WriteOp::Counts(vec![count(60_000, 2), count(120_000, 1)]),
            WriteOp::Counts(vec![count(60_000, 3)]),
            WriteOp::Camera(camera),
        ],
    );
    let reader = Reader::new(&path);
    let counts = reader.minute_counts("gate", 0, 180_000).unwrap();
    assert_eq!(counts, vec![count(60_000, 5), count(120_000, 1)]);
    assert_eq!(reader.cameras().unwrap()[0].source, "rtsp://***@cam/1");
}

#[test]
fn files_that_are_not_ours_are_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(vigil_storage::DATABASE_FILE);
    std::fs::write(&file, vec![0x42u8; 4096]).unwrap();
    let err = prepare(dir.path()).unwrap_err().to_string();
    assert!(err.contains("not a Vigil database"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), vec![0x42u8; 4096]);

    std::fs::remove_file(&file).unwrap();
    let other = rusqlite::Connection::open(&file).unwrap();
    other
        .execute_batch("CREATE TABLE invoices (n INTEGER)")
        .unwrap();
    drop(other);
    let err = prepare(dir.path()).unwrap_err().to_string();
    assert!(err.contains("no Vigil mark"), "{err}");
}

#[test]
fn a_damaged_database_is_an_error_at_start_and_is_not_reset() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_all(
        dir.path(),
        vec![WriteOp::Detections(vec![record("a", 1, 5)])],
    );
    // Scribble over the header, as a failing disk might.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..100].copy_from_slice(&[0x5a; 100]);
    std::fs::write(&path, &bytes).unwrap();
    let err = prepare(dir.path()).unwrap_err().to_string();
    assert!(err.contains("not a Vigil database"), "{err}");
    assert!(spawn_writer(&path, WriterConfig::default()).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "left as it was");
}

#[test]
fn revisions_never_go_back_after_retention_deletes_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = prepare(dir.path()).unwrap();
    let reader = Reader::new(&path);
    let first = reader.poll_state().unwrap();
    assert_eq!(first.box_id.len(), 32, "a random id: {first:?}");
    assert_eq!(first.deleted_event_revision, 0);

    // Three events and a detection from 1970: far past any retention.
    let mut config = WriterConfig::default();
    config.retention.check_every = Duration::from_millis(50);
    let writer = spawn_writer(&path, config).unwrap();
    for uid in ["a", "b", "c"] {
        writer
            .sender()
            .send(WriteOp::Event(event(uid, "gate", 1_000, Some(2_000), &[])))
            .unwrap();
    }
    writer
        .sender()
        .send(WriteOp::Detections(vec![record("gate", 1, 1_000)]))
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while reader.poll_state().unwrap().deleted_event_revision < 3 {
        assert!(std::time::Instant::now() < deadline, "retention ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    writer.finish();
    let state = reader.poll_state().unwrap();
    assert_eq!(state.box_id, first.box_id, "the id stays");
    assert!(state.deleted_detection_id >= 1);
    assert!(reader
        .events(&EventQuery {
            limit: 10,
            ..Default::default()
        })
        .unwrap()
        .is_empty());

    // A new writer (a restart) goes on above what was deleted.
    write_all(
        dir.path(),
        vec![WriteOp::Event(event("d", "gate", now_ms(), None, &[]))],
    );
    let page = reader
        .events(&EventQuery {
            after_revision: Some(3),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(
        page[0].revision, 4,
        "a poller at cursor 3 sees the new event"
    );
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
