//! SSDLite with a MobileNetV2 backbone (Sandler et al. 2018), as the
//! TensorFlow Object Detection API builds it: 17 inverted residual blocks,
//! four extra stride-2 layers, and six box predictors made of a depthwise
//! 3x3 and a pointwise 1x1 convolution each.
//!
//! Tensor names (all convolutions have batch norm folded in):
//! `backbone.stem`, `backbone.block{i}.{expand,depthwise,project}`,
//! `backbone.last`, `extra{k}.{reduce,depthwise,expand}`,
//! `head{k}.{box,class}.{depthwise,pointwise}`, plus the constants
//! `anchors` `[A, 4]` (ymin, xmin, ymax, xmax), `box_coder.scales` `[4]` and
//! `input.size_scale_offset` `[3]` (side, pixel scale, pixel offset).

use candle_core::{Module, Tensor};

use super::layers::{Activation, Conv, Depthwise, Pointwise};
use super::Weights;
use crate::InferenceError;

/// Stride of each inverted residual block of MobileNetV2.
pub const BLOCK_STRIDES: [usize; 17] = [1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1];
/// The block whose expansion output feeds the first predictor (stride 16).
pub const FIRST_HEAD_BLOCK: usize = 13;
/// Extra feature layers after the backbone.
pub const EXTRA_LAYERS: usize = 4;
/// Box predictors: one on block 13's expansion, one on the last backbone
/// layer, one per extra layer.
pub const HEADS: usize = 2 + EXTRA_LAYERS;

struct InvertedResidual {
    expand: Option<Pointwise>,
    depthwise: Depthwise,
    project: Pointwise,
    residual: bool,
}

impl InvertedResidual {
    fn load(
        w: &Weights,
        index: usize,
        in_channels: usize,
        int8: bool,
    ) -> Result<Self, InferenceError> {
        let p = format!("backbone.block{index}");
        let stride = BLOCK_STRIDES[index];
        // The first block works on the stem's 32 channels directly.
        let expand = if index == 0 {
            None
        } else {
            Some(Pointwise::load(
                w,
                &format!("{p}.expand"),
                Activation::Relu6,
                int8,
            )?)
        };
        let depthwise = Depthwise::load(w, &format!("{p}.depthwise"), stride, Activation::Relu6)?;
        let project = Pointwise::load(w, &format!("{p}.project"), Activation::None, int8)?;
        let residual = stride == 1 && project.out_channels() == in_channels;
        Ok(Self {
            expand,
            depthwise,
            project,
            residual,
        })
    }

    /// Returns the block output and its expansion output (a predictor's input).
    fn forward(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let expanded = match &self.expand {
            Some(e) => e.forward(x)?,
            None => x.clone(),
        };
        let y = self.project.forward(&self.depthwise.forward(&expanded)?)?;
        let y = if self.residual { (y + x)? } else { y };
        Ok((y, expanded))
    }
}

/// Depthwise 3x3 + pointwise 1x1 predicting `per_anchor` values per anchor.
struct Predictor {
    depthwise: Depthwise,
    pointwise: Pointwise,
    per_anchor: usize,
}

impl Predictor {
    fn load(w: &Weights, prefix: &str, per_anchor: usize) -> Result<Self, InferenceError> {
        Ok(Self {
            depthwise: Depthwise::load(w, &format!("{prefix}.depthwise"), 1, Activation::Relu6)?,
            // f32: the scores and box offsets come straight out of it.
            pointwise: Pointwise::load(w, &format!("{prefix}.pointwise"), Activation::None, false)?,
            per_anchor,
        })
    }

    /// `[N, C, H, W]` -> `[N, H * W * anchors, per_anchor]`, anchors ordered
    /// row by row, then anchor by anchor within a cell, as TensorFlow lays them out.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.pointwise.forward(&self.depthwise.forward(x)?)?;
        let (n, c, h, w) = y.dims4()?;
        let anchors = c / self.per_anchor;
        y.permute((0, 2, 3, 1))?
            .contiguous()?
            .reshape((n, h * w * anchors, self.per_anchor))
    }
}

struct Extra {
    reduce: Pointwise,
    depthwise: Depthwise,
    expand: Pointwise,
}

/// SSDLite-MobileNetV2: input `[N, 3, S, S]` normalised pixels; output box
/// encodings `[N, A, 4]` and class logits `[N, A, classes + 1]` (column 0 is
/// background).
pub struct SsdLite {
    stem: Conv,
    blocks: Vec<InvertedResidual>,
    last: Pointwise,
    extras: Vec<Extra>,
    box_heads: Vec<Predictor>,
    class_heads: Vec<Predictor>,
    num_classes_with_background: usize,
}

impl SsdLite {
    /// `int8`: run the backbone's and extra layers' 1x1 convolutions with
    /// enough input channels in int8 (`Pointwise::Int8`); the predictors
    /// stay in the weights' type.
    pub fn load(w: &Weights, int8: bool) -> Result<Self, InferenceError> {
        let stem = Conv::load(w, "backbone.stem", 2, Activation::Relu6)?;
        let mut channels = w.get("backbone.stem.weight")?.dim(0)?;
        let mut blocks = Vec::with_capacity(BLOCK_STRIDES.len());
        for i in 0..BLOCK_STRIDES.len() {
            let block = InvertedResidual::load(w, i, channels, int8)?;
            channels = block.project.out_channels();
            blocks.push(block);
        }
        let last = Pointwise::load(w, "backbone.last", Activation::Relu6, int8)?;
        let extras = (0..EXTRA_LAYERS)
            .map(|k| {
                let p = format!("extra{k}");
                Ok(Extra {
                    reduce: Pointwise::load(w, &format!("{p}.reduce"), Activation::Relu6, int8)?,
                    depthwise: Depthwise::load(w, &format!("{p}.depthwise"), 2, Activation::Relu6)?,
                    expand: Pointwise::load(w, &format!("{p}.expand"), Activation::Relu6, int8)?,
                })
            })
            .collect::<Result<Vec<_>, InferenceError>>()?;
        let class_out = w.get("head0.class.pointwise.weight")?.dim(0)?;
        let box_out = w.get("head0.box.pointwise.weight")?.dim(0)?;
        let num_classes_with_background = class_out / (box_out / 4);
        let mut box_heads = Vec::with_capacity(HEADS);
        let mut class_heads = Vec::with_capacity(HEADS);
        for k in 0..HEADS {
            box_heads.push(Predictor::load(w, &format!("head{k}.box"), 4)?);
            class_heads.push(Predictor::load(
                w,
                &format!("head{k}.class"),
                num_classes_with_background,
            )?);
        }
        Ok(Self {
            stem,
            blocks,
            last,
            extras,
            box_heads,
            class_heads,
            num_classes_with_background,
        })
    }

    pub fn num_classes_with_background(&self) -> usize {
        self.num_classes_with_background
    }

    /// Runs the network; returns `(box_encodings, class_logits)`.
    pub fn forward(&self, input: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let mut features = Vec::with_capacity(HEADS);
        let mut x = self.stem.forward(input)?;
        for (i, block) in self.blocks.iter().enumerate() {
            let (y, expanded) = block.forward(&x)?;
            if i == FIRST_HEAD_BLOCK {
                features.push(expanded);
            }
            x = y;
        }
        x = self.last.forward(&x)?;
        features.push(x.clone());
        for extra in &self.extras {
            x = extra
                .expand
                .forward(&extra.depthwise.forward(&extra.reduce.forward(&x)?)?)?;
            features.push(x.clone());
        }
        let mut boxes = Vec::with_capacity(HEADS);
        let mut classes = Vec::with_capacity(HEADS);
        for (f, (bh, ch)) in features
            .iter()
            .zip(self.box_heads.iter().zip(&self.class_heads))
        {
            boxes.push(bh.forward(f)?);
            classes.push(ch.forward(f)?);
        }
        Ok((Tensor::cat(&boxes, 1)?, Tensor::cat(&classes, 1)?))
    }
}
