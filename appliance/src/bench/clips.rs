//! What `vigil bench`'s cameras play: the built-in street and bikes clips,
//! and a 1080p30 camera stream made from the street clip on first use.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::ValueEnum;
use vigil_ingest::clip::{make_camera_clip, ClipSpec};
use vigil_ingest::{SourceUrl, VideoInput};

/// Which clips the simulated cameras play.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClipChoice {
    /// 1920x1080 H.264, 30 fps, 4 Mbit/s, no B-frames (made from the street clip).
    #[value(name = "1080p")]
    Street1080,
    /// The street clip as recorded: 768x576, 10 fps.
    Street,
    /// The bikes clip: 640x272, 25 fps.
    Bikes,
    /// Cameras take 1080p, street and bikes in turn.
    Mix,
}

/// Length of the made 1080p clip; cameras loop it.
const CAMERA_CLIP_SECONDS: u32 = 30;

#[derive(Debug, Clone)]
pub struct Clip {
    pub name: &'static str,
    pub path: PathBuf,
    /// The stream's frame rate.
    pub fps: f64,
}

/// The clips for `choice`, written or made under `dir` once.
pub fn prepare(choice: ClipChoice, dir: &Path) -> anyhow::Result<Vec<Clip>> {
    let builtin = crate::demo::write_clips(dir)?;
    let path_of = |name: &str| {
        builtin
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p.clone())
            .expect("the demo clips include street and bikes")
    };
    let wanted: &[&'static str] = match choice {
        ClipChoice::Street1080 => &["1080p"],
        ClipChoice::Street => &["street"],
        ClipChoice::Bikes => &["bikes"],
        ClipChoice::Mix => &["1080p", "street", "bikes"],
    };
    wanted
        .iter()
        .map(|&name| {
            let path = match name {
                "1080p" => camera_1080p(&path_of("street"), dir)?,
                other => path_of(other),
            };
            let fps = frame_rate(&path)?;
            Ok(Clip { name, path, fps })
        })
        .collect()
}

fn camera_1080p(street: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    let out = dir.join("street_1080p30.mp4");
    if !out.exists() {
        eprintln!(
            "making a {CAMERA_CLIP_SECONDS} s 1080p30 H.264 camera clip from the street clip \
             (once; kept in {})",
            dir.display()
        );
        make_camera_clip(street, &out, ClipSpec::camera_1080p30(CAMERA_CLIP_SECONDS))
            .context("making the 1080p clip")?;
    }
    Ok(out)
}

fn frame_rate(path: &Path) -> anyhow::Result<f64> {
    let input = VideoInput::open(&file_url(path, false))
        .with_context(|| format!("opening {}", path.display()))?;
    Ok(1e6 / input.frame_duration_us() as f64)
}

/// A file source, looped, paced at its recorded speed or as fast as it decodes.
pub fn file_url(path: &Path, realtime: bool) -> SourceUrl {
    SourceUrl::File {
        path: path.to_path_buf(),
        looping: true,
        realtime,
    }
}
