//! The writer and reader against real SQLite files.

use std::time::Duration;

use vigil_storage::{prepare, spawn_writer, DetectionQuery, DetectionRecord, Reader, WriterConfig};

fn record(camera: &str, seq: u64, wall_ms: i64) -> DetectionRecord {
    DetectionRecord {
        camera: camera.into(),
        frame_seq: seq,
        frame_pts_us: seq as i64 * 100_000,
        frame_wall_ms: wall_ms,
        label: "person".into(),
        score: 0.9,
        bbox: [1.0, 2.0, 30.0, 40.0],
    }
}

#[test]
fn everything_sent_before_finish_is_committed_and_paged_without_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let path = prepare(dir.path()).unwrap();
    let writer = spawn_writer(&path, WriterConfig::default()).unwrap();
    let tx = writer.sender();
    for i in 0..250u64 {
        let cam = if i % 2 == 0 { "a" } else { "b" };
        tx.send(vec![record(cam, i, 1_000 + i as i64)]).unwrap();
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
    writer.sender().send(vec![record("a", 1, 5)]).unwrap();
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
    let path = prepare(dir.path()).unwrap();
    let writer = spawn_writer(&path, WriterConfig::default()).unwrap();
    writer.sender().send(vec![record("a", 1, 5)]).unwrap();
    writer.finish();
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
