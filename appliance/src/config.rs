//! The TOML configuration: parsed with serde, then validated. Every error
//! names the file, the line and the field, so a person can fix it at once.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use vigil_analytics::{CountLine, LabelFilter, Polygon, Scene, TrackerConfig, Zone};
use vigil_inference::Precision;
use vigil_ingest::{HwAccel, IngestError, InputOptions, SourceUrl, Transport};

/// A configuration the appliance cannot run with.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerSection,
    pub storage: StorageSection,
    #[serde(default)]
    pub detector: DetectorSection,
    #[serde(default)]
    pub cameras: Vec<CameraSection>,
    /// Publish events and camera status to an MQTT broker.
    pub mqtt: Option<MqttSection>,
    /// The file as written, for the API's view of the configuration.
    #[serde(skip)]
    pub text: String,
    /// Where it was read from; `None` for the demo's built-in one.
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// `host:port` for the UI and API.
    #[serde(default = "default_listen")]
    pub listen: Spanned<String>,
    /// HTTPS: a PEM certificate chain and its private key (both or neither).
    pub tls_cert: Option<Spanned<PathBuf>>,
    pub tls_key: Option<Spanned<PathBuf>>,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: Spanned::new(0..0, default_listen().into_inner()),
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl ServerSection {
    pub fn tls(&self) -> Option<vigil_web_ui::TlsFiles> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(vigil_web_ui::TlsFiles {
                cert: cert.get_ref().clone(),
                key: key.get_ref().clone(),
            }),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSection {
    /// `mqtt://host[:port]` (port 1883 by default).
    pub url: Spanned<String>,
    /// Topics start with this [default: `vigil/<box id>`].
    pub topic_prefix: Option<String>,
    /// [default: `vigil-<box id>`]
    pub client_id: Option<String>,
    pub username: Option<String>,
    pub password: Option<Spanned<String>>,
    /// After an outage, at most this many event changes are replayed; older
    /// ones are skipped with a message on `<prefix>/gap`.
    #[serde(default = "default_max_backlog")]
    pub max_backlog: usize,
}

fn default_max_backlog() -> usize {
    10_000
}

impl MqttSection {
    /// Host and port from `url`.
    pub fn address(&self) -> Result<(String, u16), String> {
        let url = self.url.get_ref();
        let rest = url.strip_prefix("mqtt://").ok_or_else(|| {
            if url.starts_with("mqtts://") {
                "mqtts:// (TLS) is not supported yet; use mqtt:// on a trusted network".to_string()
            } else {
                format!("{url:?}: use mqtt://host[:port]")
            }
        })?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("bad port in {url:?}"))?,
            ),
            None => (rest, 1883),
        };
        if host.is_empty() || host.contains(['/', '@']) {
            return Err(format!(
                "{url:?}: use mqtt://host[:port] (credentials go in username/password)"
            ));
        }
        Ok((host.to_string(), port))
    }
}

fn default_listen() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:8080".to_string())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// Directory for the database files.
    pub path: PathBuf,
    /// Detections older than this many days are deleted.
    #[serde(default = "default_detection_days")]
    pub retain_detections_days: Spanned<u32>,
    #[serde(default = "default_event_days")]
    pub retain_events_days: Spanned<u32>,
    #[serde(default = "default_count_days")]
    pub retain_counts_days: Spanned<u32>,
    /// The SQLite file never grows past this; the oldest detections go first.
    #[serde(default)]
    pub max_database_mb: Option<Spanned<u64>>,
    /// Space for event snapshot JPEGs in the hot store; oldest evicted first.
    #[serde(default = "default_snapshot_mb")]
    pub snapshot_budget_mb: Spanned<u64>,
}

fn default_detection_days() -> Spanned<u32> {
    Spanned::new(0..0, 30)
}
fn default_event_days() -> Spanned<u32> {
    Spanned::new(0..0, 90)
}
fn default_count_days() -> Spanned<u32> {
    Spanned::new(0..0, 400)
}
fn default_snapshot_mb() -> Spanned<u64> {
    Spanned::new(0..0, 256)
}

impl StorageSection {
    pub fn retention(&self) -> vigil_storage::RetentionPolicy {
        let days = |d: &Spanned<u32>| Some(Duration::from_secs(86_400 * *d.get_ref() as u64));
        vigil_storage::RetentionPolicy {
            detections_max_age: days(&self.retain_detections_days),
            events_max_age: days(&self.retain_events_days),
            counts_max_age: days(&self.retain_counts_days),
            max_database_bytes: self.max_database_mb.as_ref().map(|m| *m.get_ref() << 20),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorSection {
    /// Model name (looked up in the model directories) or a .safetensors path.
    #[serde(default = "default_model")]
    pub model: String,
    /// Detections below this score are not stored or shown.
    #[serde(default = "default_min_score")]
    pub min_score: Spanned<f32>,
    /// Frames from all cameras go through the model in batches of at most this many.
    #[serde(default = "default_max_batch")]
    pub max_batch: Spanned<usize>,
    /// How long a partial batch waits for more frames.
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
    /// `cpu`, `cuda` or `cuda:N` (needs a build with `--features cuda`).
    #[serde(default = "default_device")]
    pub device: Spanned<String>,
    /// f32, f16, bf16 or int8 (f16/bf16 pay off on GPUs, bf16 runs only
    /// there; int8 is for x86-64 CPUs with AVX2, fastest with AVX-512
    /// VNNI).
    #[serde(default = "default_precision")]
    pub precision: Spanned<Precision>,
    /// With the model on a GPU: NVDEC frames reach it in GPU memory
    /// (`false`: copied through the host, as other decoders' frames are).
    #[serde(default = "yes")]
    pub gpu_frames: bool,
}

fn yes() -> bool {
    true
}

fn default_precision() -> Spanned<Precision> {
    Spanned::new(0..0, Precision::default())
}

fn default_device() -> Spanned<String> {
    Spanned::new(0..0, "cpu".to_string())
}

impl Default for DetectorSection {
    fn default() -> Self {
        Self {
            model: default_model(),
            min_score: default_min_score(),
            max_batch: default_max_batch(),
            max_wait_ms: default_max_wait_ms(),
            device: default_device(),
            precision: default_precision(),
            gpu_frames: true,
        }
    }
}

fn default_model() -> String {
    vigil_inference::DEFAULT_MODEL.to_string()
}
fn default_min_score() -> Spanned<f32> {
    Spanned::new(0..0, 0.5)
}
fn default_max_batch() -> Spanned<usize> {
    Spanned::new(0..0, 4)
}
fn default_max_wait_ms() -> u64 {
    20
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraSection {
    pub id: Spanned<String>,
    /// rtsp://…, http(s)://…, file:///path?loop=0|1, or a file path.
    pub url: Spanned<String>,
    /// Frames per second analysed.
    #[serde(default = "default_detect_fps")]
    pub detect_fps: Spanned<f64>,
    /// Where to decode: auto (CUDA, then VA-API, then software), cuda,
    /// vaapi or none (software).
    #[serde(default)]
    pub hwaccel: HwAccel,
    /// Frames wider than this are scaled down before analysis (aspect
    /// kept); also the size of snapshots and the live view.
    #[serde(default = "default_max_width")]
    pub max_width: Spanned<u32>,
    /// RTSP transport: tcp (default) or udp.
    #[serde(default)]
    pub transport: Transport,
    /// Credentials kept out of the URL (so the URL can be shown); any
    /// characters. Never logged.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Spanned<String>>,
    /// Only these labels are stored, shown and tracked; empty means all.
    #[serde(default = "default_labels")]
    pub labels: Spanned<Vec<String>>,
    /// Overrides `detector.min_score` for this camera.
    #[serde(default)]
    pub min_score: Option<Spanned<f32>>,
    /// Per-label score and size limits.
    #[serde(default = "unspanned")]
    pub filters: Spanned<BTreeMap<String, LabelFilter>>,
    /// Areas whose detections are ignored (normalised polygons).
    #[serde(default = "unspanned")]
    pub masks: Spanned<Vec<Polygon>>,
    #[serde(default = "unspanned")]
    pub zones: Spanned<Vec<Zone>>,
    /// Counting lines.
    #[serde(default = "unspanned")]
    pub lines: Spanned<Vec<CountLine>>,
    #[serde(default = "unspanned")]
    pub tracker: Spanned<TrackerSection>,
    /// The camera's own ffmpeg input options (its demuxer's or protocol's),
    /// e.g. a USB camera's `{ input_format = "mjpeg", video_size =
    /// "1920x1080", framerate = 30 }`. One ffmpeg does not take is an error.
    #[serde(default)]
    pub input_options: BTreeMap<String, Spanned<OptionValue>>,
}

/// An ffmpeg option's value, as TOML lets people write it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum OptionValue {
    Text(String),
    Integer(i64),
    Number(f64),
    Flag(bool),
}

impl fmt::Display for OptionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text(t) => f.write_str(t),
            Self::Integer(i) => write!(f, "{i}"),
            Self::Number(n) => write!(f, "{n}"),
            Self::Flag(b) => f.write_str(if *b { "1" } else { "0" }),
        }
    }
}

/// What the shown configuration has in place of a password or secret option.
pub const HIDDEN_SECRET: &str = "<redacted>";

/// Input options whose values may carry credentials (an `Authorization:`
/// header, a session cookie): hidden wherever the configuration is shown.
pub const SECRET_INPUT_OPTIONS: &[&str] = &["headers", "cookies"];

/// Cameras' `max_width` when unset.
pub const DEFAULT_MAX_WIDTH: u32 = 1280;

fn default_max_width() -> Spanned<u32> {
    Spanned::new(0..0, DEFAULT_MAX_WIDTH)
}

impl CameraSection {
    /// The camera's ffmpeg input options, checked.
    pub fn input_options(&self) -> Result<InputOptions, IngestError> {
        InputOptions::new(
            self.input_options
                .iter()
                .map(|(name, value)| (name.clone(), value.get_ref().to_string()))
                .collect(),
        )
    }

    /// The source to open: the URL with the transport and any credentials
    /// from the config applied.
    pub fn source_url(&self) -> Result<SourceUrl, IngestError> {
        let url = SourceUrl::parse(self.url.get_ref())?.with_transport(self.transport);
        match (&self.username, &self.password) {
            (None, None) => Ok(url),
            (user, pass) => {
                let pass = pass.as_ref().map_or("", |p| p.get_ref().as_str());
                url.with_credentials(user.as_deref().unwrap_or(""), pass)
            }
        }
    }
}

/// Tracking settings in the units people think in; turned into frames with
/// the camera's `detect_fps`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackerSection {
    /// Consecutive analysed frames an object must be seen in before its
    /// event opens.
    pub confirm_frames: u32,
    /// An object unseen this long is gone and its event closes.
    pub lost_after_s: f64,
    /// Detections down to this score keep a live track going (never start one).
    pub track_min_score: f32,
}

impl Default for TrackerSection {
    fn default() -> Self {
        Self {
            confirm_frames: TrackerConfig::default().confirm_hits,
            lost_after_s: 2.0,
            track_min_score: vigil_analytics::DEFAULT_TRACK_MIN_SCORE,
        }
    }
}

impl CameraSection {
    /// The analytics view of this camera's settings.
    pub fn scene(&self, detector: &DetectorSection) -> Scene {
        Scene {
            labels: self.labels.get_ref().clone(),
            min_score: *self
                .min_score
                .as_ref()
                .unwrap_or(&detector.min_score)
                .get_ref(),
            track_min_score: self.tracker.get_ref().track_min_score,
            filters: self.filters.get_ref().clone(),
            masks: self.masks.get_ref().clone(),
            zones: self.zones.get_ref().clone(),
            lines: self.lines.get_ref().clone(),
        }
    }

    pub fn tracker_config(&self) -> TrackerConfig {
        let t = self.tracker.get_ref();
        let fps = *self.detect_fps.get_ref();
        let lost_frames = (t.lost_after_s * fps).ceil().max(1.0) as u32;
        TrackerConfig {
            confirm_hits: t.confirm_frames,
            lost_frames,
            // Never shorter than the frames a track may miss take to come.
            lost_after_ms: (1000.0 * t.lost_after_s.max(f64::from(lost_frames + 1) / fps)) as i64,
            ..Default::default()
        }
    }
}

/// A default value: it has no place in the file, so no line.
fn unspanned<T: Default>() -> Spanned<T> {
    Spanned::new(0..0, T::default())
}

fn default_labels() -> Spanned<Vec<String>> {
    Spanned::new(0..0, Vec::new())
}

fn default_detect_fps() -> Spanned<f64> {
    Spanned::new(0..0, 5.0)
}

pub const MAX_DETECT_FPS: f64 = 60.0;
pub const MAX_BATCH: usize = 64;
/// Below this a database cannot hold a useful history.
pub const MIN_DATABASE_MB: u64 = 16;

impl Config {
    /// Reads, parses and validates `file`.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: file.to_path_buf(),
            line: None,
            field: None,
            message: format!("cannot read: {e}"),
        })?;
        let mut config = Self::parse(&text, file)?;
        config.file = Some(file.to_path_buf());
        Ok(config)
    }

    /// Parses and validates `text`; `file` is only used in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError {
            file: file.to_path_buf(),
            line: e.span().map(|s| line_of(text, s.start)),
            field: None,
            message: e.message().trim().to_string(),
        })?;
        config.validate(text, file)?;
        config.text = text.to_string();
        Ok(config)
    }

    /// The configuration file as written, with camera credentials (in URLs,
    /// `password` fields and secret input options) replaced: safe to show
    /// in the UI and API.
    pub fn redacted_toml(&self) -> String {
        let quote = |v: &str| toml::Value::String(v.to_string()).to_string();
        let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
        for cam in &self.cameras {
            let url = cam.url.get_ref();
            let redacted = vigil_ingest::source::redact_credentials(url);
            if redacted != *url {
                edits.push((cam.url.span(), quote(&redacted)));
            }
            if let Some(pw) = &cam.password {
                edits.push((pw.span(), quote(HIDDEN_SECRET)));
            }
            for name in SECRET_INPUT_OPTIONS {
                if let Some(value) = cam.input_options.get(*name) {
                    edits.push((value.span(), quote(HIDDEN_SECRET)));
                }
            }
        }
        if let Some(pw) = self.mqtt.as_ref().and_then(|m| m.password.as_ref()) {
            edits.push((pw.span(), quote(HIDDEN_SECRET)));
        }
        // From the end, so earlier spans stay valid.
        edits.sort_by_key(|(span, _)| std::cmp::Reverse(span.start));
        let mut text = self.text.clone();
        for (span, with) in edits {
            if span.end <= text.len() && span.start < span.end {
                text.replace_range(span, &with);
            }
        }
        text
    }

    fn validate(&self, text: &str, file: &Path) -> Result<(), ConfigError> {
        let fail = |span: std::ops::Range<usize>, field: String, message: String| ConfigError {
            file: file.to_path_buf(),
            // Defaults have an empty span: they have no line.
            line: (span.end > 0).then(|| line_of(text, span.start)),
            field: Some(field),
            message,
        };
        let listen = &self.server.listen;
        if listen.get_ref().parse::<SocketAddr>().is_err() {
            return Err(fail(
                listen.span(),
                "server.listen".into(),
                format!("{:?} is not host:port, e.g. 0.0.0.0:8080", listen.get_ref()),
            ));
        }
        match (&self.server.tls_cert, &self.server.tls_key) {
            (Some(one), None) | (None, Some(one)) => {
                return Err(fail(
                    one.span(),
                    "server.tls".into(),
                    "set both tls_cert and tls_key, or neither".into(),
                ))
            }
            _ => {}
        }
        if let Some(mqtt) = &self.mqtt {
            if let Err(message) = mqtt.address() {
                return Err(fail(mqtt.url.span(), "mqtt.url".into(), message));
            }
            if mqtt.max_backlog == 0 {
                return Err(fail(
                    mqtt.url.span(),
                    "mqtt.max_backlog".into(),
                    "must be at least 1".into(),
                ));
            }
        }
        let score = &self.detector.min_score;
        if !(0.0..=1.0).contains(score.get_ref()) {
            return Err(fail(
                score.span(),
                "detector.min_score".into(),
                "must be between 0 and 1".into(),
            ));
        }
        let batch = &self.detector.max_batch;
        if !(1..=MAX_BATCH).contains(batch.get_ref()) {
            return Err(fail(
                batch.span(),
                "detector.max_batch".into(),
                format!("must be 1..={MAX_BATCH}"),
            ));
        }
        let device = &self.detector.device;
        let d = device.get_ref();
        let known_device = d == "cpu"
            || d == "cuda"
            || d.strip_prefix("cuda:")
                .is_some_and(|n| n.parse::<usize>().is_ok());
        if !known_device {
            return Err(fail(
                device.span(),
                "detector.device".into(),
                format!("{d:?}: use \"cpu\", \"cuda\" or \"cuda:N\""),
            ));
        }
        let precision = &self.detector.precision;
        if d == "cpu" && *precision.get_ref() == Precision::Bf16 {
            return Err(fail(
                precision.span(),
                "detector.precision".into(),
                "bf16 runs only on a GPU (the CPU has no bf16 matrix product); use f32 or f16 with device = \"cpu\"".into(),
            ));
        }
        if d != "cpu" {
            if let Some(why) = vigil_inference::gpu_precision_unsupported(*precision.get_ref()) {
                return Err(fail(precision.span(), "detector.precision".into(), why));
            }
        }
        let storage = &self.storage;
        for (name, days) in [
            ("retain_detections_days", &storage.retain_detections_days),
            ("retain_events_days", &storage.retain_events_days),
            ("retain_counts_days", &storage.retain_counts_days),
        ] {
            if *days.get_ref() == 0 {
                return Err(fail(
                    days.span(),
                    format!("storage.{name}"),
                    "must be at least 1".into(),
                ));
            }
        }
        if let Some(mb) = &storage.max_database_mb {
            if *mb.get_ref() < MIN_DATABASE_MB {
                return Err(fail(
                    mb.span(),
                    "storage.max_database_mb".into(),
                    format!("must be at least {MIN_DATABASE_MB}"),
                ));
            }
        }
        let known_labels: HashSet<&str> = vigil_inference::labels::coco80().collect();
        let mut ids = HashSet::new();
        for (i, cam) in self.cameras.iter().enumerate() {
            let field = |name: &str| format!("cameras[{i}].{name}");
            let id = cam.id.get_ref();
            if !valid_camera_id(id) {
                return Err(fail(
                    cam.id.span(),
                    field("id"),
                    format!("{id:?}: use 1-64 letters, digits, '-' or '_'"),
                ));
            }
            if !ids.insert(id.clone()) {
                return Err(fail(
                    cam.id.span(),
                    field("id"),
                    format!("{id:?} is used twice"),
                ));
            }
            if !(160..=7680).contains(cam.max_width.get_ref()) {
                return Err(fail(
                    cam.max_width.span(),
                    field("max_width"),
                    "must be between 160 and 7680 pixels".into(),
                ));
            }
            if let Err(e) = cam.source_url() {
                return Err(fail(cam.url.span(), field("url"), e.to_string()));
            }
            if let Err(e) = cam.input_options() {
                let span = match &e {
                    IngestError::BadOption { name, .. } => cam.input_options.get(name),
                    _ => None,
                };
                return Err(fail(
                    span.map_or(0..0, |v| v.span()),
                    field("input_options"),
                    e.to_string(),
                ));
            }
            let fps = *cam.detect_fps.get_ref();
            if !(fps > 0.0 && fps <= MAX_DETECT_FPS) {
                return Err(fail(
                    cam.detect_fps.span(),
                    field("detect_fps"),
                    format!("must be above 0 and at most {MAX_DETECT_FPS}"),
                ));
            }
            let labels = cam.labels.get_ref().iter();
            let filtered = cam.filters.get_ref().keys();
            if let Some(bad) = labels
                .chain(filtered)
                .find(|l| !known_labels.contains(l.as_str()))
            {
                return Err(fail(
                    cam.labels.span(),
                    field("labels"),
                    format!(
                        "unknown label {bad:?} (labels are COCO names such as \"person\", \"car\")"
                    ),
                ));
            }
            if let Some(score) = &cam.min_score {
                if !(0.0..=1.0).contains(score.get_ref()) {
                    return Err(fail(
                        score.span(),
                        field("min_score"),
                        "must be between 0 and 1".into(),
                    ));
                }
            }
            let tracker = cam.tracker.get_ref();
            if tracker.confirm_frames == 0
                || !(tracker.lost_after_s > 0.0 && tracker.lost_after_s <= 3600.0)
                || !(0.0..=1.0).contains(&tracker.track_min_score)
            {
                return Err(fail(
                    cam.tracker.span(),
                    field("tracker"),
                    "confirm_frames must be at least 1, lost_after_s above 0 and at most 3600, \
                     track_min_score between 0 and 1"
                        .into(),
                ));
            }
            if let Err(e) = cam.scene(&self.detector).validate() {
                // Point at the part of the camera the message is about.
                let span = [
                    (&cam.filters.span(), "filters"),
                    (&cam.zones.span(), "zone"),
                    (&cam.lines.span(), "line"),
                ]
                .into_iter()
                .find(|(_, key)| e.to_string().contains(key))
                .map_or(cam.id.span(), |(s, _)| s.clone());
                return Err(fail(span, field("analytics"), e.to_string()));
            }
        }
        Ok(())
    }
}

/// Same rule as the API's: ids appear in URLs and file names.
pub fn valid_camera_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// 1-based line of byte offset `pos`.
fn line_of(text: &str, pos: usize) -> usize {
    text[..pos.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[server]
listen = "127.0.0.1:9000"

[storage]
path = "/tmp/vigil"

[[cameras]]
id = "gate"
url = "rtsp://192.0.2.10:554/stream1"
detect_fps = 5
labels = ["person", "car"]
"#;

    fn err(text: &str) -> ConfigError {
        Config::parse(text, Path::new("vigil.toml")).unwrap_err()
    }

    #[test]
    fn a_good_file_parses_with_defaults() {
        let c = Config::parse(GOOD, Path::new("vigil.toml")).unwrap();
        assert_eq!(c.cameras.len(), 1);
        assert_eq!(*c.detector.max_batch.get_ref(), 4);
        assert_eq!(c.detector.model, "ssdlite_mobilenet_v2_coco");
    }

    #[test]
    fn semantic_errors_name_field_and_line() {
        let e = err(&GOOD.replace("detect_fps = 5", "detect_fps = 0"));
        assert_eq!(e.line, Some(11));
        assert_eq!(e.field.as_deref(), Some("cameras[0].detect_fps"));
        assert_eq!(
            e.to_string(),
            "vigil.toml:11: cameras[0].detect_fps: must be above 0 and at most 60"
        );

        let e = err(&GOOD.replace("\"car\"", "\"unicorn\""));
        assert_eq!(
            (e.line, e.field.as_deref()),
            (Some(12), Some("cameras[0].labels"))
        );

        let e = err(&GOOD.replace("rtsp://192.0.2.10:554/stream1", "gopher://x"));
        assert_eq!(e.line, Some(10));

        let e = err(&GOOD.replace(
            "path = \"/tmp/vigil\"",
            "path = \"/tmp/vigil\"\nmax_database_mb = 1",
        ));
        assert_eq!(
            (e.line, e.field.as_deref()),
            (Some(7), Some("storage.max_database_mb"))
        );

        let e = err(&format!("{GOOD}\n[detector]\ndevice = \"gpu\"\n"));
        assert_eq!(
            (e.line, e.field.as_deref()),
            (Some(15), Some("detector.device"))
        );
        let e = err(&format!("{GOOD}\n[detector]\nprecision = \"int4\"\n"));
        assert_eq!(e.line, Some(15), "{e}");
        let e = err(&format!("{GOOD}\n[detector]\nprecision = \"bf16\"\n"));
        assert_eq!(
            (e.line, e.field.as_deref()),
            (Some(15), Some("detector.precision")),
            "{e}"
        );

        let e = err(&GOOD.replace("127.0.0.1:9000", "localhost"));
        assert_eq!(
            (e.line, e.field.as_deref()),
            (Some(3), Some("server.listen"))
        );

        let dup = format!("{GOOD}\n[[cameras]]\nid = \"gate\"\nurl = \"a.mp4\"\n");
        let e = err(&dup);
        assert_eq!(e.line, Some(15));
        assert!(e.message.contains("used twice"));
    }

    const ANALYTICS: &str = r#"
min_score = 0.6
masks = [[[0.0, 0.0], [0.2, 0.0], [0.2, 0.2]]]
lines = [{ name = "walkway", from = [0.4, 0.25], to = [0.4, 0.75] }]
tracker = { confirm_frames = 2, lost_after_s = 1.5 }

[[cameras.zones]]
name = "driveway"
polygon = [[0.1, 0.5], [0.6, 0.5], [0.6, 1.0], [0.1, 1.0]]

[cameras.filters.car]
min_score = 0.7
min_area = 0.001
"#;

    #[test]
    fn camera_analytics_settings_parse_into_a_scene() {
        let c = Config::parse(&format!("{GOOD}{ANALYTICS}"), Path::new("vigil.toml")).unwrap();
        let cam = &c.cameras[0];
        let scene = cam.scene(&c.detector);
        assert_eq!(scene.min_score, 0.6);
        assert_eq!(scene.confident_from("car"), 0.7);
        assert_eq!(scene.zones[0].name, "driveway");
        assert_eq!(scene.lines[0].name, "walkway");
        assert_eq!(scene.masks.len(), 1);
        let t = cam.tracker_config();
        // 1.5 s at 5 analysed frames per second; by the clock, the 9 frame
        // intervals 8 missed frames take (1.8 s).
        assert_eq!((t.confirm_hits, t.lost_frames), (2, 8));
        assert_eq!(t.lost_after_ms, 1800);
    }

    #[test]
    fn bad_analytics_settings_name_their_line() {
        let text = format!("{GOOD}{ANALYTICS}");
        let e = err(&text.replace("[0.6, 1.0], [0.1, 1.0]", "[0.6, 1.5], [0.1, 1.0]"));
        assert_eq!(e.line, Some(21), "{e}");
        assert!(e.message.contains("outside the frame"), "{e}");
        let e = err(&text.replace("[[0.0, 0.0], [0.2, 0.0], [0.2, 0.2]]", "[[0.0, 0.0]]"));
        assert_eq!(e.line, Some(15), "{e}");
        let e = err(&text.replace("\"driveway\"", "\"walkway\""));
        assert!(e.message.contains("used twice"), "{e}");
        let e = err(&text.replace("min_area = 0.001", "min_area = 2.0"));
        assert_eq!(e.field.as_deref(), Some("cameras[0].analytics"));
        assert_eq!(e.line, Some(23), "{e}");
        let e = err(&text.replace("lost_after_s = 1.5", "lost_after_s = 0"));
        assert_eq!(
            (e.line, e.field.as_deref()),
            (Some(17), Some("cameras[0].tracker"))
        );
        let e = err(&text.replace("filters.car", "filters.unicorn"));
        assert!(e.message.contains("unicorn"), "{e}");
    }

    #[test]
    fn syntax_and_type_errors_carry_the_line() {
        let e = err(&GOOD.replace("detect_fps = 5", "detect_fps = \"fast\""));
        assert_eq!(e.line, Some(11));
        let e = err(&GOOD.replace("labels", "lables"));
        assert_eq!(e.line, Some(12));
        assert!(e.message.contains("lables"), "{}", e.message);
        let e = err("[storage\npath = 1");
        assert_eq!(e.line, Some(1));
        let e = err("[server]\nlisten = \"0.0.0.0:1\"\n");
        assert!(e.message.contains("storage"), "{}", e.message);
    }

    #[test]
    fn the_shown_config_keeps_its_layout_but_no_credentials() {
        let text = "[storage]\npath = \"db\"\n\n# gate camera\n[[cameras]]\nid = \"gate\"\n\
                    url = \"rtsp://admin:hunter22@10.0.0.5/stream\"\n\n[[cameras]]\nid = \"yard\"\n\
                    url = \"rtsp://10.0.0.6/s\"\nusername = \"u\"\npassword = \"s3cret!\"\n";
        let shown = Config::parse(text, Path::new("t.toml"))
            .unwrap()
            .redacted_toml();
        assert!(
            !shown.contains("hunter22") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert!(shown.contains("# gate camera"), "comments stay: {shown}");
        assert!(
            shown.contains("url = \"rtsp://***@10.0.0.5/stream\""),
            "{shown}"
        );
        assert!(shown.contains("password = \"<redacted>\""), "{shown}");
        Config::parse(&shown, Path::new("shown.toml")).expect("still a valid config");
    }

    #[test]
    fn input_options_take_toml_scalars_and_refuse_what_vigil_sets() {
        let usb = "[storage]\npath = \"db\"\n[[cameras]]\nid = \"usb\"\nurl = \"/dev/video0\"\n\
                   input_options = { input_format = \"mjpeg\", video_size = \"1920x1080\", \
                   framerate = 30, ts = 1.5, use_libv4l2 = true }\n";
        let c = Config::parse(usb, Path::new("vigil.toml")).unwrap();
        let options: Vec<(String, String)> = c.cameras[0]
            .input_options()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let expected = [
            ("framerate", "30"),
            ("input_format", "mjpeg"),
            ("ts", "1.5"),
            ("use_libv4l2", "1"),
            ("video_size", "1920x1080"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(options, expected);

        let e = err(&usb.replace("framerate", "rtsp_transport"));
        assert_eq!(e.line, Some(6), "{e}");
        assert_eq!(e.field.as_deref(), Some("cameras[0].input_options"));
        assert!(e.message.contains("transport"), "{e}");
        let e = err(&usb.replace("ts = 1.5", "ts = [1]"));
        assert_eq!(e.line, Some(6), "{e}");
    }

    #[test]
    fn tls_needs_both_files() {
        let one = "[server]\ntls_cert = \"/etc/vigil/cert.pem\"\n[storage]\npath = \"db\"\n";
        let e = err(one);
        assert_eq!(
            (e.line, e.field.as_deref()),
            (Some(2), Some("server.tls")),
            "{e}"
        );
        let both = one.replace("[storage]", "tls_key = \"/etc/vigil/key.pem\"\n[storage]");
        let c = Config::parse(&both, Path::new("t.toml")).unwrap();
        assert_eq!(c.server.tls().unwrap().key, Path::new("/etc/vigil/key.pem"));
    }

    #[test]
    fn mqtt_needs_a_plain_mqtt_url_and_hides_its_password() {
        let base = "[storage]\npath = \"db\"\n[mqtt]\n";
        let ok =
            format!("{base}url = \"mqtt://broker.lan\"\nusername = \"u\"\npassword = \"pw-123\"\n");
        let c = Config::parse(&ok, Path::new("t.toml")).unwrap();
        assert_eq!(
            c.mqtt.as_ref().unwrap().address().unwrap(),
            ("broker.lan".into(), 1883)
        );
        assert!(!c.redacted_toml().contains("pw-123"));
        for bad in [
            "http://broker",
            "mqtts://broker",
            "mqtt://u:p@broker",
            "mqtt://broker:99999",
        ] {
            let e = err(&format!("{base}url = \"{bad}\"\n"));
            assert_eq!(
                (e.line, e.field.as_deref()),
                (Some(4), Some("mqtt.url")),
                "{bad}: {e}"
            );
        }
    }
}
