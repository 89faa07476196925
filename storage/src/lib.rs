//! Vigil's storage: the SQLite history (cameras, detections, events,
//! per-minute counts) and the redb hot state (latest detections, counters,
//! snapshot JPEGs).
//!
//! One writer thread owns the only read-write SQLite connection and commits
//! in groups (one transaction per commit interval), so a crash loses at most
//! one interval and never corrupts the file. Readers use their own read-only
//! connections; WAL lets them read while the writer writes. Retention runs
//! in the writer thread in small batches between commits.

pub mod auth;
pub mod hot;
mod interrupted;
pub mod lag;
mod migrations;
pub mod reader;
mod records;
pub mod retention;
pub mod writer;

use std::path::{Path, PathBuf};

pub use auth::{AuthError, AuthStore, Scope};
pub use hot::HotStore;
pub use interrupted::close_interrupted_events;
pub use lag::{LagSummary, StoreLag};
pub use reader::{CountQuery, DetectionQuery, EventQuery, PollState, Reader, StorageUsage};
pub use records::{
    CameraRecord, DetectionRecord, EventRecord, MinuteCount, StoredDetection, StoredEvent,
};
pub use retention::RetentionPolicy;
pub use writer::{spawn_writer, WriteOp, WriterConfig, WriterHandle, WriterStats};

/// The database file inside the storage directory.
pub const DATABASE_FILE: &str = "vigil.sqlite3";

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage directory {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot start the storage writer thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("{path} is not a Vigil database ({reason}); refusing to touch it")]
    NotOurs { path: PathBuf, reason: String },
    #[error("hot-state store {path}: {reason}")]
    Hot { path: PathBuf, reason: String },
    #[error("database {path} has schema version {found}, newer than this build knows ({known}); upgrade vigil")]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
}

/// Creates the storage directory and database if needed and brings the
/// schema up to date. Returns the database path.
pub fn prepare(dir: &Path) -> Result<PathBuf, StorageError> {
    std::fs::create_dir_all(dir).map_err(|e| StorageError::Dir {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let path = dir.join(DATABASE_FILE);
    let mut conn = writer::open_read_write(&path)?;
    migrations::apply(&mut conn, &path)?;
    Ok(path)
}

fn sqlite_err(path: &Path) -> impl Fn(rusqlite::Error) -> StorageError + '_ {
    move |e| StorageError::Sqlite {
        path: path.to_path_buf(),
        source: e,
    }
}
