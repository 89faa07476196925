//! [`YoloDetector`]: any YOLO-family network whose output is one row per
//! candidate box, `(cx, cy, w, h, class scores...)` in input pixels — darknet
//! YOLOv3/v4 and Ultralytics YOLOv8/11 alike.

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use crate::detector::Thresholds;
use crate::postprocess::{non_max_suppression, Candidate, Suppression};
use crate::preprocess::{planar_batch, Fit, Placement, ResizePlan};
use crate::{BoundingBox, Detection, Detector, ImageView, InferenceError};

/// A network that maps `[N, 3, H, W]` RGB in 0..1 to `[N, boxes, 4 + classes]`.
pub trait YoloNetwork: Send + Sync {
    fn forward(&self, input: &Tensor) -> candle_core::Result<Tensor>;
}

/// What a YOLO model needs around its network.
pub struct YoloSpec {
    /// Model input width and height in pixels.
    pub input: (usize, usize),
    pub fit: Fit,
    /// Class names, index = the network's class column.
    pub labels: Vec<String>,
    pub dtype: DType,
    /// Whether boxes of different classes suppress each other, as this
    /// family's reference runtime does.
    pub suppression: Suppression,
}

/// A YOLO network with its pre- and post-processing.
pub struct YoloDetector {
    name: String,
    network: Box<dyn YoloNetwork>,
    spec: YoloSpec,
    device: Device,
    pub thresholds: Thresholds,
}

impl YoloDetector {
    pub fn new(name: &str, network: Box<dyn YoloNetwork>, spec: YoloSpec, device: &Device) -> Self {
        Self {
            name: name.to_string(),
            network,
            spec,
            device: device.clone(),
            thresholds: Thresholds {
                score: 0.3,
                iou: 0.45,
                max_detections: 100,
            },
        }
    }

    pub fn input_size(&self) -> (usize, usize) {
        self.spec.input
    }

    /// Fits and normalises every image into one `[N, 3, H, W]` batch.
    pub fn preprocess(
        &self,
        images: &[ImageView<'_>],
    ) -> Result<(Tensor, Vec<Placement>), InferenceError> {
        let (w, h) = self.spec.input;
        let (plans, placements): (Vec<_>, Vec<_>) = images
            .iter()
            .map(|img| ResizePlan::fit(img, w, h, self.spec.fit, 1.0 / 255.0))
            .unzip();
        let tensor = planar_batch(images, &plans, (w, h), &self.device, self.spec.dtype)?;
        Ok((tensor, placements))
    }

    /// The network's raw rows for a prepared batch, as f32 on the host.
    pub fn raw_rows(&self, input: &Tensor) -> Result<Tensor, InferenceError> {
        Ok(self.network.forward(input)?.to_dtype(DType::F32)?)
    }

    /// Best class per row, threshold, back to image pixels, NMS.
    fn postprocess(
        &self,
        rows: &[f32],
        width: usize,
        placement: &Placement,
        image: &ImageView<'_>,
    ) -> Vec<Detection> {
        let classes = width - 4;
        let candidates = rows
            .chunks_exact(width)
            .filter_map(|row| {
                let (best, &score) = row[4..]
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))?;
                if score.is_nan() || score < self.thresholds.score || best >= classes {
                    return None;
                }
                let (cx, cy, w, h) = (row[0], row[1], row[2], row[3]);
                let (x0, y0) = placement.to_image(cx - w / 2.0, cy - h / 2.0);
                let (x1, y1) = placement.to_image(cx + w / 2.0, cy + h / 2.0);
                let (iw, ih) = (image.width as f32, image.height as f32);
                Some(Candidate {
                    class: best as u32,
                    score,
                    bbox: BoundingBox {
                        x0: x0.clamp(0.0, iw),
                        y0: y0.clamp(0.0, ih),
                        x1: x1.clamp(0.0, iw),
                        y1: y1.clamp(0.0, ih),
                    },
                })
            })
            .collect();
        non_max_suppression(
            candidates,
            self.thresholds.iou,
            self.thresholds.max_detections,
            self.spec.suppression,
        )
        .into_iter()
        .map(|c| Detection {
            label: self
                .spec
                .labels
                .get(c.class as usize)
                .cloned()
                .unwrap_or_else(|| format!("class {}", c.class)),
            score: c.score,
            bbox: c.bbox,
        })
        .collect()
    }
}

impl Detector for YoloDetector {
    fn name(&self) -> &str {
        &self.name
    }

    fn set_score_threshold(&mut self, score: f32) {
        self.thresholds.score = score;
    }

    fn detect(&self, images: &[ImageView<'_>]) -> Result<Vec<Vec<Detection>>, InferenceError> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let (input, placements) = self.preprocess(images)?;
        let rows = self.raw_rows(&input)?;
        let (_, boxes, width) = rows.dims3()?;
        let rows = rows.flatten_all()?.to_vec1::<f32>()?;
        let per_image = boxes * width;
        Ok(images
            .par_iter()
            .zip(placements.par_iter())
            .enumerate()
            .map(|(i, (img, placement))| {
                self.postprocess(
                    &rows[i * per_image..(i + 1) * per_image],
                    width,
                    placement,
                    img,
                )
            })
            .collect())
    }
}
