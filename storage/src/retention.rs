//! Retention: old rows go by age per kind of data, and the oldest detections
//! (then events) go when the database outgrows its disk budget. Deletion runs
//! in small batches with a time limit per pass, so the writer is never held
//! up for long; freed pages go back to the file system (incremental vacuum).

use std::time::{Duration, Instant};

use rusqlite::{params, Connection};

#[derive(Debug, Clone, PartialEq)]
pub struct RetentionPolicy {
    pub detections_max_age: Option<Duration>,
    pub events_max_age: Option<Duration>,
    pub counts_max_age: Option<Duration>,
    /// The database file may not grow past this many bytes.
    pub max_database_bytes: Option<u64>,
    /// Rows deleted per statement.
    pub batch_rows: usize,
    /// How often the writer runs a pass.
    pub check_every: Duration,
    /// A pass stops after this long and goes on at the next check.
    pub max_pass_time: Duration,
}

const DAY: Duration = Duration::from_secs(86_400);

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self {
            detections_max_age: Some(30 * DAY),
            events_max_age: Some(90 * DAY),
            counts_max_age: Some(400 * DAY),
            max_database_bytes: None,
            batch_rows: 5_000,
            check_every: Duration::from_secs(60),
            max_pass_time: Duration::from_millis(200),
        }
    }
}

/// Kinds of data with their time column, oldest-first deletion order.
/// (An event's zone index rows go with it: `event_zones` cascades.)
const AGED: [(&str, &str, &str); 3] = [
    ("detections", "frame_wall_ms", "id"),
    ("events", "start_ms", "id"),
    (
        "minute_counts",
        "minute_ms",
        "camera, minute_ms, label, zone",
    ),
];

/// One retention pass; returns the number of rows deleted.
pub(crate) fn enforce(
    conn: &mut Connection,
    policy: &RetentionPolicy,
    now_ms: i64,
) -> rusqlite::Result<u64> {
    let started = Instant::now();
    let out_of_time = || started.elapsed() >= policy.max_pass_time;
    let mut deleted = 0u64;
    let ages = [
        policy.detections_max_age,
        policy.events_max_age,
        policy.counts_max_age,
    ];
    for ((table, time_col, key), max_age) in AGED.iter().zip(ages) {
        let Some(age) = max_age else { continue };
        let cutoff = now_ms - age.as_millis() as i64;
        loop {
            let sql = format!(
                "DELETE FROM {table} WHERE ({key}) IN
                   (SELECT {key} FROM {table} WHERE {time_col} < ?1 LIMIT ?2)"
            );
            let n = conn.execute(&sql, params![cutoff, policy.batch_rows as i64])? as u64;
            deleted += n;
            if n < policy.batch_rows as u64 || out_of_time() {
                break;
            }
        }
    }
    if let Some(budget) = policy.max_database_bytes {
        while database_bytes(conn)? > budget && !out_of_time() {
            let mut n = delete_oldest(conn, "detections", policy.batch_rows)?;
            if n == 0 {
                n = delete_oldest(conn, "events", policy.batch_rows)?;
            }
            if n == 0 {
                break; // nothing left that retention may delete
            }
            deleted += n;
            reclaim(conn)?;
        }
    }
    if deleted > 0 {
        reclaim(conn)?;
    }
    Ok(deleted)
}

fn delete_oldest(conn: &Connection, table: &str, batch: usize) -> rusqlite::Result<u64> {
    let sql =
        format!("DELETE FROM {table} WHERE id IN (SELECT id FROM {table} ORDER BY id LIMIT ?1)");
    Ok(conn.execute(&sql, [batch as i64])? as u64)
}

/// Gives free pages back to the file system and folds the WAL into the
/// file, so the file size reflects what is stored.
fn reclaim(conn: &Connection) -> rusqlite::Result<()> {
    // Each step of this pragma frees one page: step it to the end.
    let mut stmt = conn.prepare_cached("PRAGMA incremental_vacuum")?;
    let mut rows = stmt.query([])?;
    while rows.next()?.is_some() {}
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
}

/// Size of the database file in bytes (pages in use and free).
pub(crate) fn database_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    Ok((pages * size) as u64)
}
