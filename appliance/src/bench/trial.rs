//! One measured run of the whole pipeline (decode, batch, model, tracker,
//! storage) with N cameras: warm up, then measure over a fixed window.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::ProgressBar;
use serde::Serialize;
use vigil_storage::LagSummary;

use super::clips::Clip;
use super::Settings;
use crate::config::Config;
use crate::pipeline::{self, Counters};
use crate::reload::ConfigControl;

/// What one trial measured over its window.
#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    pub cameras: usize,
    pub seconds: f64,
    /// Frames read from the streams, per second (all cameras).
    pub input_fps: f64,
    pub decoded_fps: f64,
    /// Frames through the model, per second.
    pub analysed_fps: f64,
    /// What real-time cameras at `detect_fps` send the model (paced runs).
    pub expected_fps: Option<f64>,
    pub frames_dropped: u64,
    pub frames_skipped: u64,
    pub reconnects: u64,
    pub cameras_with_errors: u64,
    pub batches: u64,
    pub mean_batch: f64,
    pub ms_per_batch: f64,
    /// Frame decoded to its detections committed to SQLite.
    pub latency: LagSummary,
    pub rows_stored: u64,
    pub rows_dropped: u64,
    /// Share of the whole box (every core) this process used.
    pub cpu_percent: f64,
    pub peak_rss_mib: f64,
    /// Paced runs: every sampled frame analysed in time, none dropped.
    pub held: Option<bool>,
    /// Samples through the window: memory and queues must stay flat.
    pub timeline: Vec<Sample>,
}

/// The pipeline at one moment of the window.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds into the window.
    pub at_seconds: f64,
    /// Since the previous sample.
    pub analysed_fps: f64,
    pub frames_dropped: u64,
    pub rss_mib: f64,
    pub queued_frames: u64,
    pub pending_rows: u64,
}

impl Sample {
    fn take(start: Instant, (then, before): (Instant, Counters), now: Counters) -> Self {
        let seconds = then.elapsed().as_secs_f64().max(1e-3);
        Self {
            at_seconds: (start.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            analysed_fps: (now.frames_analysed - before.frames_analysed) as f64 / seconds,
            frames_dropped: now.frames_dropped - before.frames_dropped,
            rss_mib: process().resident_bytes as f64 / (1 << 20) as f64,
            queued_frames: now.queued_frames,
            pending_rows: now.pending_rows,
        }
    }
}

/// Runs `cameras` cameras for the warm-up and the window of `settings`.
pub fn run(
    settings: &Settings,
    clips: &[Clip],
    cameras: usize,
    data: &Path,
    progress: &ProgressBar,
) -> anyhow::Result<Trial> {
    let dir = data.join(format!("trial-{cameras}"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    quiet_first_start(&dir)?;
    let text = config_text(settings, clips, cameras, &dir);
    let config = Config::parse(&text, Path::new("<bench>"))?;
    let (requests, _unused) = crossbeam_channel::unbounded();
    let control = Arc::new(ConfigControl::new(config.clone(), requests));
    let running = pipeline::start(&config, control, Default::default())?;

    let total = settings.warmup() + settings.duration();
    progress.reset();
    progress.set_length(total.as_secs());
    progress.set_message(format!("{cameras} cameras: warming up"));
    let started = Instant::now();
    warm_up(progress, started, settings.warmup());

    let before = Window::open(&running);
    let mut timeline = Vec::new();
    let mut last = (before.at, before.counters);
    let every = Duration::from_secs(settings.sample_every_seconds.max(1));
    while started.elapsed() < total {
        std::thread::sleep(Duration::from_millis(250).min(total - started.elapsed()));
        progress.set_position(started.elapsed().as_secs());
        let c = running.counters();
        if last.0.elapsed() >= every || started.elapsed() >= total {
            let sample = Sample::take(before.at, last, c);
            progress.set_message(format!(
                "{cameras} cameras: {:.1} frames/s analysed, {} dropped, {:.0} MiB",
                sample.analysed_fps,
                c.frames_dropped - before.counters.frames_dropped,
                sample.rss_mib
            ));
            timeline.push(sample);
            last = (Instant::now(), c);
        }
    }
    let mut trial = before.close(&running, settings, clips, cameras);
    trial.timeline = timeline;
    running.stop();
    std::fs::remove_dir_all(&dir).ok();
    Ok(trial)
}

/// Counters at the start of the measured window.
struct Window {
    at: Instant,
    counters: Counters,
    cpu_seconds: f64,
}

impl Window {
    fn open(running: &pipeline::Running) -> Self {
        running.store_lag().reset();
        reset_peak_rss();
        Self {
            at: Instant::now(),
            counters: running.counters(),
            cpu_seconds: process().cpu_seconds,
        }
    }

    fn close(
        self,
        running: &pipeline::Running,
        settings: &Settings,
        clips: &[Clip],
        cameras: usize,
    ) -> Trial {
        let seconds = self.at.elapsed().as_secs_f64();
        let now = running.counters();
        let p = process();
        let (a, b) = (self.counters, now);
        let rate = |x: u64| x as f64 / seconds;
        let batches = b.batches - a.batches;
        let analysed = b.frames_analysed - a.frames_analysed;
        let expected = settings
            .realtime
            .then(|| expected_fps(settings.detect_fps, clips, cameras));
        let dropped = b.frames_dropped - a.frames_dropped;
        let analysed_fps = rate(analysed);
        Trial {
            cameras,
            seconds,
            input_fps: rate(b.frames_in - a.frames_in),
            decoded_fps: rate(b.frames_decoded - a.frames_decoded),
            analysed_fps,
            expected_fps: expected,
            frames_dropped: dropped,
            frames_skipped: b.frames_skipped - a.frames_skipped,
            reconnects: b.reconnects - a.reconnects,
            cameras_with_errors: b.cameras_with_errors,
            batches,
            mean_batch: analysed as f64 / batches.max(1) as f64,
            ms_per_batch: (b.inference_us - a.inference_us) as f64 / 1e3 / batches.max(1) as f64,
            latency: running.store_lag().summary(),
            rows_stored: b.rows_stored - a.rows_stored,
            rows_dropped: b.rows_dropped - a.rows_dropped,
            cpu_percent: (p.cpu_seconds - self.cpu_seconds) / seconds / cores() as f64 * 100.0,
            peak_rss_mib: p.peak_resident_bytes as f64 / (1 << 20) as f64,
            held: expected
                .map(|e| dropped == 0 && b.cameras_with_errors == 0 && analysed_fps >= 0.95 * e),
            timeline: Vec::new(),
        }
    }
}

/// Frames per second that `cameras` real-time cameras send the model: each
/// sends `detect_fps`, or all its frames if its stream is slower.
pub fn expected_fps(detect_fps: f64, clips: &[Clip], cameras: usize) -> f64 {
    (0..cameras)
        .map(|i| clips[i % clips.len()].fps.min(detect_fps))
        .sum()
}

/// Ticks the progress bar through the warm-up, which ends at `until` after `started`.
fn warm_up(progress: &ProgressBar, started: Instant, until: Duration) {
    while started.elapsed() < until {
        std::thread::sleep(Duration::from_millis(250).min(until - started.elapsed()));
        progress.set_position(started.elapsed().as_secs());
    }
}

/// The pipeline's first start makes an admin and logs its password: make
/// it beforehand so the bench's output stays a table.
fn quiet_first_start(dir: &Path) -> anyhow::Result<()> {
    let db = vigil_storage::prepare(dir)?;
    vigil_storage::AuthStore::open(&db)?.ensure_admin()?;
    Ok(())
}

fn config_text(settings: &Settings, clips: &[Clip], cameras: usize, dir: &Path) -> String {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[storage]\npath = {}\n\n\
         [detector]\nmodel = {}\nprecision = {}\ndevice = {}\nmax_batch = {}\n\
         gpu_frames = {}\n",
        q(&dir.display().to_string()),
        q(&settings.model),
        q(&format!("{:?}", settings.precision).to_lowercase()),
        q(&settings.device),
        settings.max_batch,
        settings.gpu_frames,
    );
    for i in 0..cameras {
        let clip = &clips[i % clips.len()];
        let url = format!(
            "file://{}?loop=1&realtime={}",
            clip.path.display(),
            u8::from(settings.realtime)
        );
        text.push_str(&format!(
            "\n[[cameras]]\nid = \"cam{:02}-{}\"\nurl = {}\ndetect_fps = {}\nhwaccel = {}\n",
            i + 1,
            clip.name,
            q(&url),
            settings.detect_fps,
            q(&format!("{:?}", settings.hwaccel).to_lowercase()),
        ));
    }
    text
}

fn process() -> vigil_web_ui::ProcessStats {
    vigil_web_ui::process_stats(Instant::now())
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Makes the kernel's peak-RSS mark start again from the current size, so
/// each window reports its own peak (Linux: `/proc/self/clear_refs`).
fn reset_peak_rss() {
    if let Err(e) = std::fs::write("/proc/self/clear_refs", "5") {
        tracing::debug!(error = %e, "peak memory is measured from the process start");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_streams_send_all_their_frames_and_fast_ones_detect_fps() {
        let clip = |fps| Clip {
            name: "x",
            path: "/x.mp4".into(),
            fps,
        };
        let clips = [clip(30.0), clip(2.0)];
        // cam1 30 fps -> 5, cam2 2 fps -> 2, cam3 30 fps -> 5
        assert_eq!(expected_fps(5.0, &clips, 3), 12.0);
    }
}
