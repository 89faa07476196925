//! Read-only queries over their own connections.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params_from_iter, types::Value, Connection, OpenFlags, Row};

use crate::{sqlite_err, DetectionRecord, StorageError, StoredDetection};

/// Which detections to return. Rows always come in ascending id order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DetectionQuery {
    pub camera: Option<String>,
    /// Only frames seen at or after this wall time (Unix ms).
    pub since_ms: Option<i64>,
    /// Only rows with an id above this cursor: the next page.
    pub after_id: Option<i64>,
    pub limit: usize,
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
        let mut conds = Vec::new();
        let mut args: Vec<Value> = Vec::new();
        if let Some(c) = &q.camera {
            conds.push("camera = ?");
            args.push(Value::Text(c.clone()));
        }
        if let Some(s) = q.since_ms {
            conds.push("frame_wall_ms >= ?");
            args.push(Value::Integer(s));
        }
        if let Some(a) = q.after_id {
            conds.push("id > ?");
            args.push(Value::Integer(a));
        }
        let filter = if conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conds.join(" AND "))
        };
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

    /// The newest detection id of `camera`, if any: one index lookup, cheap
    /// enough for every poll.
    pub fn last_detection_id(&self, camera: &str) -> Result<Option<i64>, StorageError> {
        self.with_conn(|c| {
            c.prepare_cached("SELECT MAX(id) FROM detections WHERE camera = ?1")?
                .query_row([camera], |r| r.get(0))
        })
    }
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
            bbox: [
                r.get::<_, f64>(7)? as f32,
                r.get::<_, f64>(8)? as f32,
                r.get::<_, f64>(9)? as f32,
                r.get::<_, f64>(10)? as f32,
            ],
        },
    })
}
