//! [`SsdLiteDetector`]: the SSDLite model with its pre- and post-processing.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::labels::coco91_label;
use crate::models::ssdlite::SsdLite;
use crate::models::Weights;
use crate::postprocess::{decode_ssd_box, non_max_suppression, Candidate, Suppression};
use crate::preprocess::{planar_batch, ResizePlan};
use crate::{BoundingBox, Detection, Detector, ImageView, InferenceError, Precision};

/// When a detection is reported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Minimum class probability.
    pub score: f32,
    /// Boxes overlapping a better one by more than this are dropped.
    pub iou: f32,
    /// At most this many detections per image.
    pub max_detections: usize,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            score: 0.3,
            iou: 0.5,
            max_detections: 50,
        }
    }
}

/// SSDLite-MobileNetV2 trained on COCO: one box and one best class per anchor.
pub struct SsdLiteDetector {
    name: String,
    model: SsdLite,
    anchors: Vec<[f32; 4]>,
    box_scales: [f32; 4],
    input_size: usize,
    pixel_scale: f32,
    pixel_offset: f32,
    device: Device,
    /// The model's weights and activations.
    dtype: DType,
    pub thresholds: Thresholds,
}

impl SsdLiteDetector {
    /// Loads a safetensors file written by the importer.
    pub fn load(path: &Path, name: &str, device: &Device) -> Result<Self, InferenceError> {
        Self::from_weights(&Weights::load(path, device)?, name, device, Precision::F32)
    }

    /// Loads in `precision` (weights converted once, at load).
    pub fn load_as(
        path: &Path,
        name: &str,
        device: &Device,
        precision: Precision,
    ) -> Result<Self, InferenceError> {
        let w = Weights::load(path, device)?.to_dtype(precision.dtype())?;
        Self::from_weights(&w, name, device, precision)
    }

    /// Builds the detector; it computes in the dtype of the weights, with
    /// 1x1 layers in int8 where `precision` is `Int8` (weights in f32).
    pub fn from_weights(
        w: &Weights,
        name: &str,
        device: &Device,
        precision: Precision,
    ) -> Result<Self, InferenceError> {
        let model = SsdLite::load(w, precision == Precision::Int8)?;
        let dtype = w.get("anchors")?.dtype();
        let anchors: Vec<[f32; 4]> = w
            .get_vec("anchors")?
            .chunks_exact(4)
            .map(|a| [a[0], a[1], a[2], a[3]])
            .collect();
        let (Ok([s0, s1, s2, s3]), Ok([size, pixel_scale, pixel_offset])) = (
            <[f32; 4]>::try_from(w.get_vec("box_coder.scales")?),
            <[f32; 3]>::try_from(w.get_vec("input.size_scale_offset")?),
        ) else {
            return Err(w.format_error(
                "box_coder.scales must hold 4 numbers and input.size_scale_offset 3".into(),
            ));
        };
        if !(1.0..=8192.0).contains(&size) {
            return Err(w.format_error(format!("input size {size} is not a size")));
        }
        let detector = Self {
            name: name.to_string(),
            model,
            anchors,
            box_scales: [s0, s1, s2, s3],
            input_size: size as usize,
            pixel_scale,
            pixel_offset,
            device: device.clone(),
            dtype,
            thresholds: Thresholds::default(),
        };
        detector.check_anchors(w)?;
        Ok(detector)
    }

    /// Runs the network once on a blank input: its heads must give one box
    /// and one row of classes per anchor, else every frame would fail (or
    /// read past the anchors) later, far from the file that is wrong.
    fn check_anchors(&self, w: &Weights) -> Result<(), InferenceError> {
        let s = self.input_size;
        let blank = Tensor::zeros((1, 3, s, s), self.dtype, &self.device)?;
        let (codes, logits) = self.model.forward(&blank)?;
        let anchors = self.anchors.len();
        let fits = anchors > 0
            && codes.elem_count() == anchors * 4
            && logits.elem_count().is_multiple_of(anchors)
            && logits.elem_count() / anchors >= 2;
        if !fits {
            return Err(w.format_error(format!(
                "{anchors} anchors, but the heads give {} box values and {} class scores",
                codes.elem_count(),
                logits.elem_count()
            )));
        }
        Ok(())
    }

    /// Side of the square model input, in pixels.
    pub fn input_size(&self) -> usize {
        self.input_size
    }

    /// Resizes and normalises every image into one `[N, 3, S, S]` batch.
    fn preprocess(&self, images: &[ImageView<'_>]) -> Result<Tensor, InferenceError> {
        let s = self.input_size;
        let plans: Vec<ResizePlan> = images
            .iter()
            .map(|img| ResizePlan::tensorflow(img, s, s, self.pixel_scale, self.pixel_offset))
            .collect();
        Ok(planar_batch(
            images,
            &plans,
            (s, s),
            &self.device,
            self.dtype,
        )?)
    }

    /// Best class per anchor, decoded boxes, threshold and NMS for one image.
    fn postprocess(&self, codes: &[f32], logits: &[f32], image: &ImageView<'_>) -> Vec<Detection> {
        let classes = logits.len() / self.anchors.len();
        // Sigmoid is monotonic: pick the best logit, then convert only that one.
        let min_logit = (self.thresholds.score / (1.0 - self.thresholds.score)).ln();
        let candidates = self
            .anchors
            .iter()
            .enumerate()
            .filter_map(|(a, anchor)| {
                let row = &logits[a * classes..(a + 1) * classes];
                let (best, &logit) = row
                    .iter()
                    .enumerate()
                    .skip(1) // column 0 is background
                    .max_by(|x, y| x.1.total_cmp(y.1))?;
                if logit < min_logit {
                    return None;
                }
                let code = [
                    codes[a * 4],
                    codes[a * 4 + 1],
                    codes[a * 4 + 2],
                    codes[a * 4 + 3],
                ];
                Some(Candidate {
                    class: best as u32,
                    score: 1.0 / (1.0 + (-logit).exp()),
                    bbox: decode_ssd_box(*anchor, code, self.box_scales),
                })
            })
            .filter(|c| c.score >= self.thresholds.score)
            .collect();
        let (w, h) = (image.width as f32, image.height as f32);
        non_max_suppression(
            candidates,
            self.thresholds.iou,
            self.thresholds.max_detections,
            Suppression::AcrossClasses,
        )
        .into_iter()
        .filter_map(|c| {
            let label = coco91_label(c.class)?;
            let b = c.bbox;
            Some(Detection {
                label: label.to_string(),
                score: c.score,
                bbox: BoundingBox {
                    x0: (b.x0 * w).clamp(0.0, w),
                    y0: (b.y0 * h).clamp(0.0, h),
                    x1: (b.x1 * w).clamp(0.0, w),
                    y1: (b.y1 * h).clamp(0.0, h),
                },
            })
        })
        .collect()
    }
}

impl Detector for SsdLiteDetector {
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
        let input = self.preprocess(images)?;
        let (codes, logits) = self.model.forward(&input)?;
        let codes = codes
            .flatten_all()?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?;
        let logits = logits
            .flatten_all()?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?;
        let per_codes = codes.len() / images.len();
        let per_logits = logits.len() / images.len();
        Ok(images
            .iter()
            .enumerate()
            .map(|(i, img)| {
                self.postprocess(
                    &codes[i * per_codes..(i + 1) * per_codes],
                    &logits[i * per_logits..(i + 1) * per_logits],
                    img,
                )
            })
            .collect())
    }
}
