//! Storage under faults, with real processes and a real full file system:
//! `kill -9` mid-write, a disk that fills up and frees again, retention
//! while pollers page.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use vigil_storage::{
    prepare, spawn_writer, DetectionQuery, DetectionRecord, HotStore, Reader, RetentionPolicy,
    WriteOp, WriterConfig,
};

const CHILD_ENV: &str = "VIGIL_STORAGE_CRASH_CHILD";

mod common;

fn record(seq: u64, wall_ms: i64) -> DetectionRecord {
    common::record("cam", seq, wall_ms)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn integrity_ok(path: &Path) {
    let conn = Connection::open(path).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

/// The highest row written, or `None` while there is none, including the
/// moment after the child created the file and before its schema exists.
fn max_seq(path: &Path) -> Option<i64> {
    let conn = Connection::open(path).ok()?;
    conn.query_row("SELECT MAX(frame_seq) FROM detections", [], |r| r.get(0))
        .ok()
        .flatten()
}

/// Not a test of its own (hence ignored): the child process of the crash
/// test, writing as fast as it can until it is killed.
#[test]
#[ignore = "run by kill_9_during_heavy_writes_loses_only_uncommitted_rows as its child"]
fn crash_child_writes_until_killed() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let path = prepare(&dir).unwrap();
    let hot = HotStore::open(&dir, 1 << 20).unwrap();
    let writer = spawn_writer(&path, WriterConfig::default()).unwrap();
    let tx = writer.sender();
    let mut seq = 0u64;
    loop {
        let batch: Vec<DetectionRecord> = (seq..seq + 100).map(|s| record(s, now_ms())).collect();
        seq += 100;
        tx.send(WriteOp::Detections(batch)).unwrap();
        if seq.is_multiple_of(10_000) {
            hot.add_counter("sent", 10_000).unwrap();
        }
    }
}

#[test]
fn kill_9_during_heavy_writes_loses_only_uncommitted_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child_writes_until_killed",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let path = dir.path().join(vigil_storage::DATABASE_FILE);
    wait_until("the child's first commits", Duration::from_secs(30), || {
        path.exists() && max_seq(&path).unwrap_or(0) > 20_000
    });
    // Everything committed before the kill must survive it.
    let committed_before = max_seq(&path).unwrap();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    integrity_ok(&path);
    let conn = Connection::open(&path).unwrap();
    let (count, max): (i64, i64) = conn
        .query_row("SELECT COUNT(*), MAX(frame_seq) FROM detections", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert!(max >= committed_before, "{max} < {committed_before}");
    // Commits are whole and in order: what survived is a gapless prefix.
    assert_eq!(count, max + 1, "rows 0..={max} all present");
    // Lost: at most what was in flight, i.e. the writer channel (1024
    // messages of 100 rows) plus one commit group (20 000 rows), never more.
    let hot = HotStore::open(dir.path(), 1 << 20).unwrap();
    let sent = hot.counter("sent").unwrap() as i64; // durable, so a lower bound
    assert!(sent > 0);
    let lost = sent - (max + 1);
    assert!(lost <= 1024 * 100 + 20_000, "lost {lost} rows of {sent}");
    // And the database takes writes again.
    let writer = spawn_writer(&path, WriterConfig::default()).unwrap();
    writer
        .sender()
        .send(WriteOp::Detections(vec![record(max as u64 + 1, now_ms())]))
        .unwrap();
    writer.finish();
    assert_eq!(max_seq(&path), Some(max + 1));
}

/// A tmpfs of a fixed size, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount(8) is needed for the disk-full test");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CI runs as root)"
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_disk_fails_writes_clearly_keeps_data_and_recovers_by_itself() {
    let disk = SmallDisk::mount("16m");
    // Ballast that the test frees later, as an operator would.
    let ballast = disk.path().join("ballast");
    std::fs::write(&ballast, vec![0u8; 8_000_000]).unwrap();
    let path = prepare(disk.path()).unwrap();
    let writer = spawn_writer(
        &path,
        WriterConfig {
            commit_interval: Duration::from_millis(20),
            ..Default::default()
        },
    )
    .unwrap();
    let stats = writer.stats.clone();
    let tx = writer.sender();

    let mut sent = 0u64;
    while !stats.is_failing() {
        assert!(sent < 2_000_000, "the disk never filled");
        let batch: Vec<DetectionRecord> = (sent..sent + 500).map(|s| record(s, 0)).collect();
        tx.send(WriteOp::Detections(batch)).unwrap();
        sent += 500;
        std::thread::sleep(Duration::from_millis(5));
    }
    let health = stats.health();
    assert_eq!(health.state, "failing");
    let error = health.last_error.unwrap();
    assert!(error.contains("full"), "{error}");
    // Writes keep being accepted while the disk is full.
    for _ in 0..10 {
        let batch: Vec<DetectionRecord> = (sent..sent + 100).map(|s| record(s, 0)).collect();
        tx.send(WriteOp::Detections(batch)).unwrap();
        sent += 100;
    }
    // What was committed is intact and readable meanwhile.
    let reader = Reader::new(&path);
    let stored = reader
        .detections(&DetectionQuery {
            limit: 10,
            after_id: Some(0),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(stored[0].record.frame_seq, 0);

    std::fs::remove_file(&ballast).unwrap();
    wait_until("writes to resume", Duration::from_secs(20), || {
        !stats.is_failing() && stats.health().pending_rows == 0
    });
    drop(tx);
    writer.finish();
    integrity_ok(&path);
    assert_eq!(max_seq(&path), Some(sent as i64 - 1), "nothing lost");
    assert_eq!(stats.health().rows_dropped, 0);
}

#[test]
fn retention_deletes_old_rows_and_pollers_carry_on_from_their_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let path = prepare(dir.path()).unwrap();
    let day = 86_400_000;
    let writer = spawn_writer(
        &path,
        WriterConfig {
            commit_interval: Duration::from_millis(10),
            retention: RetentionPolicy {
                detections_max_age: Some(Duration::from_secs(86_400)),
                batch_rows: 100,
                check_every: Duration::from_millis(50),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .unwrap();
    let tx = writer.sender();
    // 1000 rows two days old, then 10 fresh ones.
    for chunk in 0..10u64 {
        let old: Vec<DetectionRecord> = (chunk * 100..chunk * 100 + 100)
            .map(|s| record(s, now_ms() - 2 * day))
            .collect();
        tx.send(WriteOp::Detections(old)).unwrap();
    }
    let fresh: Vec<DetectionRecord> = (1000..1010).map(|s| record(s, now_ms())).collect();
    tx.send(WriteOp::Detections(fresh)).unwrap();
    let reader = Reader::new(&path);
    // A poller read the first 50 rows before retention ran.
    wait_until("rows stored", Duration::from_secs(10), || {
        reader.oldest_detection_id().unwrap().is_some()
    });
    let cursor = 50;
    wait_until("retention", Duration::from_secs(20), || {
        writer.stats.health().rows_deleted_by_retention == 1000
    });
    let next = reader
        .detections(&DetectionQuery {
            after_id: Some(cursor),
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    let seqs: Vec<u64> = next.iter().map(|d| d.record.frame_seq).collect();
    assert_eq!(seqs, (1000..1010).collect::<Vec<_>>());
    assert!(reader.oldest_detection_id().unwrap().unwrap() > cursor);
    drop(tx);
    writer.finish();
    integrity_ok(&path);
}

#[test]
fn retention_keeps_the_database_within_its_disk_budget() {
    let dir = tempfile::tempdir().unwrap();
    let path = prepare(dir.path()).unwrap();
    let budget = 2_000_000u64;
    let writer = spawn_writer(
        &path,
        WriterConfig {
            retention: RetentionPolicy {
                max_database_bytes: Some(budget),
                check_every: Duration::from_millis(100),
                max_pass_time: Duration::from_secs(5),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .unwrap();
    let tx = writer.sender();
    for chunk in 0..100u64 {
        let rows: Vec<DetectionRecord> = (chunk * 1000..chunk * 1000 + 1000)
            .map(|s| record(s, now_ms()))
            .collect();
        tx.send(WriteOp::Detections(rows)).unwrap();
    }
    let reader = Reader::new(&path);
    wait_until(
        "the file to shrink under budget",
        Duration::from_secs(60),
        || {
            writer.stats.health().rows_written == 100_000
                && std::fs::metadata(&path).unwrap().len() <= budget
        },
    );
    drop(tx);
    writer.finish();
    integrity_ok(&path);
    // The newest rows are the ones kept.
    assert_eq!(max_seq(&path), Some(99_999));
    let oldest = reader.oldest_detection_id().unwrap().unwrap();
    assert!(oldest > 1, "oldest rows deleted first (oldest id {oldest})");
    // Only what the budget required: a good share of the rows is still there.
    let kept: i64 = Connection::open(&path)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM detections", [], |r| r.get(0))
        .unwrap();
    assert!(kept > 5_000, "kept {kept} rows");
}
