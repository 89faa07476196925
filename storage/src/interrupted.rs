//! Events left open by a crash or power cut.
//!
//! A clean stop closes every event; after an unclean one, events whose
//! object was in view stay open (`end_ms` NULL) forever, and a poller would
//! wait for an end that never comes. At start-up, before the writer runs,
//! they are closed at the last moment the box provably still saw their
//! camera: its newest stored detection (never before the event's start).

use std::path::Path;

use rusqlite::{params, OptionalExtension};

use crate::{sqlite_err, StorageError};

/// Closes every open event; returns how many. Each gets a new revision, so
/// pollers and live feeds see the change like any other.
pub fn close_interrupted_events(path: &Path) -> Result<usize, StorageError> {
    let err = sqlite_err(path);
    let mut conn = crate::writer::open_read_write(path)?;
    let tx = conn.transaction().map_err(&err)?;
    let open: Vec<(i64, String, i64)> = {
        let mut stmt = tx
            .prepare("SELECT id, camera, start_ms FROM events WHERE end_ms IS NULL ORDER BY id")
            .map_err(&err)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(&err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(&err)?
    };
    if open.is_empty() {
        return Ok(0);
    }
    let first_revision: i64 = tx
        .query_row(crate::migrations::NEXT_REVISION_SQL, [], |r| r.get(0))
        .map_err(&err)?;
    for (revision, (id, camera, start_ms)) in (first_revision..).zip(&open) {
        let last_seen: Option<i64> = tx
            .query_row(
                "SELECT frame_wall_ms FROM detections
                 WHERE id = (SELECT MAX(id) FROM detections WHERE camera = ?1)",
                [camera],
                |r| r.get(0),
            )
            .optional()
            .map_err(&err)?;
        let end_ms = last_seen.unwrap_or(*start_ms).max(*start_ms);
        tx.execute(
            "UPDATE events SET end_ms = ?1, revision = ?2 WHERE id = ?3",
            params![end_ms, revision, id],
        )
        .map_err(&err)?;
        tx.execute(
            "UPDATE event_zones SET revision = ?1 WHERE event_id = ?2",
            params![revision, id],
        )
        .map_err(&err)?;
    }
    tx.commit().map_err(&err)?;
    Ok(open.len())
}
