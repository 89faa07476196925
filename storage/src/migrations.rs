//! Schema versions, applied in order; `PRAGMA user_version` records the last.
//! `PRAGMA application_id` marks the file as Vigil's, so a database of
//! something else is refused, never converted or reset.

use std::path::Path;

use rusqlite::Connection;

use crate::{sqlite_err, StorageError};

/// "VIGL" in ASCII.
pub(crate) const APPLICATION_ID: i64 = 0x5649_474C;

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
    // 2: cameras, events, per-minute counts; detections by label.
    // Events are rewritten as they change; `revision` (unique, from one
    // counter over all events) is the pollers' cursor. `event_zones` indexes
    // events by zone in revision order, so "latest in a zone" is a range scan.
    "CREATE TABLE cameras (
        id       TEXT PRIMARY KEY,
        source   TEXT    NOT NULL,
        first_ms INTEGER NOT NULL,
        last_ms  INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE events (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        uid       TEXT    NOT NULL UNIQUE,
        revision  INTEGER NOT NULL UNIQUE,
        camera    TEXT    NOT NULL,
        track_id  INTEGER NOT NULL,
        label     TEXT    NOT NULL,
        start_ms  INTEGER NOT NULL,
        end_ms    INTEGER,
        max_score REAL    NOT NULL,
        x0 REAL NOT NULL, y0 REAL NOT NULL, x1 REAL NOT NULL, y1 REAL NOT NULL,
        zones     TEXT    NOT NULL,
        snapshot  INTEGER
    );
    CREATE INDEX events_by_camera ON events(camera, revision);
    CREATE INDEX events_by_label ON events(label, start_ms);
    CREATE INDEX events_by_start ON events(start_ms);
    CREATE TABLE event_zones (
        zone     TEXT    NOT NULL,
        revision INTEGER NOT NULL,
        event_id INTEGER NOT NULL REFERENCES events(id) ON DELETE CASCADE,
        PRIMARY KEY (zone, revision)
    ) WITHOUT ROWID;
    CREATE INDEX event_zones_by_event ON event_zones(event_id);
    CREATE TABLE minute_counts (
        camera    TEXT    NOT NULL,
        minute_ms INTEGER NOT NULL,
        label     TEXT    NOT NULL,
        zone      TEXT    NOT NULL,
        count     INTEGER NOT NULL,
        PRIMARY KEY (camera, minute_ms, label, zone)
    ) WITHOUT ROWID;
    CREATE INDEX minute_counts_by_time ON minute_counts(minute_ms);
    CREATE INDEX detections_by_label ON detections(label, frame_wall_ms);",
    // 3: people, API tokens and browser sessions. Only hashes are stored:
    // argon2 for passwords, SHA-256 for tokens and session ids (random and
    // long, so a fast hash is enough). `auth_generation` changes with every
    // write, so a running server notices a token revoked from the CLI.
    "CREATE TABLE users (
        name          TEXT    PRIMARY KEY,
        password_hash TEXT    NOT NULL,
        scope         TEXT    NOT NULL,
        created_ms    INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE api_tokens (
        id           TEXT    PRIMARY KEY,
        name         TEXT    NOT NULL,
        secret_hash  BLOB    NOT NULL,
        scope        TEXT    NOT NULL,
        created_ms   INTEGER NOT NULL,
        last_used_ms INTEGER
    ) WITHOUT ROWID;
    CREATE TABLE sessions (
        id_hash    BLOB    PRIMARY KEY,
        user       TEXT    NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        csrf       TEXT    NOT NULL,
        expires_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE auth_generation (n INTEGER NOT NULL);
    INSERT INTO auth_generation VALUES (0);",
    // 4: what pollers need to trust a cursor. `box_id` names this database
    // (a replaced or reset one gets a new id, so a poller knows its cursor
    // means nothing there). The highest event revision and detection id
    // retention ever removed, kept by triggers on every delete: a cursor
    // below them may have missed rows (a "gap"), and new revisions never
    // go back below them, even after every event was deleted.
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value NOT NULL) WITHOUT ROWID;
    INSERT INTO meta VALUES ('box_id', lower(hex(randomblob(16))));
    INSERT INTO meta VALUES ('deleted_event_revision', 0);
    INSERT INTO meta VALUES ('deleted_detection_id', 0);
    CREATE TRIGGER events_deleted AFTER DELETE ON events BEGIN
        UPDATE meta SET value = MAX(value, OLD.revision) WHERE key = 'deleted_event_revision';
    END;
    CREATE TRIGGER detections_deleted AFTER DELETE ON detections BEGIN
        UPDATE meta SET value = MAX(value, OLD.id) WHERE key = 'deleted_detection_id';
    END;",
    // 5: the box always keeps an admin. Enforced here, not by the callers,
    // so two concurrent requests (or the CLI beside the service) cannot
    // both pass a check and together remove the last one.
    "CREATE TRIGGER users_keep_an_admin_on_delete AFTER DELETE ON users
        WHEN OLD.scope = 'admin' AND NOT EXISTS (SELECT 1 FROM users WHERE scope = 'admin')
    BEGIN
        SELECT RAISE(ABORT, 'vigil: the last admin');
    END;
    CREATE TRIGGER users_keep_an_admin_on_update AFTER UPDATE OF scope ON users
        WHEN OLD.scope = 'admin' AND NEW.scope <> 'admin'
            AND NOT EXISTS (SELECT 1 FROM users WHERE scope = 'admin')
    BEGIN
        SELECT RAISE(ABORT, 'vigil: the last admin');
    END;",
];

/// The next event revision: above every stored one and every one retention
/// removed, so a poller's cursor never points past new changes.
pub(crate) const NEXT_REVISION_SQL: &str = "SELECT MAX(
        COALESCE((SELECT MAX(revision) FROM events), 0),
        (SELECT value FROM meta WHERE key = 'deleted_event_revision')) + 1";

/// Refuses files that are not SQLite or are another program's database.
pub(crate) fn check_identity(conn: &Connection, path: &Path) -> Result<(), StorageError> {
    let not_ours = |reason: String| StorageError::NotOurs {
        path: path.to_path_buf(),
        reason,
    };
    // The first read of a non-SQLite file fails here with "file is not a database".
    let app_id: i64 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(|e| not_ours(e.to_string()))?;
    let tables: i64 = conn
        .query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(|e| not_ours(e.to_string()))?;
    match (app_id, tables) {
        (APPLICATION_ID, _) | (0, 0) => Ok(()),
        (0, _) => Err(not_ours("it has tables but no Vigil mark".into())),
        (other, _) => Err(not_ours(format!("application id {other:#x}"))),
    }
}

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
    if current == 0 {
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(&err)?;
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

#[cfg(test)]
pub(crate) fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}

#[cfg(test)]
pub(crate) fn apply_up_to(conn: &mut Connection, version: usize) {
    conn.pragma_update(None, "application_id", APPLICATION_ID)
        .unwrap();
    for (i, sql) in MIGRATIONS.iter().enumerate().take(version) {
        conn.execute_batch(sql).unwrap();
        conn.pragma_update(None, "user_version", i as i64 + 1)
            .unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_database_upgrades_in_place_keeping_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(crate::DATABASE_FILE);
        let mut conn = Connection::open(&path).unwrap();
        apply_up_to(&mut conn, 1);
        conn.execute(
            "INSERT INTO detections (camera, frame_seq, frame_pts_us, frame_wall_ms, label, score,
             x0, y0, x1, y1) VALUES ('a', 1, 0, 5, 'person', 0.9, 0, 0, 1, 1)",
            [],
        )
        .unwrap();
        drop(conn);
        crate::prepare(dir.path()).unwrap();
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, latest_version());
        let rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM detections", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1);
        conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get::<_, i64>(0))
            .unwrap();
    }
}
