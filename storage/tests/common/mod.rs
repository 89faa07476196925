//! Helpers shared by the storage test binaries.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};

use vigil_storage::{prepare, spawn_writer, DetectionRecord, WriteOp, WriterConfig};

/// A person detection of `camera` in frame `seq`, seen at `wall_ms`.
pub fn record(camera: &str, seq: u64, wall_ms: i64) -> DetectionRecord {
    DetectionRecord {
        camera: camera.into(),
        frame_seq: seq,
        frame_pts_us: seq as i64 * 100_000,
        frame_wall_ms: wall_ms,
        label: "person".into(),
        score: 0.9,
        bbox: [1.0, 2.0, 30.0, 40.0],
    }
}

/// Creates the database in `dir`, writes `ops` through a writer and waits
/// until they are committed. Returns the database path.
pub fn write_all(dir: &Path, ops: Vec<WriteOp>) -> PathBuf {
    let path = prepare(dir).unwrap();
    let writer = spawn_writer(&path, WriterConfig::default()).unwrap();
    for op in ops {
        writer.sender().send(op).unwrap();
    }
    writer.finish();
    path
}
