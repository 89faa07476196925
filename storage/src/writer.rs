//! The single writer thread: group commit, retention between commits, and a
//! health state the API can show.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rusqlite::{params, Connection, Transaction};
use serde::Serialize;

use crate::retention::{self, RetentionPolicy};
use crate::{sqlite_err, CameraRecord, DetectionRecord, EventRecord, MinuteCount, StorageError};

/// Opens the read-write connection with the settings every writer needs,
/// after making sure the file is ours (or new).
pub(crate) fn open_read_write(path: &Path) -> Result<Connection, StorageError> {
    let err = sqlite_err(path);
    let conn = Connection::open(path).map_err(&err)?;
    crate::migrations::check_identity(&conn, path)?;
    let pages: i64 = conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .map_err(&err)?;
    if pages == 0 {
        // Only possible while the file is empty, before WAL mode writes its
        // header: lets retention give freed pages back (incremental vacuum).
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
            .map_err(&err)?;
    }
    conn.busy_timeout(Duration::from_secs(5)).map_err(&err)?;
    // WAL: readers never block the writer. NORMAL sync: a commit survives a
    // process crash; a power cut can lose the last commits but not the file.
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(&err)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(&err)?;
    // Deleting an event takes its zone index rows with it.
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(&err)?;
    Ok(conn)
}

/// One thing to write. Everything sent within a commit interval shares one
/// transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    Detections(Vec<DetectionRecord>),
    /// Inserts the event, or rewrites it if its `uid` is known.
    Event(EventRecord),
    /// Adds to the per-minute counts.
    Counts(Vec<MinuteCount>),
    /// Records that a camera exists (its source, last seen time).
    Camera(CameraRecord),
}

impl WriteOp {
    fn rows(&self) -> usize {
        match self {
            WriteOp::Detections(d) => d.len(),
            WriteOp::Counts(c) => c.len(),
            WriteOp::Event(_) | WriteOp::Camera(_) => 1,
        }
    }
}

#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Rows arriving within this interval share one transaction...
    pub commit_interval: Duration,
    /// ...unless this many are waiting: then they commit at once, so a fast
    /// producer meets the channel's back-pressure rather than a memory bound.
    pub commit_rows: usize,
    /// Rows kept in memory while the database refuses writes (disk full);
    /// beyond this the oldest are dropped and counted.
    pub max_pending_rows: usize,
    pub retention: RetentionPolicy,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            commit_interval: Duration::from_millis(250),
            commit_rows: 20_000,
            max_pending_rows: 100_000,
            retention: RetentionPolicy::default(),
        }
    }
}

#[derive(Debug, Default)]
pub struct WriterStats {
    pub rows_written: AtomicU64,
    pub commits: AtomicU64,
    pub failed_commits: AtomicU64,
    pub rows_dropped: AtomicU64,
    pub rows_deleted_by_retention: AtomicU64,
    pub pending_rows: AtomicU64,
    /// Frame decoded to detections committed.
    pub lag: crate::StoreLag,
    /// False from a failed commit until the next one succeeds.
    failing: AtomicBool,
    last_error: Mutex<Option<String>>,
}

/// The writer's state for the API: `ok`, or `failing` with the reason.
#[derive(Debug, Clone, Serialize)]
pub struct WriterHealth {
    pub state: &'static str,
    pub rows_written: u64,
    pub commits: u64,
    pub failed_commits: u64,
    pub pending_rows: u64,
    pub rows_dropped: u64,
    pub rows_deleted_by_retention: u64,
    pub last_error: Option<String>,
}

impl WriterStats {
    pub fn health(&self) -> WriterHealth {
        let failing = self.failing.load(Ordering::Relaxed);
        WriterHealth {
            state: if failing { "failing" } else { "ok" },
            rows_written: self.rows_written.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
            failed_commits: self.failed_commits.load(Ordering::Relaxed),
            pending_rows: self.pending_rows.load(Ordering::Relaxed),
            rows_dropped: self.rows_dropped.load(Ordering::Relaxed),
            rows_deleted_by_retention: self.rows_deleted_by_retention.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    fn record_failure(&self, e: String) {
        self.failed_commits.fetch_add(1, Ordering::Relaxed);
        self.failing.store(true, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    }
}

/// Owner of the writer thread. Dropping every sender (or calling
/// [`WriterHandle::finish`]) makes it commit what it has and stop.
pub struct WriterHandle {
    tx: Sender<WriteOp>,
    thread: JoinHandle<()>,
    pub stats: Arc<WriterStats>,
}

impl WriterHandle {
    /// Where producers send writes.
    pub fn sender(&self) -> Sender<WriteOp> {
        self.tx.clone()
    }

    /// Closes this handle's sender and waits until everything sent is committed.
    /// Other senders must be dropped first or this waits for them.
    pub fn finish(self) {
        drop(self.tx);
        if self.thread.join().is_err() {
            tracing::error!("storage writer panicked");
        }
    }
}

/// Starts the writer for the database at `path` (see [`crate::prepare`]).
pub fn spawn_writer(path: &Path, config: WriterConfig) -> Result<WriterHandle, StorageError> {
    let conn = open_read_write(path)?;
    let next_revision: i64 = conn
        .query_row(crate::migrations::NEXT_REVISION_SQL, [], |r| r.get(0))
        .map_err(sqlite_err(path))?;
    // Bounded: if storage stalls, producers see it instead of memory growing.
    let (tx, rx) = crossbeam_channel::bounded(1024);
    let stats = Arc::new(WriterStats::default());
    let committer = GroupCommitter {
        conn,
        path: path.to_path_buf(),
        config,
        stats: stats.clone(),
        pending: Vec::new(),
        pending_rows: 0,
        next_revision,
    };
    let thread = std::thread::Builder::new()
        .name("storage-writer".into())
        .spawn(move || committer.run(rx))
        .map_err(StorageError::Thread)?;
    Ok(WriterHandle { tx, thread, stats })
}

struct GroupCommitter {
    conn: Connection,
    path: PathBuf,
    config: WriterConfig,
    stats: Arc<WriterStats>,
    pending: Vec<WriteOp>,
    pending_rows: usize,
    next_revision: i64,
}

impl GroupCommitter {
    fn run(mut self, rx: Receiver<WriteOp>) {
        let mut commit_at: Option<Instant> = None;
        let mut retention_at = Instant::now() + self.config.retention.check_every;
        loop {
            let wake = commit_at.map_or(retention_at, |c| c.min(retention_at));
            match rx.recv_deadline(wake) {
                Ok(op) => {
                    self.push(op);
                    commit_at.get_or_insert_with(|| Instant::now() + self.config.commit_interval);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.commit();
                    if !self.pending.is_empty() {
                        tracing::error!(
                            rows = self.pending_rows,
                            "shutting down with rows the database refused"
                        );
                    }
                    return;
                }
            }
            let now = Instant::now();
            let full = self.pending_rows >= self.config.commit_rows && !self.stats.is_failing();
            if full || commit_at.is_some_and(|c| now >= c) {
                self.commit();
                commit_at = (!self.pending.is_empty())
                    .then(|| Instant::now() + self.config.commit_interval);
            }
            if now >= retention_at {
                self.enforce_retention();
                retention_at = Instant::now() + self.config.retention.check_every;
            }
        }
    }

    fn push(&mut self, op: WriteOp) {
        self.pending_rows += op.rows();
        self.pending.push(op);
        // Over the memory bound (the database has been refusing writes):
        // drop the oldest whole writes and count their rows.
        while self.pending_rows > self.config.max_pending_rows && self.pending.len() > 1 {
            let old = self.pending.remove(0);
            self.pending_rows -= old.rows();
            self.stats
                .rows_dropped
                .fetch_add(old.rows() as u64, Ordering::Relaxed);
        }
        self.stats
            .pending_rows
            .store(self.pending_rows as u64, Ordering::Relaxed);
    }

    /// Writes everything pending in one transaction; on failure keeps it all
    /// for the next attempt (the transaction rolls back whole).
    fn commit(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut revision = self.next_revision;
        let result = self.conn.transaction().and_then(|tx| {
            for op in &self.pending {
                apply(&tx, op, &mut revision)?;
            }
            tx.commit()
        });
        match result {
            Ok(()) => {
                self.next_revision = revision;
                let now_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                self.stats.lag.record_commit(&self.pending, now_ms);
                self.stats
                    .rows_written
                    .fetch_add(self.pending_rows as u64, Ordering::Relaxed);
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
                if self.stats.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("storage writes resumed");
                }
                self.pending.clear();
                self.pending_rows = 0;
                self.stats.pending_rows.store(0, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::error!(
                    path = %self.path.display(),
                    error = %e,
                    rows = self.pending_rows,
                    "commit failed; rows kept for retry"
                );
                self.stats.record_failure(e.to_string());
            }
        }
    }

    fn enforce_retention(&mut self) {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        match retention::enforce(&mut self.conn, &self.config.retention, now_ms) {
            Ok(deleted) if deleted > 0 => {
                self.stats
                    .rows_deleted_by_retention
                    .fetch_add(deleted, Ordering::Relaxed);
                tracing::info!(rows = deleted, "retention deleted old rows");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention pass failed; will retry"),
        }
    }
}

fn apply(tx: &Transaction<'_>, op: &WriteOp, revision: &mut i64) -> rusqlite::Result<()> {
    match op {
        WriteOp::Detections(rows) => {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO detections
                   (camera, frame_seq, frame_pts_us, frame_wall_ms, label, score, x0, y0, x1, y1)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            for r in rows {
                stmt.execute(params![
                    r.camera,
                    r.frame_seq as i64,
                    r.frame_pts_us,
                    r.frame_wall_ms,
                    r.label,
                    r.score as f64,
                    r.bbox[0] as f64,
                    r.bbox[1] as f64,
                    r.bbox[2] as f64,
                    r.bbox[3] as f64,
                ])?;
            }
        }
        WriteOp::Event(e) => {
            let zones = serde_json::to_string(&e.zones).unwrap_or_else(|_| "[]".into());
            tx.prepare_cached(
                "INSERT INTO events (uid, revision, camera, track_id, label, start_ms, end_ms,
                    max_score, x0, y0, x1, y1, zones, snapshot)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
                 ON CONFLICT(uid) DO UPDATE SET
                    revision = excluded.revision, end_ms = excluded.end_ms,
                    max_score = excluded.max_score, x0 = excluded.x0, y0 = excluded.y0,
                    x1 = excluded.x1, y1 = excluded.y1, zones = excluded.zones,
                    snapshot = excluded.snapshot",
            )?
            .execute(params![
                e.uid,
                *revision,
                e.camera,
                e.track_id as i64,
                e.label,
                e.start_ms,
                e.end_ms,
                e.max_score as f64,
                e.best_box[0] as f64,
                e.best_box[1] as f64,
                e.best_box[2] as f64,
                e.best_box[3] as f64,
                zones,
                e.snapshot.map(|s| s as i64),
            ])?;
            // The zone index follows the event's zone list.
            let id: i64 = tx
                .prepare_cached("SELECT id FROM events WHERE uid = ?1")?
                .query_row([&e.uid], |r| r.get(0))?;
            tx.prepare_cached("DELETE FROM event_zones WHERE event_id = ?1")?
                .execute([id])?;
            let mut add = tx.prepare_cached(
                "INSERT OR IGNORE INTO event_zones (zone, revision, event_id) VALUES (?1, ?2, ?3)",
            )?;
            for zone in &e.zones {
                add.execute(params![zone, *revision, id])?;
            }
            *revision += 1;
        }
        WriteOp::Counts(counts) => {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO minute_counts (camera, minute_ms, label, zone, count)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(camera, minute_ms, label, zone)
                 DO UPDATE SET count = count + excluded.count",
            )?;
            for c in counts {
                stmt.execute(params![c.camera, c.minute_ms, c.label, c.zone, c.count])?;
            }
        }
        WriteOp::Camera(c) => {
            tx.prepare_cached(
                "INSERT INTO cameras (id, source, first_ms, last_ms) VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT(id) DO UPDATE SET source = excluded.source, last_ms = excluded.last_ms",
            )?
            .execute(params![c.id, c.source, c.seen_ms])?;
        }
    }
    Ok(())
}
