//! `vigil bench`: N simulated cameras through the whole appliance, measured
//! against anchors taken in the same run; `--max-cameras` finds how many
//! real-time cameras this box holds.

mod anchors;
mod clips;
mod plot;
mod report;
mod trial;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use vigil_inference::Precision;
use vigil_ingest::HwAccel;

use crate::cli::BenchArgs;
pub use clips::ClipChoice;
use report::{Machine, Report};

/// How long the model-alone anchor runs.
const ANCHOR_TIME: Duration = Duration::from_secs(8);

/// The run's settings, as the report shows them.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub model: String,
    pub precision: Precision,
    /// With int8: the CPU kernel its products run on (`vnni`, `avxvnni`, `avx2`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub int8_kernel: Option<&'static str>,
    pub device: String,
    pub hwaccel: HwAccel,
    /// NVDEC frames reach a GPU model in GPU memory (`detector.gpu_frames`).
    pub gpu_frames: bool,
    pub max_batch: usize,
    pub detect_fps: f64,
    pub realtime: bool,
    pub warmup_seconds: u64,
    pub duration_seconds: u64,
    pub sample_every_seconds: u64,
}

impl Settings {
    fn warmup(&self) -> Duration {
        Duration::from_secs(self.warmup_seconds)
    }

    fn duration(&self) -> Duration {
        Duration::from_secs(self.duration_seconds)
    }
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    vigil_ingest::init().context("initialising ffmpeg")?;
    let settings = Settings {
        model: args.model.clone(),
        precision: args.precision,
        int8_kernel: args.precision.int8_kernel().map(|k| k.name()),
        device: args.device.clone(),
        hwaccel: args.hwaccel,
        gpu_frames: !args.host_frames,
        max_batch: args.max_batch,
        detect_fps: args.detect_fps,
        realtime: args.max_cameras || !args.fast,
        warmup_seconds: args.warmup,
        duration_seconds: args.duration,
        sample_every_seconds: args.sample_every,
    };
    let data = args
        .data
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("vigil-bench"));
    let clips = clips::prepare(args.clip, &data.join("clips"))?;

    let (model_alone, decode_alone) = if args.no_anchors {
        (None, None)
    } else {
        eprintln!("anchors: the model alone, then decoding alone (same clips, same run)");
        (
            Some(anchors::model_alone(&settings, &clips[0], ANCHOR_TIME)?),
            Some(anchors::decode_alone(&settings, &clips[0])?),
        )
    };

    let progress = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} s  {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let mut trials = Vec::new();
    let mut measure = |cameras: usize| -> anyhow::Result<bool> {
        let t = trial::run(&settings, &clips, cameras, &data, &progress)?;
        let line = format!(
            "{cameras} cameras: {:.1} frames/s analysed of {}, {} dropped, p95 {} ms, CPU {:.0} %{}",
            t.analysed_fps,
            t.expected_fps
                .map_or("-".to_string(), |e| format!("{e:.1}")),
            t.frames_dropped,
            t.latency.p95_ms,
            t.cpu_percent,
            match t.held {
                Some(true) => ": held",
                Some(false) => ": NOT held",
                None => "",
            }
        );
        // A hidden bar (output not a terminal) prints nothing itself.
        if progress.is_hidden() {
            eprintln!("{line}");
        } else {
            progress.println(line);
        }
        let held = t.held.unwrap_or(false);
        trials.push(t);
        Ok(held)
    };
    let max_cameras = if args.max_cameras {
        Some(search(args.limit, &mut measure)?)
    } else {
        measure(args.cameras)?;
        None
    };
    progress.finish_and_clear();

    let report = Report {
        machine: Machine::this(),
        settings,
        clips: clips
            .iter()
            .map(|c| format!("{} ({:.0} fps)", c.name, c.fps))
            .collect(),
        model_alone,
        decode_alone,
        trials,
        max_cameras,
    };
    print!("{}", report.text());
    if let Some(path) = &args.json {
        write(path, &serde_json::to_string_pretty(&report)?)?;
    }
    if let Some(path) = &args.plot {
        let title = format!(
            "{} cameras on {} ({} cores): {} held",
            report.clips.join(" + "),
            report.machine.cpu,
            report.machine.cores,
            max_cameras.map_or("-".into(), |n| n.to_string())
        );
        write(path, &plot::cameras_vs_cpu(&title, &report.trials))?;
    }
    Ok(())
}

fn write(path: &PathBuf, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// The most cameras (up to `limit`) for which `held` is true: doubling
/// until one fails, then halving the gap. Assumes more cameras never hold
/// where fewer did not.
fn search(
    limit: usize,
    held: &mut impl FnMut(usize) -> anyhow::Result<bool>,
) -> anyhow::Result<usize> {
    let (mut good, mut bad) = (0, None);
    let mut n = 1;
    while n <= limit {
        if held(n)? {
            good = n;
            n *= 2;
        } else {
            bad = Some(n);
            break;
        }
    }
    // Everything up to the limit held: pretend the next count failed.
    let mut bad = bad.unwrap_or(limit + 1);
    while bad - good > 1 {
        let mid = (good + bad) / 2;
        if held(mid)? {
            good = mid;
        } else {
            bad = mid;
        }
    }
    Ok(good)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search_with(capacity: usize, limit: usize) -> (usize, Vec<usize>) {
        let mut tried = Vec::new();
        let found = search(limit, &mut |n| {
            tried.push(n);
            Ok(n <= capacity)
        })
        .unwrap();
        (found, tried)
    }

    #[test]
    fn the_search_finds_the_capacity_with_few_trials() {
        assert_eq!(search_with(0, 64), (0, vec![1]));
        assert_eq!(search_with(1, 64), (1, vec![1, 2]));
        assert_eq!(search_with(5, 64), (5, vec![1, 2, 4, 8, 6, 5]));
        assert_eq!(search_with(8, 64).0, 8);
        assert_eq!(search_with(100, 64), (64, vec![1, 2, 4, 8, 16, 32, 64]));
        // A limit that is not a power of two is still tried.
        assert_eq!(search_with(100, 10), (10, vec![1, 2, 4, 8, 9, 10]));
    }
}
