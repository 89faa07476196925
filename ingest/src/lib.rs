//! Camera ingest for Vigil: open a source with ffmpeg, decode, sample frames
//! at the detection rate and hand them on through a bounded queue.
//! Knows nothing of models, storage or HTTP.

pub mod clip;
mod decode;
#[cfg(target_arch = "x86_64")]
mod ffmpeg_log;
pub mod gpu_frame;
pub mod hwaccel;
mod input_options;
pub mod pacing;
pub mod queue;
pub mod source;
pub mod stats;
mod watchdog;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

pub use decode::{DecodeOptions, InputCounts, VideoInput, SKIP_NONREF_RATIO};
pub use gpu_frame::{DevicePlanes, GpuFrame};
pub use hwaccel::{DecoderKind, GpuTarget, HwAccel};
pub use input_options::InputOptions;
pub use queue::{frame_queue, FrameReceiver, FrameSender, QueueCloser, RecvError};
pub use source::{spawn_source, SourceConfig, SourceHandle, SourceUrl, Transport};
pub use stats::{SourceState, SourceStats, StatsSnapshot};

/// Errors from opening or decoding a source.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("cannot open {url}: {source}")]
    Open {
        url: String,
        #[source]
        source: ffmpeg_next::Error,
    },
    #[error("{url} has no video stream")]
    NoVideo { url: String },
    #[error("{url}: no decoder for codec {codec}")]
    NoDecoder { url: String, codec: String },
    #[error("{url}: decoding failed: {source}")]
    Decode {
        url: String,
        #[source]
        source: ffmpeg_next::Error,
    },
    /// Reading the input failed (the network, the server): not the decoder's fault.
    #[error("{url}: reading failed: {source}")]
    Read {
        url: String,
        #[source]
        source: ffmpeg_next::Error,
    },
    #[error("{url} ended without a frame that could be decoded")]
    NoFrames { url: String },
    #[error("{url}: no data for {seconds} s; reconnecting")]
    Stalled { url: String, seconds: u64 },
    #[error("encoding {path}: {source}")]
    Encode {
        path: String,
        #[source]
        source: ffmpeg_next::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid source url {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("input option {name:?}: {reason}")]
    BadOption { name: String, reason: String },
    /// Options the camera sets that ffmpeg's input for it does not take
    /// (a typo, or a device option on a network camera).
    #[error("{url}: {format} takes no option {}", names.join(", "))]
    UnknownOptions {
        url: String,
        format: String,
        names: Vec<String>,
    },
}

impl IngestError {
    /// Whether the decoder itself failed, as opposed to the input (a dropped
    /// connection, a stall, a missing file): only then is a hardware decoder
    /// worth giving up for software.
    pub fn blames_decoder(&self) -> bool {
        matches!(self, IngestError::Decode { .. })
    }

    /// Whether the server answered and refused us (wrong credentials, no
    /// permission): retrying at once will not help and may lock us out.
    /// Also an input that refuses the camera's options: that is the
    /// configuration's fault and waits for it to change.
    pub fn is_refusal(&self) -> bool {
        use ffmpeg_next::Error as E;
        matches!(
            self,
            IngestError::Open {
                source: E::HttpUnauthorized | E::HttpForbidden,
                ..
            } | IngestError::UnknownOptions { .. }
        )
    }
}

/// One decoded, sampled video frame: packed RGB24, or NV12 left in GPU
/// memory for a model in the same CUDA context.
///
/// Two clocks, never mixed: `pts_us` is the stream's own timestamp
/// (microseconds from the stream start, continuing across file loops), and
/// `wall_time` is when this box decoded the frame.
#[derive(Debug, Clone)]
pub struct Frame {
    pub camera_id: Arc<str>,
    /// Counts sampled frames of this camera from 0.
    pub seq: u64,
    pub pts_us: i64,
    pub wall_time: SystemTime,
    /// The size the pipeline sees the frame at; boxes are in these pixels.
    pub width: u32,
    pub height: u32,
    pub pixels: Pixels,
}

/// Where a [`Frame`]'s picture is.
#[derive(Debug, Clone)]
pub enum Pixels {
    /// `height` rows of `width * 3` bytes, R G B.
    Rgb(Vec<u8>),
    /// In GPU memory, at the decoder's size (which may be larger).
    Gpu(Arc<GpuFrame>),
}

impl Frame {
    /// The picture as packed RGB24 (`height` rows of `width * 3` bytes),
    /// copied from the GPU if it is there.
    pub fn rgb(&self) -> Result<Cow<'_, [u8]>, IngestError> {
        match &self.pixels {
            Pixels::Rgb(rgb) => Ok(Cow::Borrowed(rgb)),
            Pixels::Gpu(frame) => frame.to_rgb().map(Cow::Owned),
        }
    }
}

/// Initialises ffmpeg once per process. Only its errors are logged, and
/// (on x86-64, where its argument lists are known) through our logs with
/// the camera's span, a few a minute per camera: see `ffmpeg_log`.
pub fn init() -> Result<(), ffmpeg_next::Error> {
    ffmpeg_next::init()?;
    ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Error);
    #[cfg(target_arch = "x86_64")]
    ffmpeg_log::install();
    Ok(())
}

/// The linked libavcodec's version, as `major.minor.micro`.
pub fn libavcodec_version() -> String {
    let v = ffmpeg_next::codec::version();
    format!("{}.{}.{}", v >> 16, (v >> 8) & 0xff, v & 0xff)
}

/// Decodes the first frame of a still image (JPEG, PNG, …) or video file to
/// packed RGB24: `(width, height, bytes)`. Photos go through the same ffmpeg
/// decoders as camera frames, so a model sees the same pixels either way.
pub fn decode_still(path: &std::path::Path) -> Result<(u32, u32, Vec<u8>), IngestError> {
    let url = SourceUrl::File {
        path: path.to_path_buf(),
        looping: false,
        realtime: false,
    };
    let mut input = decode::VideoInput::open(&url)?;
    match input.next_frame()? {
        Some(_) => input.convert_to_rgb(),
        None => Err(IngestError::NoVideo { url: url.shown() }),
    }
}
