//! Decoding speed through ingest's own code path (`VideoInput`), against the
//! ffmpeg CLI on the same file in the same run (the anchor).
//!
//! `cargo bench -p vigil-benches --bench decode` makes 720p and 1080p H.264
//! clips from the shared street clip under `target/bench-data/` (once, with
//! the ffmpeg CLI) and reports:
//! - decoded frames/s of one stream, ours vs `ffmpeg -benchmark -i X -f null -`;
//! - how many real-time 1080p30 cameras one core sustains at detect_fps 5
//!   (one decoding thread, every frame decoded, 1 in 6 converted to RGB);
//! - with `VIGIL_BENCH_HWACCEL=cuda` (or `vaapi`): the same decode on the
//!   device, one stream and N in parallel (`VIGIL_BENCH_STREAMS`, default
//!   1,4,8,16), frames left on the device except the sampled ones.
//!
//! `VIGIL_BENCH_CLIPS=dir` uses clips made elsewhere (a machine without the
//! ffmpeg CLI); the anchor is then skipped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use vigil_ingest::{DecodeOptions, DecoderKind, HwAccel, SourceUrl, VideoInput};

const CLIP_SECONDS: u32 = 20;
const CAMERA_FPS: f64 = 30.0;
const DETECT_FPS: f64 = 5.0;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-data/decode")
}

fn street_clip() -> PathBuf {
    std::env::var_os("VIGIL_TEST_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/assets"))
        .join("video/vtest.avi")
}

/// A `height`p 30 fps H.264 clip of the street scene, made once.
fn make_clip(dir: &Path, height: u32) -> PathBuf {
    let out = dir.join(format!("street_{height}p30.mp4"));
    if out.exists() {
        return out;
    }
    std::fs::create_dir_all(dir).unwrap();
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-stream_loop", "-1", "-i"])
        .arg(street_clip())
        .args([
            "-t",
            &CLIP_SECONDS.to_string(),
            "-vf",
            &format!("scale=-2:{height},fps=30"),
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            "23",
            "-pix_fmt",
            "yuv420p",
        ])
        .arg(&out)
        .status()
        .expect("the ffmpeg CLI makes the bench clips (make deps installs it)");
    assert!(status.success(), "ffmpeg failed making {}", out.display());
    out
}

fn open(path: &Path, decode: DecodeOptions) -> VideoInput {
    let url = SourceUrl::File {
        path: path.to_path_buf(),
        looping: false,
        realtime: false,
    };
    VideoInput::open_with(&url, decode).expect("open clip")
}

/// Decodes the whole clip; converts every `convert_every`-th frame to RGB
/// (0: none). Returns (frames, seconds, decoder).
fn decode_clip(path: &Path, decode: DecodeOptions, convert_every: u64) -> (u64, f64, DecoderKind) {
    let mut input = open(path, decode);
    let kind = input.decoder_kind();
    let started = Instant::now();
    let mut frames = 0u64;
    while input.next_frame().expect("decode").is_some() {
        if convert_every > 0 && frames.is_multiple_of(convert_every) {
            std::hint::black_box(input.convert_to_rgb().expect("rgb"));
        }
        frames += 1;
    }
    (frames, started.elapsed().as_secs_f64(), kind)
}

/// `ffmpeg -benchmark -i X -f null -`: frames/s from its own real time.
fn ffmpeg_cli_fps(path: &Path, frames: u64) -> Option<f64> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostats", "-benchmark", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stderr);
    let rtime: f64 = text
        .split("rtime=")
        .nth(1)?
        .split('s')
        .next()?
        .trim()
        .parse()
        .ok()?;
    Some(frames as f64 / rtime)
}

fn best_of<T>(runs: usize, mut f: impl FnMut() -> (u64, f64, T)) -> (u64, f64, T) {
    let mut best = f();
    for _ in 1..runs {
        let r = f();
        if r.1 < best.1 {
            best = r;
        }
    }
    best
}

fn software_vs_cli(clips: &[(u32, PathBuf)], with_anchor: bool) {
    println!("\n## One stream, software decode (best of 3)\n");
    println!("| clip | vigil frames/s | ffmpeg CLI frames/s | ratio |");
    println!("| --- | --- | --- | --- |");
    for (height, clip) in clips {
        let decode = DecodeOptions {
            hwaccel: HwAccel::None,
            threads: 0,
            ..Default::default()
        };
        let (frames, secs, _) = best_of(3, || decode_clip(clip, decode, 0));
        let ours = frames as f64 / secs;
        let cli = if with_anchor {
            (0..3)
                .filter_map(|_| ffmpeg_cli_fps(clip, frames))
                .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
        } else {
            None
        };
        match cli {
            Some(cli) => println!(
                "| {height}p30 H.264 | {ours:.0} | {cli:.0} | {:.2} |",
                ours / cli
            ),
            None => println!("| {height}p30 H.264 | {ours:.0} | not measured | |"),
        }
    }
}

fn cameras_per_core(clip: &Path) {
    let decode = DecodeOptions {
        hwaccel: HwAccel::None,
        threads: 1,
        ..Default::default()
    };
    let every = (CAMERA_FPS / DETECT_FPS).round() as u64;
    let (frames, secs, _) = best_of(3, || decode_clip(clip, decode, every));
    let fps = frames as f64 / secs;
    println!("\n## Real-time 1080p30 cameras per core (detect_fps {DETECT_FPS})\n");
    println!(
        "one decoding thread: {fps:.0} frames/s decoded with 1 in {every} converted to RGB \
         = **{:.1} cameras per core**",
        fps / CAMERA_FPS
    );
}

fn hardware(clips: &[(u32, PathBuf)], hwaccel: HwAccel) {
    let streams: Vec<usize> = std::env::var("VIGIL_BENCH_STREAMS")
        .unwrap_or_else(|_| "1,4,8,16".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let sampled = (CAMERA_FPS / DETECT_FPS).round() as u64;
    println!("\n## {hwaccel:?} decode through VideoInput\n");
    println!("| clip | streams | decoder | copied to host as RGB | aggregate frames/s | per stream | real-time 30 fps cameras |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (height, clip) in clips {
        for (&n, every) in streams.iter().flat_map(|n| [(n, 0), (n, sampled)]) {
            let decode = DecodeOptions {
                hwaccel,
                threads: 1,
                ..Default::default()
            };
            let started = Instant::now();
            let results: Vec<(u64, f64, DecoderKind)> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..n)
                    .map(|_| s.spawn(|| decode_clip(clip, decode, every)))
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let wall = started.elapsed().as_secs_f64();
            let frames: u64 = results.iter().map(|r| r.0).sum();
            let kind = results[0].2;
            let fps = frames as f64 / wall;
            let copied = if every == 0 {
                "none".to_string()
            } else {
                format!("1 in {every}")
            };
            println!(
                "| {height}p30 | {n} | {kind} | {copied} | {fps:.0} | {:.0} | {:.0} |",
                fps / n as f64,
                fps / CAMERA_FPS
            );
        }
    }
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    vigil_ingest::init().expect("ffmpeg");
    let (dir, with_anchor) = match std::env::var_os("VIGIL_BENCH_CLIPS") {
        Some(d) => (PathBuf::from(d), false),
        None => (data_dir(), true),
    };
    let clips: Vec<(u32, PathBuf)> = [720u32, 1080]
        .into_iter()
        .map(|h| {
            let path = dir.join(format!("street_{h}p30.mp4"));
            (
                h,
                if with_anchor {
                    make_clip(&dir, h)
                } else {
                    path
                },
            )
        })
        .collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "# Decode benchmark ({cores} cores, libavcodec {})",
        vigil_ingest::libavcodec_version()
    );
    match std::env::var("VIGIL_BENCH_HWACCEL").ok().as_deref() {
        Some("cuda") => hardware(&clips, HwAccel::Cuda),
        Some("vaapi") => hardware(&clips, HwAccel::Vaapi),
        _ => {}
    }
    software_vs_cli(&clips, with_anchor);
    cameras_per_core(&clips[1].1);
}
