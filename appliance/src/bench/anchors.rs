//! Reference figures measured in the same run as the pipeline, so ratios
//! hold on a machine whose speed drifts: the model alone on the same frames
//! (what the pipeline would reach with free decoding, tracking and
//! storage), and the ffmpeg CLI decoding the same file.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use vigil_inference::{ImageView, ModelRegistry};
use vigil_ingest::{DecodeOptions, VideoInput};

use super::clips::{file_url, Clip};
use super::Settings;

/// The detector alone, in full batches of the clip's frames.
#[derive(Debug, Clone, Serialize)]
pub struct ModelAlone {
    pub batch: usize,
    pub frames_per_second: f64,
    pub ms_per_batch: f64,
}

/// Decoding the whole clip once, every frame, nothing else.
#[derive(Debug, Clone, Serialize)]
pub struct DecodeAlone {
    pub clip: String,
    pub frames: u64,
    pub vigil_fps: f64,
    /// `ffmpeg -i CLIP -f null -`; absent when the CLI is not installed.
    pub ffmpeg_cli_fps: Option<f64>,
}

pub fn model_alone(settings: &Settings, clip: &Clip, time: Duration) -> anyhow::Result<ModelAlone> {
    let device = vigil_inference::select_device(&settings.device)?;
    let detector = ModelRegistry::from_env()
        .load_as(&settings.model, &device, settings.precision)
        .context("loading the model")?;
    let frames = first_frames(&clip.path, settings.max_batch)?;
    let views = frames
        .iter()
        .map(|(w, h, rgb)| ImageView::new(*w as usize, *h as usize, rgb))
        .collect::<Result<Vec<_>, _>>()?;
    detector.detect(&views)?; // warm-up: first-call allocations
    let started = Instant::now();
    let mut batches = 0u32;
    while started.elapsed() < time || batches < 3 {
        detector.detect(&views)?;
        batches += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(ModelAlone {
        batch: views.len(),
        frames_per_second: f64::from(batches) * views.len() as f64 / seconds,
        ms_per_batch: seconds * 1e3 / f64::from(batches),
    })
}

/// `n` frames from the start of `path`, as the cameras hand them to the
/// model (RGB, no wider than the cameras' default `max_width`).
fn first_frames(path: &Path, n: usize) -> anyhow::Result<Vec<(u32, u32, Vec<u8>)>> {
    let options = DecodeOptions {
        max_width: Some(crate::config::DEFAULT_MAX_WIDTH),
        ..Default::default()
    };
    let mut input = VideoInput::open_with(&file_url(path, false), options)?;
    let mut frames = Vec::new();
    while frames.len() < n {
        if input.next_frame()?.is_none() {
            anyhow::bail!("{} has fewer than {n} frames", path.display());
        }
        frames.push(input.convert_to_rgb()?);
    }
    Ok(frames)
}

pub fn decode_alone(settings: &Settings, clip: &Clip) -> anyhow::Result<DecodeAlone> {
    let options = DecodeOptions {
        hwaccel: settings.hwaccel,
        ..Default::default()
    };
    let url = vigil_ingest::SourceUrl::File {
        path: clip.path.clone(),
        looping: false,
        realtime: false,
    };
    let started = Instant::now();
    let mut input = VideoInput::open_with(&url, options)?;
    let mut frames = 0u64;
    while input.next_frame()?.is_some() {
        frames += 1;
    }
    let vigil_fps = frames as f64 / started.elapsed().as_secs_f64();
    Ok(DecodeAlone {
        clip: clip.name.to_string(),
        frames,
        vigil_fps,
        ffmpeg_cli_fps: ffmpeg_cli_seconds(&clip.path).map(|s| frames as f64 / s),
    })
}

/// Wall time of the ffmpeg CLI decoding `path` to nothing, if it is installed.
fn ffmpeg_cli_seconds(path: &Path) -> Option<f64> {
    let started = Instant::now();
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?;
    status.success().then(|| started.elapsed().as_secs_f64())
}
