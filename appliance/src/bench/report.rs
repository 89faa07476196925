//! What `vigil bench` prints: the machine, the settings, one table row per
//! trial, the anchors and their ratios; the same as JSON for scripts.

use serde::Serialize;

use super::anchors::{DecodeAlone, ModelAlone};
use super::trial::Trial;
use super::Settings;

/// The box the figures belong to.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub os: String,
    pub vigil: String,
}

impl Machine {
    pub fn this() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
        let field = |text: &str, key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| {
                    v.trim_start_matches([' ', '\t', ':', '='])
                        .trim_matches('"')
                })
                .unwrap_or("unknown")
                .trim()
                .to_string()
        };
        let mem_kib: f64 = field(&meminfo, "MemTotal")
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap_or(0.0);
        Self {
            cpu: field(&cpuinfo, "model name"),
            cores: super::trial::cores(),
            memory_gib: (mem_kib / (1 << 20) as f64 * 10.0).round() / 10.0,
            os: field(&os, "PRETTY_NAME"),
            vigil: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// Everything one `vigil bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub settings: Settings,
    pub clips: Vec<String>,
    pub model_alone: Option<ModelAlone>,
    pub decode_alone: Option<DecodeAlone>,
    pub trials: Vec<Trial>,
    /// With `--max-cameras`: the most cameras held in real time.
    pub max_cameras: Option<usize>,
}

impl Report {
    pub fn text(&self) -> String {
        let m = &self.machine;
        let s = &self.settings;
        let mut out = format!(
            "machine: {} ({} cores, {} GiB), {}\n\
             cameras: {} at detect_fps {} ({}), decode {}; model {} {} on {}, batch <= {}\n\
             window: {} s after {} s warm-up\n\n",
            m.cpu,
            m.cores,
            m.memory_gib,
            m.os,
            self.clips.join(" + "),
            s.detect_fps,
            if s.realtime {
                "paced at real time"
            } else {
                "as fast as possible"
            },
            format!("{:?}", s.hwaccel).to_lowercase(),
            s.model,
            match s.int8_kernel {
                Some(kernel) => format!("int8 ({kernel} kernel)"),
                None => format!("{:?}", s.precision).to_lowercase(),
            },
            s.device,
            s.max_batch,
            s.duration_seconds,
            s.warmup_seconds,
        );
        out.push_str(
            "cameras  decoded/s  analysed/s  expected/s  dropped  batch  ms/batch  \
             p50 ms  p95 ms  p99 ms  CPU %  peak MiB  held\n",
        );
        let mut trials: Vec<&Trial> = self.trials.iter().collect();
        trials.sort_by_key(|t| t.cameras);
        for t in trials {
            out.push_str(&format!(
                "{:>7}  {:>9.1}  {:>10.1}  {:>10}  {:>7}  {:>5.1}  {:>8.1}  {:>6}  {:>6}  {:>6}  {:>5.1}  {:>8.0}  {}\n",
                t.cameras,
                t.decoded_fps,
                t.analysed_fps,
                t.expected_fps.map_or("-".into(), |e| format!("{e:.1}")),
                t.frames_dropped,
                t.mean_batch,
                t.ms_per_batch,
                t.latency.p50_ms,
                t.latency.p95_ms,
                t.latency.p99_ms,
                t.cpu_percent,
                t.peak_rss_mib,
                match t.held {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "-",
                }
            ));
        }
        out.push('\n');
        for t in &self.trials {
            if let Some(line) = steadiness(t) {
                out.push_str(&line);
            }
        }
        if let Some(a) = &self.model_alone {
            out.push_str(&format!(
                "anchor, model alone: {:.1} frames/s in batches of {} ({:.1} ms each) = {:.1} \
                 cameras at detect_fps {} if decoding, tracking and storage were free\n",
                a.frames_per_second,
                a.batch,
                a.ms_per_batch,
                a.frames_per_second / s.detect_fps,
                s.detect_fps
            ));
            if !s.realtime {
                if let Some(t) = self.trials.iter().max_by_key(|t| t.cameras) {
                    out.push_str(&format!(
                        "  whole pipeline / model alone: {:.2}x\n",
                        t.analysed_fps / a.frames_per_second
                    ));
                }
            }
        }
        if let Some(d) = &self.decode_alone {
            out.push_str(&format!(
                "anchor, decode alone ({}, {} frames): Vigil {:.0} frames/s",
                d.clip, d.frames, d.vigil_fps
            ));
            match d.ffmpeg_cli_fps {
                Some(f) => out.push_str(&format!(
                    ", ffmpeg CLI {f:.0} frames/s: {:.2}x\n",
                    d.vigil_fps / f
                )),
                None => out.push_str(" (no ffmpeg CLI here to compare with)\n"),
            }
        }
        if let Some(n) = self.max_cameras {
            out.push_str(&format!(
                "\nmost cameras held in real time: {n} (every sampled frame analysed, none dropped)\n"
            ));
        }
        out
    }
}

/// Memory and queues through a trial's window, when it has a timeline: the
/// soak's evidence that nothing grows with time.
fn steadiness(t: &Trial) -> Option<String> {
    let (first, last) = (t.timeline.first()?, t.timeline.last()?);
    if t.timeline.len() < 2 {
        return None;
    }
    let max =
        |f: fn(&super::trial::Sample) -> f64| t.timeline.iter().map(f).fold(f64::MIN, f64::max);
    Some(format!(
        "{} cameras over {} samples: memory {:.0} MiB at {:.0} s, {:.0} MiB at {:.0} s, \
         at most {:.0} MiB; queued frames at most {:.0}; rows awaiting commit at most {:.0}\n",
        t.cameras,
        t.timeline.len(),
        first.rss_mib,
        first.at_seconds,
        last.rss_mib,
        last.at_seconds,
        max(|s| s.rss_mib),
        max(|s| s.queued_frames as f64),
        max(|s| s.pending_rows as f64),
    ))
}
