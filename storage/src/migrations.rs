//! Schema versions, applied in order; `PRAGMA user_version` records the last.

use std::path::Path;

use rusqlite::Connection;

use crate::{sqlite_err, StorageError};

/// Each entry moves the schema one version up. Never edit a released entry:
/// add a new one.
const MIGRATIONS: &[&str] = &[
    // 1: detections. `id` is AUTOINCREMENT so ids are never reused, even
    // after retention deletes the newest rows: it is the clients' cursor.
    "CREATE TABLE detections (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        camera        TEXT    NOT NULL,
        frame_seq     INTEGER NOT NULL,
        frame_pts_us  INTEGER NOT NULL,
        frame_wall_ms INTEGER NOT NULL,
        label         TEXT    NOT NULL,
        score         REAL    NOT NULL,
        x0 REAL NOT NULL, y0 REAL NOT NULL, x1 REAL NOT NULL, y1 REAL NOT NULL
    );
    CREATE INDEX detections_by_camera ON detections(camera, id);
    CREATE INDEX detections_by_wall_time ON detections(frame_wall_ms);",
];

pub(crate) fn apply(conn: &mut Connection, path: &Path) -> Result<(), StorageError> {
    let err = sqlite_err(path);
    let current: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(&err)?;
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(StorageError::SchemaTooNew {
            path: path.to_path_buf(),
            found: current,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction().map_err(&err)?;
        tx.execute_batch(sql).map_err(&err)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)
            .map_err(&err)?;
        tx.commit().map_err(&err)?;
        tracing::info!(version = i + 1, "database schema migrated");
    }
    Ok(())
}
