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
    bf16_on_gpu, cuda_built_for, gpu_precision_unsupported, select_device, Precision,
};
pub use registry::{ModelFiles, ModelRegistry, DEFAULT_MODEL};
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
    #[error("device {spec:?}: {reason}")]
    Device { spec: String, reason: String },
}

/// A packed RGB24 image borrowed from its owner (a decoded frame, a photo).
#[derive(Debug, Clone, Copy)]
pub struct ImageView<'a> {
    pub width: usize,
    pub height: usize,
    /// `height` rows of `width * 3` bytes, R G B.
    pub rgb: &'a [u8],
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
        Ok(Self { width, height, rgb })
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
