//! Storage speed: sustained inserts through the writer thread, and query
//! latency percentiles on a database of 10 million detections.
//!
//! `cargo bench -p vigil-benches --bench storage` builds the 10M-row database
//! once under `target/bench-data/` (a few minutes) and reuses it.
//! The anchor for inserts is the plain way: one autocommit INSERT per row,
//! measured in the same run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};
use vigil_benches::history::{synthetic_event, CAMERAS, LABELS, SPAN_MS, START_MS};
use vigil_storage::{
    prepare, spawn_writer, DetectionQuery, DetectionRecord, EventQuery, EventRecord, Reader,
    RetentionPolicy, WriteOp, WriterConfig,
};

const BIG_ROWS: u64 = 10_000_000;
const BIG_EVENTS: u64 = 500_000;

fn record(i: u64) -> DetectionRecord {
    DetectionRecord {
        camera: format!("cam{}", i % CAMERAS),
        frame_seq: i / CAMERAS,
        frame_pts_us: (i / CAMERAS) as i64 * 200_000,
        frame_wall_ms: START_MS + (i as i64 * SPAN_MS) / BIG_ROWS as i64,
        label: LABELS[(i / 7 % LABELS.len() as u64) as usize].to_string(),
        score: 0.5 + (i % 50) as f32 / 100.0,
        bbox: [10.0, 20.0, 110.0, 220.0],
    }
}

fn event(i: u64) -> EventRecord {
    synthetic_event(i, BIG_EVENTS)
}

/// Sends `rows` detections through the writer in messages of 100; rows/s.
fn writer_inserts(dir: &Path, rows: u64) -> f64 {
    let path = prepare(dir).unwrap();
    let writer = spawn_writer(&path, WriterConfig::default()).unwrap();
    let tx = writer.sender();
    let started = Instant::now();
    for chunk in (0..rows).step_by(100) {
        tx.send(WriteOp::Detections(
            (chunk..chunk + 100).map(record).collect(),
        ))
        .unwrap();
    }
    drop(tx);
    writer.finish();
    rows as f64 / started.elapsed().as_secs_f64()
}

/// The anchor: one autocommit INSERT per row on the same schema and settings.
fn autocommit_inserts(dir: &Path, rows: u64) -> f64 {
    let path = prepare(dir).unwrap();
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    let started = Instant::now();
    for i in 0..rows {
        let r = record(i);
        conn.execute(
            "INSERT INTO detections (camera, frame_seq, frame_pts_us, frame_wall_ms, label, score,
             x0, y0, x1, y1) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                r.camera,
                r.frame_seq as i64,
                r.frame_pts_us,
                r.frame_wall_ms,
                r.label,
                r.score as f64,
                10.0,
                20.0,
                110.0,
                220.0
            ],
        )
        .unwrap();
    }
    rows as f64 / started.elapsed().as_secs_f64()
}

fn big_database() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-data/storage-10m");
    let path = dir.join(vigil_storage::DATABASE_FILE);
    let complete = path.exists()
        && Connection::open(&path)
            .and_then(|c| c.query_row("SELECT COUNT(*) FROM events", [], |r| r.get::<_, i64>(0)))
            .is_ok_and(|n| n as u64 == BIG_EVENTS);
    if complete {
        return path;
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    eprintln!("building the 10M-detection database once (a few minutes)...");
    let started = Instant::now();
    let path = prepare(&dir).unwrap();
    // The synthetic history is months old: keep retention out of it.
    let keep_all = RetentionPolicy {
        detections_max_age: None,
        events_max_age: None,
        counts_max_age: None,
        ..Default::default()
    };
    let writer = spawn_writer(
        &path,
        WriterConfig {
            retention: keep_all,
            ..Default::default()
        },
    )
    .unwrap();
    let tx = writer.sender();
    for chunk in (0..BIG_ROWS).step_by(1000) {
        tx.send(WriteOp::Detections(
            (chunk..chunk + 1000).map(record).collect(),
        ))
        .unwrap();
    }
    for i in 0..BIG_EVENTS {
        tx.send(WriteOp::Event(event(i))).unwrap();
    }
    drop(tx);
    writer.finish();
    eprintln!("built in {:.0} s", started.elapsed().as_secs_f64());
    path
}

/// Runs `f` `n` times; returns (p50, p95, p99).
fn percentiles(n: usize, mut f: impl FnMut(usize)) -> (Duration, Duration, Duration) {
    let mut times: Vec<Duration> = (0..n)
        .map(|i| {
            let t = Instant::now();
            f(i);
            t.elapsed()
        })
        .collect();
    times.sort();
    let at = |q: f64| times[((n as f64 * q) as usize).min(n - 1)];
    (at(0.50), at(0.95), at(0.99))
}

/// A small deterministic generator, so runs are comparable.
fn pick(i: usize, modulo: u64) -> u64 {
    let x = (i as u64)
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    (x >> 33) % modulo.max(1)
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` discovery: nothing to run
    }
    let tmp = tempfile::tempdir().unwrap();
    let ours = writer_inserts(&tmp.path().join("writer"), 1_000_000);
    let anchor = autocommit_inserts(&tmp.path().join("anchor"), 50_000);
    println!("inserts, writer thread with group commit: {ours:>10.0} rows/s");
    println!("inserts, one autocommit INSERT per row:   {anchor:>10.0} rows/s (anchor)");
    println!("ratio: {:.1}x", ours / anchor);

    let path = big_database();
    let reader = Reader::new(&path);
    let max_id: i64 = Connection::open(&path)
        .unwrap()
        .query_row("SELECT MAX(id) FROM detections", [], |r| r.get(0))
        .unwrap();
    let n = 2000;
    let report = |name: &str, (p50, p95, p99): (Duration, Duration, Duration)| {
        println!(
            "{name:<44} p50 {:>7.3} ms  p95 {:>7.3} ms  p99 {:>7.3} ms",
            p50.as_secs_f64() * 1e3,
            p95.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        )
    };
    report(
        "latest 50 events of a camera",
        percentiles(n, |i| {
            let q = EventQuery {
                camera: Some(format!("cam{}", pick(i, CAMERAS))),
                limit: 50,
                ..Default::default()
            };
            assert_eq!(reader.events(&q).unwrap().len(), 50);
        }),
    );
    report(
        "latest 50 events in a zone",
        percentiles(n, |i| {
            let q = EventQuery {
                zone: Some(format!("zone{}", pick(i, 4))),
                limit: 50,
                ..Default::default()
            };
            assert_eq!(reader.events(&q).unwrap().len(), 50);
        }),
    );
    report(
        "detections of a label in a 1 h range (100)",
        percentiles(n, |i| {
            let from = START_MS + (pick(i, 29 * 24) as i64) * 3_600_000;
            let q = DetectionQuery {
                label: Some(LABELS[pick(i, LABELS.len() as u64) as usize].into()),
                since_ms: Some(from),
                until_ms: Some(from + 3_600_000),
                limit: 100,
                ..Default::default()
            };
            assert_eq!(reader.detections(&q).unwrap().len(), 100);
        }),
    );
    report(
        "cursor page of 100 detections (after=id)",
        percentiles(n, |i| {
            let q = DetectionQuery {
                after_id: Some(pick(i, max_id as u64 - 1000) as i64),
                limit: 100,
                ..Default::default()
            };
            assert_eq!(reader.detections(&q).unwrap().len(), 100);
        }),
    );
    report(
        "cursor page of 100 detections of a camera",
        percentiles(n, |i| {
            let q = DetectionQuery {
                camera: Some(format!("cam{}", pick(i, CAMERAS))),
                after_id: Some(pick(i, max_id as u64 - 100_000) as i64),
                limit: 100,
                ..Default::default()
            };
            assert_eq!(reader.detections(&q).unwrap().len(), 100);
        }),
    );
}
