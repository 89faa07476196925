//! Vigil's HTTP side: the REST API under `/api/v1`, the embedded browser UI,
//! and the live view of each camera. It only reads: detections come from
//! storage's read-only connections, live frames from [`LiveFrames`].

mod api;
mod assets;
pub mod live;
mod server;
mod sse;

use std::sync::Arc;

use serde::Serialize;

pub use live::{LatestDetections, LiveDetection, LiveFrames, Snapshot};
pub use server::{start, ServerConfig, ServerHandle};

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// What the API says about one camera.
#[derive(Debug, Clone, Serialize)]
pub struct CameraStatus {
    pub id: String,
    /// The source with any credentials removed.
    pub source: String,
    pub detect_fps: f64,
    /// Ingest state and counters, as the ingest side reports them.
    pub ingest: serde_json::Value,
}

/// The appliance tells the server which cameras exist and how they are doing.
pub trait CameraDirectory: Send + Sync {
    fn cameras(&self) -> Vec<CameraStatus>;
}

/// Everything the handlers read.
pub struct AppState {
    pub cameras: Arc<dyn CameraDirectory>,
    pub live: Arc<LiveFrames>,
    pub reader: Arc<vigil_storage::Reader>,
    /// The storage writer's state, for `/health`.
    pub storage_health: Arc<vigil_storage::WriterStats>,
    /// Snapshot JPEGs of events.
    pub hot: Arc<vigil_storage::HotStore>,
}
