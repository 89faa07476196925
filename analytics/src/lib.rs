//! Analytics on top of per-frame detections: ByteTrack-style tracking,
//! zones and masks, line-crossing counters, events and per-minute counts.
//!
//! It knows nothing of decoding, models or storage: detections come in as
//! plain values and events, crossings and counts go out as plain values.

mod assign;
pub mod camera;
pub mod geometry;
mod kalman;
pub mod scene;
pub mod tracker;

pub use camera::{
    CameraAnalytics, CountKey, Crossing, Detected, Event, EventChange, FrameAnalysis, FrameInfo,
    Phase,
};
pub use geometry::{Direction, Point, Polygon, Segment};
pub use scene::{CountLine, LabelFilter, Scene, Zone, DEFAULT_TRACK_MIN_SCORE};
pub use tracker::{TrackedObject, TrackerConfig};

#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    #[error("{0}")]
    Geometry(String),
    #[error("{0}")]
    Scene(String),
}
