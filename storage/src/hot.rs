//! Hot state in redb: what changes every frame (the latest detections of
//! each camera), counters, consumer cursors, and snapshot JPEGs under a size
//! budget. Small keyed values that SQLite would churn through its WAL.
//!
//! Durability: per-frame updates commit without fsync (losing the last
//! second on a power cut costs nothing: the next frame rewrites them);
//! counters, cursors and snapshots commit durably, which also persists every
//! earlier commit.

use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::StorageError;

/// The hot-state file inside the storage directory.
pub const HOT_FILE: &str = "hot.redb";

const LATEST: TableDefinition<&str, &[u8]> = TableDefinition::new("latest");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const CURSORS: TableDefinition<&str, i64> = TableDefinition::new("cursors");
const SNAPSHOTS: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshots");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NEXT_SNAPSHOT: &str = "next_snapshot";
const SNAPSHOT_BYTES: &str = "snapshot_bytes";
/// redb's page cache. Its default (1 GiB) let the cache take in every
/// snapshot written, so a box's memory grew for as long as events came (a
/// 30-minute soak: +100 MiB). The hot tables are small and snapshots are
/// read rarely, from disk.
const CACHE_BYTES: usize = 16 << 20;

pub struct HotStore {
    db: Database,
    path: PathBuf,
    snapshot_budget_bytes: u64,
}

impl HotStore {
    /// Opens (or creates) `dir/hot.redb`. A file that is not a redb database,
    /// or is damaged beyond redb's repair, is an error: never silently reset.
    pub fn open(dir: &Path, snapshot_budget_bytes: u64) -> Result<Self, StorageError> {
        let path = dir.join(HOT_FILE);
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| StorageError::Hot {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        let store = Self {
            db,
            path,
            snapshot_budget_bytes,
        };
        // Create the tables once, so readers never meet a missing table.
        store.write(Durability::Immediate, |tx| {
            tx.open_table(LATEST)?;
            tx.open_table(COUNTERS)?;
            tx.open_table(CURSORS)?;
            tx.open_table(SNAPSHOTS)?;
            tx.open_table(META)?;
            Ok(())
        })?;
        Ok(store)
    }

    fn err(&self, e: impl std::fmt::Display) -> StorageError {
        StorageError::Hot {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    fn write<T>(
        &self,
        durability: Durability,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, StorageError> {
        let mut tx = self.db.begin_write().map_err(|e| self.err(e))?;
        tx.set_durability(durability).map_err(|e| self.err(e))?;
        let out = f(&tx).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(out)
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, StorageError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        f(&tx).map_err(|e| self.err(e))
    }

    /// Replaces the latest detections of `camera` (opaque bytes, JSON by convention).
    pub fn put_latest(&self, camera: &str, value: &[u8]) -> Result<(), StorageError> {
        self.write(Durability::None, |tx| {
            tx.open_table(LATEST)?.insert(camera, value)?;
            Ok(())
        })
    }

    pub fn latest(&self, camera: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.read(|tx| {
            Ok(tx
                .open_table(LATEST)?
                .get(camera)?
                .map(|v| v.value().to_vec()))
        })
    }

    /// Adds `delta` to counter `name`; returns the new value.
    pub fn add_counter(&self, name: &str, delta: u64) -> Result<u64, StorageError> {
        self.write(Durability::Immediate, |tx| {
            let mut t = tx.open_table(COUNTERS)?;
            let value = t.get(name)?.map_or(0, |v| v.value()) + delta;
            t.insert(name, value)?;
            Ok(value)
        })
    }

    pub fn counter(&self, name: &str) -> Result<u64, StorageError> {
        self.read(|tx| Ok(tx.open_table(COUNTERS)?.get(name)?.map_or(0, |v| v.value())))
    }

    /// Remembers how far consumer `name` has read (a stream cursor).
    pub fn set_cursor(&self, name: &str, position: i64) -> Result<(), StorageError> {
        self.write(Durability::Immediate, |tx| {
            tx.open_table(CURSORS)?.insert(name, position)?;
            Ok(())
        })
    }

    pub fn cursor(&self, name: &str) -> Result<Option<i64>, StorageError> {
        self.read(|tx| Ok(tx.open_table(CURSORS)?.get(name)?.map(|v| v.value())))
    }

    /// Stores a snapshot JPEG and returns its key. The oldest snapshots are
    /// evicted while the total exceeds the budget (the newest always stays).
    pub fn put_snapshot(&self, jpeg: &[u8]) -> Result<u64, StorageError> {
        let budget = self.snapshot_budget_bytes;
        self.write(Durability::Immediate, |tx| {
            let mut meta = tx.open_table(META)?;
            let key = meta.get(NEXT_SNAPSHOT)?.map_or(0, |v| v.value());
            let mut bytes = meta.get(SNAPSHOT_BYTES)?.map_or(0, |v| v.value());
            let mut snaps = tx.open_table(SNAPSHOTS)?;
            snaps.insert(key, jpeg)?;
            bytes += jpeg.len() as u64;
            while bytes > budget {
                let Some((old_key, old_len)) = snaps
                    .first()?
                    .map(|(k, v)| (k.value(), v.value().len() as u64))
                else {
                    break;
                };
                if old_key == key {
                    break; // the newest stays even when alone over budget
                }
                snaps.remove(old_key)?;
                bytes -= old_len;
            }
            meta.insert(NEXT_SNAPSHOT, key + 1)?;
            meta.insert(SNAPSHOT_BYTES, bytes)?;
            Ok(key)
        })
    }

    /// Forgets a snapshot that something better replaced, giving its bytes
    /// back to the budget. Unknown keys are fine (already evicted).
    pub fn remove_snapshot(&self, key: u64) -> Result<(), StorageError> {
        self.write(Durability::None, |tx| {
            let mut snaps = tx.open_table(SNAPSHOTS)?;
            let Some(len) = snaps.remove(key)?.map(|v| v.value().len() as u64) else {
                return Ok(());
            };
            let mut meta = tx.open_table(META)?;
            let bytes = meta.get(SNAPSHOT_BYTES)?.map_or(0, |v| v.value());
            meta.insert(SNAPSHOT_BYTES, bytes.saturating_sub(len))?;
            Ok(())
        })
    }

    pub fn snapshot(&self, key: u64) -> Result<Option<Vec<u8>>, StorageError> {
        self.read(|tx| {
            Ok(tx
                .open_table(SNAPSHOTS)?
                .get(key)?
                .map(|v| v.value().to_vec()))
        })
    }

    /// Bytes of snapshots currently kept.
    pub fn snapshot_bytes(&self) -> Result<u64, StorageError> {
        self.read(|tx| {
            Ok(tx
                .open_table(META)?
                .get(SNAPSHOT_BYTES)?
                .map_or(0, |v| v.value()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let hot = HotStore::open(dir.path(), 1 << 20).unwrap();
            hot.put_latest("gate", b"[1,2]").unwrap();
            assert_eq!(hot.add_counter("frames", 5).unwrap(), 5);
            assert_eq!(hot.add_counter("frames", 2).unwrap(), 7);
            hot.set_cursor("mqtt", 42).unwrap();
        }
        let hot = HotStore::open(dir.path(), 1 << 20).unwrap();
        // The durable counter commit persisted the earlier non-durable one too.
        assert_eq!(hot.latest("gate").unwrap().as_deref(), Some(&b"[1,2]"[..]));
        assert_eq!(hot.counter("frames").unwrap(), 7);
        assert_eq!(hot.cursor("mqtt").unwrap(), Some(42));
        assert_eq!(hot.cursor("other").unwrap(), None);
    }

    #[test]
    fn snapshots_stay_within_their_budget_oldest_out_first() {
        let dir = tempfile::tempdir().unwrap();
        let hot = HotStore::open(dir.path(), 2_500).unwrap();
        let keys: Vec<u64> = (0..5u8)
            .map(|i| hot.put_snapshot(&[i; 1000]).unwrap())
            .collect();
        assert_eq!(keys, vec![0, 1, 2, 3, 4]);
        assert!(hot.snapshot_bytes().unwrap() <= 2_500);
        assert_eq!(hot.snapshot(0).unwrap(), None);
        assert_eq!(hot.snapshot(2).unwrap(), None);
        assert_eq!(hot.snapshot(3).unwrap(), Some(vec![3; 1000]));
        hot.remove_snapshot(3).unwrap();
        hot.remove_snapshot(3).unwrap();
        assert_eq!(hot.snapshot(3).unwrap(), None);
        assert_eq!(hot.snapshot_bytes().unwrap(), 1000, "only key 4 is left");
        assert_eq!(hot.snapshot(4).unwrap(), Some(vec![4; 1000]));
        // One snapshot larger than the whole budget is still kept, alone.
        let big = hot.put_snapshot(&[9; 4000]).unwrap();
        assert_eq!(hot.snapshot(big).unwrap().map(|v| v.len()), Some(4000));
        assert_eq!(hot.snapshot(4).unwrap(), None);
    }

    #[test]
    fn a_file_that_is_not_redb_is_refused_not_reset() {
        let dir = tempfile::tempdir().unwrap();
        let junk = vec![0x42u8; 8192];
        std::fs::write(dir.path().join(HOT_FILE), &junk).unwrap();
        let err = HotStore::open(dir.path(), 1 << 20)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(HOT_FILE), "{err}");
        assert_eq!(std::fs::read(dir.path().join(HOT_FILE)).unwrap(), junk);
    }
}
