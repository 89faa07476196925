//! Read-only queries over their own connections.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params_from_iter, types::Value, Connection, OpenFlags, Row};

use crate::{
    sqlite_err, CameraRecord, DetectionRecord, EventRecord, MinuteCount, StorageError,
    StoredDetection, StoredEvent,
};

/// Which detections to return. Rows always come in ascending id order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DetectionQuery {
    pub camera: Option<String>,
    pub label: Option<String>,
    /// Only frames seen at or after this wall time (Unix ms).
    pub since_ms: Option<i64>,
    /// Only frames seen before this wall time (Unix ms).
    pub until_ms: Option<i64>,
    /// Only rows with an id above this cursor: the next page.
    pub after_id: Option<i64>,
    pub limit: usize,
}

/// Which events to return. Rows come in ascending revision order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventQuery {
    pub camera: Option<String>,
    pub label: Option<String>,
    /// Events that have been in this zone.
    pub zone: Option<String>,
    /// Events that started in `[start_from_ms, start_to_ms)`.
    pub start_from_ms: Option<i64>,
    pub start_to_ms: Option<i64>,
    pub min_score: Option<f32>,
    /// Only changes after this revision: the next page.
    pub after_revision: Option<i64>,
    /// Only changes before this revision: the previous page, for people
    /// scrolling back in time (newest first).
    pub before_revision: Option<i64>,
    pub limit: usize,
}

/// Which per-minute counts to return.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CountQuery {
    pub camera: String,
    /// `[from_ms, to_ms)`, Unix milliseconds.
    pub from_ms: i64,
    pub to_ms: i64,
    pub label: Option<String>,
    /// A zone's name, `""` for first sightings, `LINE:in` / `LINE:out`.
    pub zone: Option<String>,
}

/// See [`Reader::poll_state`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PollState {
    pub box_id: String,
    /// Changes up to this revision may have been removed by retention.
    pub deleted_event_revision: i64,
    /// Detections up to this id may have been removed by retention.
    pub deleted_detection_id: i64,
}

/// How much is stored.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StorageUsage {
    pub detections: u64,
    pub events: u64,
    pub minute_counts: u64,
    /// The SQLite file and its write-ahead log.
    pub database_bytes: u64,
    /// The redb hot store (latest detections, snapshots).
    pub hot_bytes: u64,
}

/// A small pool of read-only connections.
pub struct Reader {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Reader {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
        }
    }

    fn open(&self) -> Result<Connection, StorageError> {
        let err = sqlite_err(&self.path);
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(&err)?;
        conn.busy_timeout(Duration::from_secs(2)).map_err(&err)?;
        Ok(conn)
    }

    fn with_conn<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StorageError> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => self.open()?,
        };
        let out = f(&conn).map_err(sqlite_err(&self.path))?;
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn);
        Ok(out)
    }

    /// Detections matching `q`. Without `after_id` or `since_ms` this is the
    /// newest `limit` rows (still in ascending order); with either, the first
    /// `limit` rows from that point on.
    pub fn detections(&self, q: &DetectionQuery) -> Result<Vec<StoredDetection>, StorageError> {
        let mut f = Filter::default();
        f.add_opt("camera = ?", q.camera.clone(), Value::Text);
        f.add_opt("label = ?", q.label.clone(), Value::Text);
        f.add_opt("frame_wall_ms >= ?", q.since_ms, Value::Integer);
        f.add_opt("frame_wall_ms < ?", q.until_ms, Value::Integer);
        f.add_opt("id > ?", q.after_id, Value::Integer);
        let filter = f.where_clause();
        let mut args = f.args;
        let tail = q.after_id.is_none() && q.since_ms.is_none();
        let order = if tail { "DESC" } else { "ASC" };
        args.push(Value::Integer(q.limit as i64));
        let sql = format!(
            "SELECT id, camera, frame_seq, frame_pts_us, frame_wall_ms, label, score, x0, y0, x1, y1
             FROM detections {filter} ORDER BY id {order} LIMIT ?"
        );
        let mut rows = self.with_conn(|c| {
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(args), row_to_detection)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        if tail {
            rows.reverse();
        }
        Ok(rows)
    }

    /// Events matching `q`. Without `after_revision` the newest `limit`
    /// (still ascending); with it, the first `limit` changes after it.
    pub fn events(&self, q: &EventQuery) -> Result<Vec<StoredEvent>, StorageError> {
        let mut f = Filter::default();
        // With a zone, walk that zone's index in revision order and join.
        let (from, revision) = match &q.zone {
            Some(z) => {
                f.add("z.zone = ?", Value::Text(z.clone()));
                (
                    "event_zones z JOIN events e ON e.id = z.event_id",
                    "z.revision",
                )
            }
            None => ("events e", "e.revision"),
        };
        f.add_opt("e.camera = ?", q.camera.clone(), Value::Text);
        f.add_opt("e.label = ?", q.label.clone(), Value::Text);
        f.add_opt("e.start_ms >= ?", q.start_from_ms, Value::Integer);
        f.add_opt("e.start_ms < ?", q.start_to_ms, Value::Integer);
        f.add_opt("e.max_score >= ?", q.min_score, |s| Value::Real(s as f64));
        let after = if q.zone.is_some() {
            "z.revision > ?"
        } else {
            "e.revision > ?"
        };
        f.add_opt(after, q.after_revision, Value::Integer);
        let before = if q.zone.is_some() {
            "z.revision < ?"
        } else {
            "e.revision < ?"
        };
        f.add_opt(before, q.before_revision, Value::Integer);
        let filter = f.where_clause();
        let mut args = f.args;
        let tail = q.after_revision.is_none();
        let order = if tail { "DESC" } else { "ASC" };
        args.push(Value::Integer(q.limit as i64));
        let sql = format!(
            "SELECT e.id, e.revision, e.uid, e.camera, e.track_id, e.label, e.start_ms, e.end_ms,
                    e.max_score, e.x0, e.y0, e.x1, e.y1, e.zones, e.snapshot
             FROM {from} {filter} ORDER BY {revision} {order} LIMIT ?"
        );
        let mut rows = self.with_conn(|c| {
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(args), row_to_event)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        if tail {
            rows.reverse();
        }
        Ok(rows)
    }

    /// Per-minute counts of `camera` in `[from_ms, to_ms)`, oldest first.
    pub fn minute_counts(
        &self,
        camera: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<MinuteCount>, StorageError> {
        self.counts(&CountQuery {
            camera: camera.to_string(),
            from_ms,
            to_ms,
            ..Default::default()
        })
    }

    /// Per-minute counts matching `q`, oldest first.
    pub fn counts(&self, q: &CountQuery) -> Result<Vec<MinuteCount>, StorageError> {
        self.with_conn(|c| {
            // The primary key starts with (camera, minute): a range scan.
            let mut stmt = c.prepare_cached(
                "SELECT camera, minute_ms, label, zone, count FROM minute_counts
                 WHERE camera = ?1 AND minute_ms >= ?2 AND minute_ms < ?3
                   AND (?4 IS NULL OR label = ?4) AND (?5 IS NULL OR zone = ?5)
                 ORDER BY minute_ms, label, zone",
            )?;
            let args = rusqlite::params![q.camera, q.from_ms, q.to_ms, q.label, q.zone];
            let rows = stmt.query_map(args, |r| {
                Ok(MinuteCount {
                    camera: r.get(0)?,
                    minute_ms: r.get(1)?,
                    label: r.get(2)?,
                    zone: r.get(3)?,
                    count: r.get(4)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Every camera history knows of.
    pub fn cameras(&self) -> Result<Vec<CameraRecord>, StorageError> {
        self.with_conn(|c| {
            let mut stmt =
                c.prepare_cached("SELECT id, source, last_ms FROM cameras ORDER BY id")?;
            let rows = stmt.query_map([], |r| {
                Ok(CameraRecord {
                    id: r.get(0)?,
                    source: r.get(1)?,
                    seen_ms: r.get(2)?,
                })
            })?;
            rows.collect()
        })
    }

    /// One event by id.
    pub fn event(&self, id: i64) -> Result<Option<StoredEvent>, StorageError> {
        use rusqlite::OptionalExtension;
        self.with_conn(|c| {
            c.prepare_cached(
                "SELECT id, revision, uid, camera, track_id, label, start_ms, end_ms,
                        max_score, x0, y0, x1, y1, zones, snapshot
                 FROM events WHERE id = ?1",
            )?
            .query_row([id], row_to_event)
            .optional()
        })
    }

    /// Rows per table and bytes on disk (database, its WAL, the hot store).
    pub fn usage(&self) -> Result<StorageUsage, StorageError> {
        let (detections, events, minute_counts) = self.with_conn(|c| {
            c.query_row(
                "SELECT (SELECT COUNT(*) FROM detections), (SELECT COUNT(*) FROM events),
                        (SELECT COUNT(*) FROM minute_counts)",
                [],
                |r| {
                    let n = |i| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
                    Ok((n(0)?, n(1)?, n(2)?))
                },
            )
        })?;
        let size = |p: PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        let dir = self.path.parent().unwrap_or(Path::new("."));
        Ok(StorageUsage {
            detections,
            events,
            minute_counts,
            database_bytes: size(self.path.clone()) + size(PathBuf::from(wal)),
            hot_bytes: size(dir.join(crate::hot::HOT_FILE)),
        })
    }

    /// This database's identity and what retention removed: what a poller
    /// needs to trust its cursors.
    pub fn poll_state(&self) -> Result<PollState, StorageError> {
        self.with_conn(|c| {
            let mut stmt = c.prepare_cached("SELECT key, value FROM meta")?;
            let mut state = PollState::default();
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                match r.get::<_, String>(0)?.as_str() {
                    "box_id" => state.box_id = r.get(1)?,
                    "deleted_event_revision" => state.deleted_event_revision = r.get(1)?,
                    "deleted_detection_id" => state.deleted_detection_id = r.get(1)?,
                    _ => {}
                }
            }
            Ok(state)
        })
    }

    /// The newest event revision, if any: where a live feed starts when the
    /// client brings no cursor. `revision` is unique, hence indexed.
    pub fn last_event_revision(&self) -> Result<Option<i64>, StorageError> {
        self.with_conn(|c| {
            c.prepare_cached("SELECT MAX(revision) FROM events")?
                .query_row([], |r| r.get(0))
        })
    }

    /// The oldest detection id still stored: a poller whose cursor is below
    /// it knows retention removed rows it had not read.
    pub fn oldest_detection_id(&self) -> Result<Option<i64>, StorageError> {
        self.with_conn(|c| {
            c.prepare_cached("SELECT MIN(id) FROM detections")?
                .query_row([], |r| r.get(0))
        })
    }

    /// The newest detection id of `camera`, if any: one index lookup, cheap
    /// enough for every poll.
    pub fn last_detection_id(&self, camera: &str) -> Result<Option<i64>, StorageError> {
        self.with_conn(|c| {
            c.prepare_cached("SELECT MAX(id) FROM detections WHERE camera = ?1")?
                .query_row([camera], |r| r.get(0))
        })
    }
}

/// The four box columns starting at `first`.
fn box_at(r: &Row<'_>, first: usize) -> rusqlite::Result<[f32; 4]> {
    Ok([
        r.get::<_, f64>(first)? as f32,
        r.get::<_, f64>(first + 1)? as f32,
        r.get::<_, f64>(first + 2)? as f32,
        r.get::<_, f64>(first + 3)? as f32,
    ])
}

/// Conditions and their arguments, joined into a `WHERE` clause.
#[derive(Default)]
struct Filter {
    conds: Vec<&'static str>,
    args: Vec<Value>,
}

impl Filter {
    fn add(&mut self, cond: &'static str, arg: Value) {
        self.conds.push(cond);
        self.args.push(arg);
    }

    fn add_opt<T>(&mut self, cond: &'static str, v: Option<T>, to: impl FnOnce(T) -> Value) {
        if let Some(v) = v {
            self.add(cond, to(v));
        }
    }

    fn where_clause(&self) -> String {
        if self.conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.conds.join(" AND "))
        }
    }
}

fn row_to_event(r: &Row<'_>) -> rusqlite::Result<StoredEvent> {
    let zones: String = r.get(13)?;
    Ok(StoredEvent {
        id: r.get(0)?,
        revision: r.get(1)?,
        record: EventRecord {
            uid: r.get(2)?,
            camera: r.get(3)?,
            track_id: r.get::<_, i64>(4)? as u64,
            label: r.get(5)?,
            start_ms: r.get(6)?,
            end_ms: r.get(7)?,
            max_score: r.get::<_, f64>(8)? as f32,
            best_box: box_at(r, 9)?,
            zones: serde_json::from_str(&zones).unwrap_or_default(),
            snapshot: r.get::<_, Option<i64>>(14)?.map(|s| s as u64),
        },
    })
}

fn row_to_detection(r: &Row<'_>) -> rusqlite::Result<StoredDetection> {
    Ok(StoredDetection {
        id: r.get(0)?,
        record: DetectionRecord {
            camera: r.get(1)?,
            frame_seq: r.get::<_, i64>(2)? as u64,
            frame_pts_us: r.get(3)?,
            frame_wall_ms: r.get(4)?,
            label: r.get(5)?,
            score: r.get::<_, f64>(6)? as f32,
            bbox: box_at(r, 7)?,
        },
    })
}
