//! The rows storage keeps, as plain types shared with the other crates.

use serde::{Deserialize, Serialize};

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

/// A camera as history knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CameraRecord {
    pub id: String,
    /// The source with credentials removed.
    pub source: String,
    pub seen_ms: i64,
}

/// An event: one tracked object's life, written when it opens and again
/// whenever it changes (same `uid`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Unique across restarts, chosen by the producer.
    pub uid: String,
    pub camera: String,
    pub track_id: u64,
    pub label: String,
    pub start_ms: i64,
    /// `None` while the object is still tracked.
    pub end_ms: Option<i64>,
    pub max_score: f32,
    /// The box of the best sighting, `[x0, y0, x1, y1]` in source pixels.
    pub best_box: [f32; 4],
    /// Zones the object has been in, in the order entered.
    pub zones: Vec<String>,
    /// Key of the best snapshot in the hot store's snapshot table.
    pub snapshot: Option<u64>,
}

/// A stored event. `revision` grows with every insert *and* update, across
/// all events: a poller that pages by revision sees every change exactly once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub id: i64,
    pub revision: i64,
    #[serde(flatten)]
    pub record: EventRecord,
}

/// How many times `label` was counted on `camera` (in `zone`, or the whole
/// frame when empty) during the minute starting at `minute_ms`. Writes add up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinuteCount {
    pub camera: String,
    pub minute_ms: i64,
    pub label: String,
    pub zone: String,
    pub count: i64,
}
