//! Object detection for Vigil: model formats, architectures in candle,
//! pre- and post-processing. Knows nothing of cameras, storage or HTTP.
//!
//! The entry point is [`Detector`]: give it RGB images, get [`Detection`]s
//! with boxes in the images' own pixels.

pub mod convert;
pub mod darknet;
pub mod detector;
pub mod device;
pub mod labels;
pub mod memory;
pub mod metrics;
pub mod models;
pub mod ops;
pub mod postprocess;
pub mod preprocess;
pub mod registry;
pub mod tfjs;
pub mod ultralytics;
pub mod yolo;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use detector::SsdLiteDetector;
pub use device::{
    bf16_on_gpu, cuda_built_for, gpu_context, gpu_precision_unsupported, select_device, GpuContext,
    Precision,
};
pub use registry::{ModelFiles, ModelRegistry, DEFAULT_MODEL, INSTALLED_MODEL_DIR};
pub use yolo::YoloDetector;

/// Errors from loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    ModelFormat { path: PathBuf, reason: String },
    #[error("model {name:?} not found; looked in: {searched}")]
    ModelNotFound { name: String, searched: String },
    #[error("image is {width}x{height} but holds {len} bytes, not {expected} (packed RGB)")]
    BadImage {
        width: usize,
        height: usize,
        len: usize,
        expected: usize,
    },
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("GPU frame: {reason}")]
    BadGpuFrame { reason: String },
    #[error("device {spec:?}: {reason}")]
    Device { spec: String, reason: String },
}

/// An image borrowed from its owner (a decoded frame, a photo): packed RGB
/// in host memory, or an NV12 frame a hardware decoder left in GPU memory.
#[derive(Debug, Clone, Copy)]
pub struct ImageView<'a> {
    /// The size the image is seen at: detections come back in these pixels.
    pub width: usize,
    pub height: usize,
    pub pixels: Pixels<'a>,
}

/// Where an [`ImageView`]'s pixels are.
#[derive(Debug, Clone, Copy)]
pub enum Pixels<'a> {
    /// `height` rows of `width * 3` bytes, R G B.
    Rgb(&'a [u8]),
    /// A frame in GPU memory, at its own size (the view's size may be
    /// smaller: it is sampled accordingly).
    CudaNv12(CudaNv12),
}

/// An NV12 frame in GPU memory: a luma plane and an interleaved chroma
/// plane (U V) of half the height, each row `pitch` bytes apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaNv12 {
    /// The CUDA context (`CUcontext`) the planes belong to; a model runs
    /// only frames of its own context.
    pub context: usize,
    pub width: usize,
    pub height: usize,
    pub luma: u64,
    pub luma_pitch: usize,
    pub chroma: u64,
    pub chroma_pitch: usize,
    pub color: YuvColor,
}

/// How a frame's YUV values become RGB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct YuvColor {
    /// BT.709 (HD) rather than BT.601 (SD, and what unlabelled streams get).
    pub bt709: bool,
    /// Values span 0-255 rather than video's 16-235.
    pub full_range: bool,
}

impl<'a> ImageView<'a> {
    /// Checks that `rgb` holds exactly one packed RGB image of this size.
    pub fn new(width: usize, height: usize, rgb: &'a [u8]) -> Result<Self, InferenceError> {
        let expected = width * height * 3;
        if rgb.len() != expected || width == 0 || height == 0 {
            return Err(InferenceError::BadImage {
                width,
                height,
                len: rgb.len(),
                expected,
            });
        }
        Ok(Self {
            width,
            height,
            pixels: Pixels::Rgb(rgb),
        })
    }

    /// `frame`, seen at `width` x `height` (its own size or smaller).
    ///
    /// # Safety
    /// The planes must stay valid GPU memory of `frame.context`, as wide,
    /// high and pitched as `frame` says, until the detection that reads
    /// them has returned.
    pub unsafe fn cuda_nv12(
        width: usize,
        height: usize,
        frame: CudaNv12,
    ) -> Result<Self, InferenceError> {
        let fits = width > 0
            && height > 0
            && width <= frame.width
            && height <= frame.height
            && frame.luma_pitch >= frame.width
            && frame.chroma_pitch >= frame.width.next_multiple_of(2);
        if !fits {
            return Err(InferenceError::BadGpuFrame {
                reason: format!(
                    "a {}x{} view of a {}x{} NV12 frame with pitches {} and {}",
                    width, height, frame.width, frame.height, frame.luma_pitch, frame.chroma_pitch
                ),
            });
        }
        Ok(Self {
            width,
            height,
            pixels: Pixels::CudaNv12(frame),
        })
    }

    /// The packed RGB bytes, for an image in host memory.
    pub fn rgb(&self) -> Option<&'a [u8]> {
        match self.pixels {
            Pixels::Rgb(rgb) => Some(rgb),
            Pixels::CudaNv12(_) => None,
        }
    }
}

/// An axis-aligned box in source-image pixels, corners (x0, y0) top-left and
/// (x1, y1) bottom-right. Serialised as `[x0, y0, x1, y1]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(from = "[f32; 4]", into = "[f32; 4]")]
pub struct BoundingBox {
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
}

impl BoundingBox {
    pub fn area(&self) -> f32 {
        (self.x1 - self.x0).max(0.0) * (self.y1 - self.y0).max(0.0)
    }

    /// Intersection over union; 0 for boxes that do not overlap.
    pub fn iou(&self, other: &Self) -> f32 {
        let ix = (self.x1.min(other.x1) - self.x0.max(other.x0)).max(0.0);
        let iy = (self.y1.min(other.y1) - self.y0.max(other.y0)).max(0.0);
        let inter = ix * iy;
        let union = self.area() + other.area() - inter;
        if union <= 0.0 {
            0.0
        } else {
            inter / union
        }
    }
}

impl From<[f32; 4]> for BoundingBox {
    fn from([x0, y0, x1, y1]: [f32; 4]) -> Self {
        Self { x0, y0, x1, y1 }
    }
}

impl From<BoundingBox> for [f32; 4] {
    fn from(b: BoundingBox) -> Self {
        [b.x0, b.y0, b.x1, b.y1]
    }
}

/// One object found in one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub label: String,
    pub score: f32,
    #[serde(rename = "box")]
    pub bbox: BoundingBox,
}

/// A loaded object detector.
pub trait Detector: Send {
    /// Short name of the model, as the registry knows it.
    fn name(&self) -> &str;

    /// Reports only detections scoring at least `score` (0-1).
    fn set_score_threshold(&mut self, score: f32);

    /// Detects objects in each image; one result list per image, in order.
    /// All images go through the model as one batch.
    fn detect(&self, images: &[ImageView<'_>]) -> Result<Vec<Vec<Detection>>, InferenceError>;
}
