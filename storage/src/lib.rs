//! Vigil's storage: the SQLite history of detections.
//!
//! One writer thread owns the only read-write connection and commits rows in
//! groups (one transaction per commit interval), so a crash loses at most one
//! interval and never corrupts the file. Readers use their own read-only
//! connections; WAL lets them read while the writer writes.

mod migrations;
pub mod reader;
pub mod writer;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use reader::{DetectionQuery, Reader};
pub use writer::{spawn_writer, WriterConfig, WriterHandle, WriterStats};

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
    #[error("database {path} has schema version {found}, newer than this build knows ({known}); upgrade vigil")]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
}

/// A detection to store. Times: `frame_pts_us` is the stream's clock,
/// `frame_wall_ms` the box's wall clock (Unix milliseconds, UTC).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectionRecord {
    pub camera: String,
    pub frame_seq: u64,
    pub frame_pts_us: i64,
    pub frame_wall_ms: i64,
    pub label: String,
    pub score: f32,
    /// `[x0, y0, x1, y1]` in source pixels.
    pub bbox: [f32; 4],
}

/// A stored detection with its row id, which only ever grows: clients page
/// with `after=<id>` and never miss or repeat a row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredDetection {
    pub id: i64,
    #[serde(flatten)]
    pub record: DetectionRecord,
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
