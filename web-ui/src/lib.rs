//! Vigil's HTTP side: the REST API under `/api/v1`, the embedded browser UI,
//! the live view of each camera, health, metrics and the OpenAPI document.
//! Every route but `/healthz`, logging in and the static UI shell needs a
//! session or an API token ([`auth`]). Detections come from storage's
//! read-only connections, live frames from [`LiveFrames`].

mod admin;
mod api;
mod assets;
mod auth;
pub mod gpu;
pub mod live;
mod login;
pub mod metrics;
mod openapi;
pub mod query;
mod server;
mod sse;
mod stats;
mod stream;
mod tls;

use std::sync::Arc;

use serde::Serialize;

/// An event as the API shows it (`GET /api/v1/events/{id}`), for other
/// channels (MQTT) that must say the same.
pub fn event_json(event: vigil_storage::StoredEvent) -> serde_json::Value {
    serde_json::to_value(api::ApiEvent::from(event)).unwrap_or_default()
}

pub use live::{FramePixels, LatestDetections, LiveDetection, LiveFrames, Snapshot};
pub use login::LoginLimiter;
pub use metrics::BatchLatency;
pub use openapi::openapi_json;
pub use server::{start, ServerConfig, ServerHandle};
pub use stats::{process_stats, ProcessStats};
pub use tls::TlsFiles;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
}

/// What the API says about one camera.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CameraStatus {
    pub id: String,
    /// The source with any credentials removed.
    pub source: String,
    pub detect_fps: f64,
    /// Ingest state and counters, as the ingest side reports them.
    #[schema(value_type = Object)]
    pub ingest: serde_json::Value,
    /// Zones as polygons in frame pixels, for drawing over the live view.
    #[schema(value_type = Object)]
    pub zones: serde_json::Value,
}

/// The model side of the pipeline, as the stats and metrics report it.
/// Counters are totals since start: clients take differences for rates.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct InferenceStats {
    pub model: String,
    pub precision: String,
    /// With int8 precision: the CPU kernel its products run on (`vnni` for
    /// AVX-512 VNNI, `avxvnni`, `avx2`), which sets how much faster than f32
    /// it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub int8_kernel: Option<String>,
    pub device: String,
    pub max_batch: usize,
    pub frames: u64,
    pub batches: u64,
    pub errors: u64,
    /// Time spent in the model, all batches together.
    pub inference_seconds: f64,
    /// Model time per batch, averaged since start.
    pub ms_per_batch: f64,
    pub events_opened: u64,
}

/// The appliance tells the server which cameras exist and how the pipeline
/// is doing.
pub trait Pipeline: Send + Sync {
    fn cameras(&self) -> Vec<CameraStatus>;
    fn inference(&self) -> InferenceStats;
    /// The running configuration as TOML, credentials removed.
    fn config_toml(&self) -> String;
    /// Validates and saves a new configuration and restarts the pipeline
    /// with it (the process and this server's state stay).
    fn apply_config(&self, toml: &str) -> Result<(), ConfigRejected>;
}

/// Why a new configuration was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ConfigRejected {
    /// It does not parse or validate: the message names the line and field.
    #[error("{0}")]
    Invalid(String),
    /// It cannot be taken now (no file to save to, shutting down, disk).
    #[error("{0}")]
    Unavailable(String),
}

/// Everything the handlers read.
pub struct AppState {
    pub pipeline: Arc<dyn Pipeline>,
    pub live: Arc<LiveFrames>,
    pub reader: Arc<vigil_storage::Reader>,
    /// The storage writer's state, for `/readyz` and the stats.
    pub storage_health: Arc<vigil_storage::WriterStats>,
    /// Snapshot JPEGs of events.
    pub hot: Arc<vigil_storage::HotStore>,
    /// Users, sessions and API tokens.
    pub auth: Arc<vigil_storage::AuthStore>,
    /// Shared with the next configuration's server (see [`LoginLimiter`]).
    pub limiter: Arc<LoginLimiter>,
    /// Cookies only over HTTPS (set when TLS is on).
    pub secure_cookies: bool,
    pub started: std::time::Instant,
    /// Model time per batch, observed by the analyser.
    pub batch_latency: BatchLatency,
}
