//! The single writer thread with group commit.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rusqlite::{params, Connection};

use crate::{sqlite_err, DetectionRecord, StorageError};

/// Opens the read-write connection with the settings every writer needs.
pub(crate) fn open_read_write(path: &Path) -> Result<Connection, StorageError> {
    let err = sqlite_err(path);
    let conn = Connection::open(path).map_err(&err)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(&err)?;
    // WAL: readers never block the writer. NORMAL sync: a commit survives a
    // process crash; a power cut can lose the last commits but not the file.
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(&err)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(&err)?;
    Ok(conn)
}

#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Rows arriving within this interval share one transaction.
    pub commit_interval: Duration,
    /// Rows kept in memory while the database refuses writes (disk full);
    /// beyond this the oldest are dropped and counted.
    pub max_pending_rows: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            commit_interval: Duration::from_millis(250),
            max_pending_rows: 100_000,
        }
    }
}

#[derive(Debug, Default)]
pub struct WriterStats {
    pub rows_written: AtomicU64,
    pub commits: AtomicU64,
    pub failed_commits: AtomicU64,
    pub rows_dropped: AtomicU64,
}

/// Owner of the writer thread. Dropping every sender (or calling
/// [`WriterHandle::finish`]) makes it commit what it has and stop.
pub struct WriterHandle {
    tx: Sender<Vec<DetectionRecord>>,
    thread: JoinHandle<()>,
    pub stats: Arc<WriterStats>,
}

impl WriterHandle {
    /// Where producers send rows; one message becomes part of one commit.
    pub fn sender(&self) -> Sender<Vec<DetectionRecord>> {
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
    // Bounded: if storage stalls, producers see it instead of memory growing.
    let (tx, rx) = crossbeam_channel::bounded(1024);
    let stats = Arc::new(WriterStats::default());
    let thread_stats = stats.clone();
    let path = path.to_path_buf();
    let thread = std::thread::Builder::new()
        .name("storage-writer".into())
        .spawn(move || {
            GroupCommitter {
                conn,
                path,
                config,
                stats: thread_stats,
                pending: Vec::new(),
            }
            .run(rx)
        })
        .map_err(StorageError::Thread)?;
    Ok(WriterHandle { tx, thread, stats })
}

struct GroupCommitter {
    conn: Connection,
    path: PathBuf,
    config: WriterConfig,
    stats: Arc<WriterStats>,
    pending: Vec<DetectionRecord>,
}

impl GroupCommitter {
    fn run(mut self, rx: Receiver<Vec<DetectionRecord>>) {
        let mut deadline: Option<Instant> = None;
        loop {
            let wait = deadline.map_or(Duration::from_secs(3600), |d| {
                d.saturating_duration_since(Instant::now())
            });
            match rx.recv_timeout(wait) {
                Ok(rows) => {
                    if rows.is_empty() {
                        continue;
                    }
                    self.pending.extend(rows);
                    self.bound_pending();
                    deadline.get_or_insert_with(|| Instant::now() + self.config.commit_interval);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.commit();
                    if !self.pending.is_empty() {
                        tracing::error!(
                            rows = self.pending.len(),
                            "shutting down with rows the database refused"
                        );
                    }
                    return;
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                self.commit();
                deadline = (!self.pending.is_empty())
                    .then(|| Instant::now() + self.config.commit_interval);
            }
        }
    }

    fn bound_pending(&mut self) {
        let excess = self
            .pending
            .len()
            .saturating_sub(self.config.max_pending_rows);
        if excess > 0 {
            self.pending.drain(..excess);
            self.stats
                .rows_dropped
                .fetch_add(excess as u64, Ordering::Relaxed);
        }
    }

    /// Writes all pending rows in one transaction; on failure keeps them for
    /// the next attempt (the transaction rolls back, so nothing is half-written).
    fn commit(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        match insert_all(&mut self.conn, &self.pending) {
            Ok(()) => {
                self.stats
                    .rows_written
                    .fetch_add(self.pending.len() as u64, Ordering::Relaxed);
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
                self.pending.clear();
            }
            Err(e) => {
                self.stats.failed_commits.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    path = %self.path.display(),
                    error = %e,
                    rows = self.pending.len(),
                    "commit failed; rows kept for retry"
                );
            }
        }
    }
}

fn insert_all(conn: &mut Connection, rows: &[DetectionRecord]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
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
    tx.commit()
}
