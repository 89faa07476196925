//! Wires the crates into the running appliance and takes it down in order.
//!
//! sources ──frames──► analyser ──rows──► storage writer
//!                        └──snapshots──► live view ◄── HTTP server ──► storage reader

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use vigil_analytics::CameraAnalytics;
use vigil_inference::ModelRegistry;
use vigil_ingest::source::redact_credentials;
use vigil_ingest::{
    frame_queue, spawn_source, QueueCloser, SourceConfig, SourceHandle, SourceStats,
};
use vigil_storage::{
    spawn_writer, AuthStore, CameraRecord, HotStore, Reader, WriteOp, WriterConfig,
};
use vigil_web_ui::{
    AppState, BatchLatency, CameraStatus, InferenceStats, LiveFrames, LoginLimiter, ServerConfig,
};

use crate::analyse::{Analyser, AnalysisStats, BatchPolicy};
use crate::config::Config;
use crate::reload::{ConfigControl, ConfigUpdateError, Request};
use crate::{service, shutdown};

/// Runs `config` until SIGINT or SIGTERM, then shuts down cleanly. A new
/// configuration (PUT /api/v1/config, or SIGHUP after editing the file)
/// restarts the pipeline in the process; one that does not start is rolled
/// back.
pub fn run(config: Config) -> anyhow::Result<()> {
    let signals = shutdown::install()?;
    let (requests, incoming) = crossbeam_channel::unbounded();
    shutdown::forward(signals, requests.clone())?;
    let control = Arc::new(ConfigControl::new(config.clone(), requests));
    // Outlives restarts: a reload must not forget who was failing to log in.
    let limiter = Arc::new(LoginLimiter::default());
    let mut running = start(&config, control.clone(), limiter.clone())?;
    service::ready(&running.summary());
    let mut health = service::Health::new();
    loop {
        let request = match incoming.recv_timeout(service::tick()) {
            Ok(r) => r,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                // No ping while stuck: systemd's watchdog restarts us.
                match health.check(running.health_sample(), std::time::Instant::now()) {
                    Ok(()) => {
                        service::watchdog_ping();
                        service::status(&running.summary());
                    }
                    Err(stuck) => {
                        tracing::error!(reason = %stuck, "pipeline stuck; not feeding the watchdog")
                    }
                }
                continue;
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        };
        let new = match request {
            Request::Stop(signal) => {
                tracing::info!(signal, "shutting down");
                break;
            }
            Request::Reload(config) => *config,
            Request::ReloadFile => match control.load_file() {
                Ok(config) => config,
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: keeping the running configuration");
                    continue;
                }
            },
        };
        service::reloading();
        running = service::feeding_watchdog(RELOAD_LIMIT, || {
            running.stop();
            let old = control.current();
            match start(&new, control.clone(), limiter.clone()) {
                Ok(r) => {
                    tracing::info!("running with the new configuration");
                    control.set_current(new);
                    Ok(r)
                }
                Err(e) => {
                    tracing::error!(
                        error = format!("{e:#}"),
                        "the new configuration does not start; going back"
                    );
                    control.restore_file(&old);
                    start(&old, control.clone(), limiter.clone())
                }
            }
        })?;
        service::ready(&running.summary());
    }
    service::stopping();
    running.stop();
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Software decoding threads per camera: the cores shared out, at least
/// one each. ffmpeg's own default (a thread per core for every camera)
/// would start cameras x cores threads, each holding frames in flight.
fn decode_threads_per_camera(cameras: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    (cores / cameras.max(1)).max(1)
}

/// How long a reload may take before the watchdog is left to restart us:
/// under the unit's TimeoutStartSec, which bounds a cold start the same way.
const RELOAD_LIMIT: Duration = Duration::from_secs(110);

/// How long a stop waits for the camera threads to end.
const SOURCE_STOP_LIMIT: Duration = Duration::from_secs(5);

/// The started appliance.
pub struct Running {
    stop: Arc<AtomicBool>,
    sources: Vec<SourceHandle>,
    /// Ends the frame queue at a stop, whatever sources are left.
    frames: QueueCloser,
    analyser: std::thread::JoinHandle<()>,
    writer: vigil_storage::WriterHandle,
    server: vigil_web_ui::ServerHandle,
    /// Publishes what the writer stored; stopped after it.
    mqtt: Option<crate::mqtt::MqttPublisher>,
    view: Arc<dyn vigil_web_ui::Pipeline>,
    analysis: Arc<AnalysisStats>,
    /// Held to know when every other user let go: redb allows one opener.
    hot: Arc<HotStore>,
}

pub fn start(
    config: &Config,
    control: Arc<ConfigControl>,
    limiter: Arc<LoginLimiter>,
) -> anyhow::Result<Running> {
    vigil_ingest::init().context("initialising ffmpeg")?;
    let db = vigil_storage::prepare(&config.storage.path)?;
    tracing::info!(database = %db.display(), "storage ready");
    let interrupted = vigil_storage::close_interrupted_events(&db)?;
    if interrupted > 0 {
        tracing::warn!(
            events = interrupted,
            "closed events left open by an unclean stop, at their camera's last detection"
        );
    }

    let auth = Arc::new(AuthStore::open(&db)?);
    if let Some(password) = auth.ensure_admin()? {
        // Shown this once: only its argon2 hash is stored.
        tracing::warn!(
            user = "admin",
            password = %password,
            "first start: created the admin user; log in with this password and change it \
             (Settings, or `vigil user add admin`)"
        );
    }

    let device = vigil_inference::select_device(config.detector.device.get_ref())?;
    let precision = *config.detector.precision.get_ref();
    match precision {
        vigil_inference::Precision::Int8 => {
            let kernel = vigil_inference::ops::int8::int8_kernel();
            anyhow::ensure!(
                kernel.is_fast(),
                "detector.precision = \"int8\" needs an x86-64 CPU with AVX2 (or AVX-512 VNNI), \
                 which this one lacks (the portable int8 kernel is far slower than f32); use \"f32\""
            );
            tracing::info!(
                kernel = kernel.name(),
                "int8 convolutions: kernel picked for this CPU"
            );
        }
        vigil_inference::Precision::F16 | vigil_inference::Precision::Bf16 if device.is_cpu() => {
            // Our fused CPU kernels are f32 (and int8); half precision falls back to generic ones.
            tracing::warn!(
                ?precision,
                "half precision on the CPU is slower than f32; use it with device = \"cuda\""
            );
        }
        _ => {}
    }
    let mut detector = ModelRegistry::from_env()
        .load_as(&config.detector.model, &device, precision)
        .context("loading the detection model (run `make models` to fetch the default one)")?;

    let hot = Arc::new(HotStore::open(
        &config.storage.path,
        *config.storage.snapshot_budget_mb.get_ref() << 20,
    )?);
    let writer = spawn_writer(
        &db,
        WriterConfig {
            retention: config.storage.retention(),
            ..Default::default()
        },
    )?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let live = Arc::new(LiveFrames::default());
    let max_batch = *config.detector.max_batch.get_ref();
    // Per camera, room for its share of a batch in flight and of the next
    // one (at least 2); beyond that a camera drops its own oldest frame.
    let per_camera = (2 * max_batch).div_ceil(config.cameras.len().max(1)).max(2);
    let (frame_tx, frame_rx) = frame_queue(per_camera);
    let stop = Arc::new(AtomicBool::new(false));

    // With the model on a GPU, NVDEC decodes into its context and frames
    // reach it without leaving GPU memory.
    let gpu_target = vigil_inference::gpu_context(&device)
        .filter(|_| config.detector.gpu_frames)
        .map(|g| vigil_ingest::GpuTarget {
            ordinal: g.ordinal,
            context: g.context,
        });
    let decode_threads = decode_threads_per_camera(config.cameras.len());
    let mut sources = Vec::new();
    let mut directory = Vec::new();
    let mut cameras = HashMap::new();
    for cam in &config.cameras {
        let id = cam.id.get_ref().clone();
        let url = cam.source_url()?;
        let handle = spawn_source(
            SourceConfig {
                camera_id: id.clone(),
                url,
                detect_fps: *cam.detect_fps.get_ref(),
                hwaccel: cam.hwaccel,
                decode_threads,
                max_width: Some(*cam.max_width.get_ref()),
                gpu_target,
                input_options: cam.input_options()?,
            },
            frame_tx.clone(),
            stop.clone(),
        )?;
        writer
            .sender()
            .send(WriteOp::Camera(CameraRecord {
                id: id.clone(),
                source: redact_credentials(cam.url.get_ref()),
                seen_ms: now_ms,
            }))
            .ok();
        directory.push(DirectoryEntry {
            id: id.clone(),
            source: redact_credentials(cam.url.get_ref()),
            detect_fps: *cam.detect_fps.get_ref(),
            stats: handle.stats.clone(),
            zones: serde_json::json!({
                "zones": cam.zones.get_ref(),
                "lines": cam.lines.get_ref(),
            }),
        });
        cameras.insert(
            id,
            CameraAnalytics::new(cam.scene(&config.detector), cam.tracker_config()),
        );
        sources.push(handle);
    }
    // Only the sources hold senders now: when they end, the queue closes.
    drop(frame_tx);

    // The tracker's second pass needs the detector's low-score boxes too.
    let floor = cameras
        .values()
        .map(|c| c.scene().track_min_score.min(c.scene().min_score))
        .fold(*config.detector.min_score.get_ref(), f32::min);
    detector.set_score_threshold(floor);
    let analysis_stats = Arc::new(AnalysisStats::default());
    let batch_latency = BatchLatency::default();
    let model = ModelSummary::new(config, precision, &device);
    let analyser = Analyser {
        detector,
        cameras,
        run_id: now_ms.to_string(),
        policy: BatchPolicy {
            max_batch,
            max_wait: Duration::from_millis(config.detector.max_wait_ms),
        },
        store: writer.sender(),
        hot: hot.clone(),
        live: live.clone(),
        stats: analysis_stats.clone(),
        latency: batch_latency.clone(),
    };
    let frames_closer = frame_rx.closer();
    let analyser = std::thread::Builder::new()
        .name("analyser".into())
        .spawn(move || analyser.run(frame_rx))?;

    let analysis_stats_handle = analysis_stats.clone();
    let view: Arc<dyn vigil_web_ui::Pipeline> = Arc::new(PipelineView {
        cameras: directory,
        model,
        stats: analysis_stats,
        config_toml: config.redacted_toml(),
        control,
    });
    let reader = Arc::new(Reader::new(&db));
    let mqtt = match &config.mqtt {
        Some(section) => {
            let box_id = reader.poll_state()?.box_id;
            let settings = crate::mqtt::Settings::new(section, &box_id)?;
            Some(crate::mqtt::spawn(
                settings,
                reader.clone(),
                hot.clone(),
                view.clone(),
            )?)
        }
        None => None,
    };
    let server = vigil_web_ui::start(
        &ServerConfig {
            listen: config.server.listen.get_ref().clone(),
            workers: 2,
            tls: config.server.tls(),
        },
        AppState {
            pipeline: view.clone(),
            live,
            reader,
            storage_health: writer.stats.clone(),
            hot: hot.clone(),
            auth,
            limiter,
            secure_cookies: config.server.tls().is_some(),
            started: std::time::Instant::now(),
            batch_latency,
        },
    )?;
    Ok(Running {
        stop,
        sources,
        frames: frames_closer,
        analyser,
        writer,
        server,
        mqtt,
        view,
        analysis: analysis_stats_handle,
        hot,
    })
}

impl Running {
    /// What the watchdog looks at.
    pub fn health_sample(&self) -> service::Sample {
        let w = &self.writer.stats;
        service::Sample {
            analysing_for: self.analysis.analysing_for(),
            pending_rows: w.pending_rows.load(Ordering::Relaxed),
            commit_attempts: w.commits.load(Ordering::Relaxed)
                + w.failed_commits.load(Ordering::Relaxed),
        }
    }

    /// Running totals of every stage, for `vigil bench`.
    pub fn counters(&self) -> Counters {
        let mut c = Counters::default();
        for s in &self.sources {
            let s = s.stats.snapshot();
            c.frames_in += s.frames_in;
            c.frames_decoded += s.frames_decoded;
            c.frames_skipped += s.frames_skipped;
            c.frames_sampled += s.frames_sampled;
            c.frames_dropped += s.frames_dropped;
            c.reconnects += s.reconnects;
            c.cameras_with_errors += u64::from(s.last_error.is_some());
        }
        c.frames_analysed = self.analysis.frames.load(Ordering::Relaxed);
        c.batches = self.analysis.batches.load(Ordering::Relaxed);
        c.inference_us = self.analysis.inference_us.load(Ordering::Relaxed);
        c.rows_stored = self.writer.stats.rows_written.load(Ordering::Relaxed);
        c.rows_dropped = self.writer.stats.rows_dropped.load(Ordering::Relaxed);
        c.queued_frames = self.analysis.queued_frames.load(Ordering::Relaxed);
        c.pending_rows = self.writer.stats.pending_rows.load(Ordering::Relaxed);
        c
    }

    /// Frame decoded to detections committed.
    pub fn store_lag(&self) -> &vigil_storage::StoreLag {
        &self.writer.stats.lag
    }

    /// One line for `systemctl status`.
    pub fn summary(&self) -> String {
        let cameras = self.view.cameras();
        let streaming = cameras
            .iter()
            .filter(|c| c.ingest["state"] == "streaming")
            .count();
        let i = self.view.inference();
        let storage = if self.writer.stats.is_failing() {
            "storage FAILING"
        } else {
            "storage ok"
        };
        format!(
            "{streaming}/{} cameras streaming; {} frames analysed, {} events; {storage}",
            cameras.len(),
            i.frames,
            i.events_opened
        )
    }

    /// Sources stop, the queue drains through the model, the writer commits,
    /// then the HTTP server closes.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        // Sources see the flag within a frame or a 100 ms nap; network
        // reads are interrupted at once. One that has not ended by then is
        // blocked in the kernel and is left behind rather than waited for.
        let deadline = std::time::Instant::now() + SOURCE_STOP_LIMIT;
        let stuck: Vec<String> = self
            .sources
            .into_iter()
            .filter_map(|s| {
                let camera = s.camera_id.clone();
                (!s.join_by(deadline)).then_some(camera)
            })
            .collect();
        if !stuck.is_empty() {
            tracing::error!(
                cameras = ?stuck,
                "left behind: stuck in the operating system (a device or file that does not \
                 answer); each ends by itself when its read returns"
            );
        }
        // Ends the analyser's queue even if a stuck source still holds a
        // sender: what is queued is analysed and stored, then it stops.
        self.frames.close();
        if self.analyser.join().is_err() {
            tracing::error!("analyser thread panicked");
        }
        self.writer.finish();
        // After the writer: the last changes (events closed at the stop)
        // are stored, so they go out too.
        if let Some(mqtt) = self.mqtt {
            mqtt.stop();
        }
        self.server.stop();
        // The server's worker threads drop their copy of the state a moment
        // after it stops. Wait for that, so a restart in this process can
        // open the hot store again (redb refuses a second opener).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&self.hot) > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if Arc::strong_count(&self.hot) > 1 {
            tracing::warn!("the hot store is still in use 10 s after the stop");
        }
    }
}

/// Totals since the pipeline started (see [`Running::counters`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    pub frames_in: u64,
    pub frames_decoded: u64,
    pub frames_skipped: u64,
    pub frames_sampled: u64,
    /// Sampled frames the analyser never saw: its queue was full.
    pub frames_dropped: u64,
    pub reconnects: u64,
    pub cameras_with_errors: u64,
    pub frames_analysed: u64,
    pub batches: u64,
    pub inference_us: u64,
    pub rows_stored: u64,
    pub rows_dropped: u64,
    /// Now, not totals: frames waiting for the model, rows for a commit.
    pub queued_frames: u64,
    pub pending_rows: u64,
}

struct DirectoryEntry {
    id: String,
    source: String,
    detect_fps: f64,
    stats: Arc<SourceStats>,
    zones: serde_json::Value,
}

/// The model as configured, for the stats.
struct ModelSummary {
    model: String,
    precision: String,
    int8_kernel: Option<String>,
    device: String,
    max_batch: usize,
}

impl ModelSummary {
    fn new(
        config: &Config,
        precision: vigil_inference::Precision,
        device: &candle_core::Device,
    ) -> Self {
        Self {
            model: config.detector.model.clone(),
            precision: format!("{precision:?}").to_lowercase(),
            int8_kernel: precision.int8_kernel().map(|k| k.name().to_string()),
            device: if device.is_cpu() { "cpu" } else { "cuda" }.to_string(),
            max_batch: *config.detector.max_batch.get_ref(),
        }
    }
}

/// What the HTTP server may see of the running pipeline.
struct PipelineView {
    cameras: Vec<DirectoryEntry>,
    model: ModelSummary,
    stats: Arc<AnalysisStats>,
    config_toml: String,
    control: Arc<ConfigControl>,
}

impl vigil_web_ui::Pipeline for PipelineView {
    fn cameras(&self) -> Vec<CameraStatus> {
        self.cameras
            .iter()
            .map(|e| CameraStatus {
                id: e.id.clone(),
                source: e.source.clone(),
                detect_fps: e.detect_fps,
                ingest: serde_json::to_value(e.stats.snapshot()).unwrap_or_default(),
                zones: e.zones.clone(),
            })
            .collect()
    }

    fn inference(&self) -> InferenceStats {
        let s = &self.stats;
        let batches = s.batches.load(Ordering::Relaxed);
        let seconds = s.inference_us.load(Ordering::Relaxed) as f64 / 1e6;
        InferenceStats {
            model: self.model.model.clone(),
            precision: self.model.precision.clone(),
            int8_kernel: self.model.int8_kernel.clone(),
            device: self.model.device.clone(),
            max_batch: self.model.max_batch,
            frames: s.frames.load(Ordering::Relaxed),
            batches,
            errors: s.errors.load(Ordering::Relaxed),
            inference_seconds: seconds,
            ms_per_batch: if batches == 0 {
                0.0
            } else {
                (seconds * 1e3 / batches as f64 * 100.0).round() / 100.0
            },
            events_opened: s.events_opened.load(Ordering::Relaxed),
        }
    }

    fn config_toml(&self) -> String {
        self.config_toml.clone()
    }

    fn apply_config(&self, toml: &str) -> Result<(), vigil_web_ui::ConfigRejected> {
        use vigil_web_ui::ConfigRejected;
        self.control.apply(toml).map_err(|e| match e {
            ConfigUpdateError::Invalid(m) => ConfigRejected::Invalid(m),
            other => ConfigRejected::Unavailable(other.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use vigil_inference::ops::int8::int8_kernel;
    use vigil_inference::Precision;

    use super::*;

    /// The stats name the int8 kernel the products run on, and only in int8.
    #[test]
    fn the_model_summary_names_the_int8_kernel() {
        let config = Config::parse(
            "[storage]\npath = \"db\"\n[[cameras]]\nid = \"a\"\nurl = \"file:///a.mp4\"\n",
            Path::new("vigil.toml"),
        )
        .unwrap();
        let cpu = candle_core::Device::Cpu;
        let int8 = ModelSummary::new(&config, Precision::Int8, &cpu);
        assert_eq!(int8.precision, "int8");
        assert_eq!(int8.int8_kernel.as_deref(), Some(int8_kernel().name()));
        let f32 = ModelSummary::new(&config, Precision::F32, &cpu);
        assert_eq!((f32.precision.as_str(), f32.int8_kernel), ("f32", None));
        assert_eq!(f32.max_batch, 4);
    }
}
