//! The building blocks of Ultralytics YOLOv8 and YOLO11, loaded from the
//! tensor names of an Ultralytics state dict. Channel counts and repeat
//! counts are read off the tensors, so every size (n, s, m, l, x) loads.

use candle_core::{DType, Module, Tensor, D};

use crate::models::layers::{FusedConv, Pointwise};
use crate::models::Weights;
use crate::ops::{depthwise_conv2d, max_pool, sigmoid_tensor, Activation, MaxPool, Padding};
use crate::InferenceError;
use crate::Precision;

/// Ultralytics trains with `BatchNorm2d(eps=1e-3)`.
const BN_EPSILON: f32 = 1e-3;

/// Per-channel weight factors and biases that fold `{prefix}.bn` into the conv.
fn fold_batch_norm(w: &Weights, prefix: &str) -> Result<(Vec<f32>, Vec<f32>), InferenceError> {
    let gamma = w.get_vec(&format!("{prefix}.bn.weight"))?;
    let beta = w.get_vec(&format!("{prefix}.bn.bias"))?;
    let mean = w.get_vec(&format!("{prefix}.bn.running_mean"))?;
    let var = w.get_vec(&format!("{prefix}.bn.running_var"))?;
    let factors: Vec<f32> = gamma
        .iter()
        .zip(&var)
        .map(|(g, v)| g / (v + BN_EPSILON).sqrt())
        .collect();
    let bias = beta
        .iter()
        .zip(&mean)
        .zip(&factors)
        .map(|((b, m), f)| b - m * f)
        .collect();
    Ok((factors, bias))
}

/// `Conv`: convolution, batch norm and SiLU, with the batch norm folded in
/// at load. Grouped only as depthwise (`DWConv`).
pub enum ConvBn {
    Dense(FusedConv),
    /// A `[C, 1, K, K]` kernel: one filter per channel.
    Depthwise {
        weight: Tensor,
        bias: Tensor,
        stride: usize,
        padding: usize,
        act: Activation,
    },
}

impl ConvBn {
    pub fn load(
        w: &Weights,
        prefix: &str,
        stride: usize,
        act: Activation,
        precision: Precision,
    ) -> Result<Self, InferenceError> {
        let weight = w.get(&format!("{prefix}.conv.weight"))?;
        let out = weight.dim(0)?;
        let (factors, bias) = if w.has(&format!("{prefix}.bn.weight")) {
            fold_batch_norm(w, prefix)?
        } else {
            // Saved after `model.fuse()`: batch norm already in the conv.
            (vec![1.0; out], w.get_vec(&format!("{prefix}.conv.bias"))?)
        };
        let (_, per_group, k, _) = weight.dims4()?;
        let device = weight.device().clone();
        let factors = Tensor::from_vec(factors, (out, 1, 1, 1), &device)?;
        let weight = weight
            .to_dtype(DType::F32)?
            .broadcast_mul(&factors)?
            .to_dtype(precision.dtype())?;
        let bias = Tensor::from_vec(bias, out, &device)?.to_dtype(precision.dtype())?;
        let padding = k / 2;
        // A [C, 1, k, k] kernel on more than one channel is DWConv.
        if per_group == 1 && out > 1 {
            return Ok(Self::Depthwise {
                weight,
                bias,
                stride,
                padding,
                act,
            });
        }
        let int8 = precision == Precision::Int8;
        Ok(Self::Dense(FusedConv::new(
            weight, bias, stride, padding, act, int8,
        )?))
    }

    pub fn out_channels(&self) -> usize {
        match self {
            Self::Dense(conv) => conv.out_channels(),
            Self::Depthwise { weight, .. } => weight.dims()[0],
        }
    }
}

impl Module for ConvBn {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Dense(conv) => conv.forward(x),
            Self::Depthwise {
                weight,
                bias,
                stride,
                padding,
                act,
            } => {
                let p = *padding;
                let pad = Padding {
                    top: p,
                    bottom: p,
                    left: p,
                    right: p,
                };
                depthwise_conv2d(x, weight, bias, *stride, pad, *act)
            }
        }
    }
}

fn silu(w: &Weights, prefix: &str, precision: Precision) -> Result<ConvBn, InferenceError> {
    ConvBn::load(w, prefix, 1, Activation::Silu, precision)
}

fn linear(w: &Weights, prefix: &str, precision: Precision) -> Result<ConvBn, InferenceError> {
    ConvBn::load(w, prefix, 1, Activation::None, precision)
}

/// How many `{prefix}.{i}...` entries exist, given a suffix every one has.
fn count(w: &Weights, prefix: &str, suffix: &str) -> usize {
    (0..)
        .take_while(|i| w.has(&format!("{prefix}.{i}{suffix}")))
        .count()
}

/// `Bottleneck`: two convolutions, plus the input when shapes allow.
pub struct Bottleneck {
    cv1: ConvBn,
    cv2: ConvBn,
    add: bool,
}

impl Bottleneck {
    fn load(
        w: &Weights,
        p: &str,
        shortcut: bool,
        precision: Precision,
    ) -> Result<Self, InferenceError> {
        let cv1 = silu(w, &format!("{p}.cv1"), precision)?;
        let cv2 = silu(w, &format!("{p}.cv2"), precision)?;
        let c_in = w.get(&format!("{p}.cv1.conv.weight"))?.dim(1)?;
        let add = shortcut && c_in == cv2.out_channels();
        Ok(Self { cv1, cv2, add })
    }
}

impl Module for Bottleneck {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.cv2.forward(&self.cv1.forward(x)?)?;
        if self.add {
            x + y
        } else {
            Ok(y)
        }
    }
}

/// `C3k`: the CSP block with three convolutions YOLO11 nests in `C3k2`.
pub struct C3k {
    cv1: ConvBn,
    cv2: ConvBn,
    cv3: ConvBn,
    m: Vec<Bottleneck>,
}

impl C3k {
    fn load(
        w: &Weights,
        p: &str,
        shortcut: bool,
        precision: Precision,
    ) -> Result<Self, InferenceError> {
        let m = (0..count(w, &format!("{p}.m"), ".cv1.conv.weight"))
            .map(|i| Bottleneck::load(w, &format!("{p}.m.{i}"), shortcut, precision))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            cv1: silu(w, &format!("{p}.cv1"), precision)?,
            cv2: silu(w, &format!("{p}.cv2"), precision)?,
            cv3: silu(w, &format!("{p}.cv3"), precision)?,
            m,
        })
    }
}

impl Module for C3k {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut y = self.cv1.forward(x)?;
        for b in &self.m {
            y = b.forward(&y)?;
        }
        self.cv3
            .forward(&Tensor::cat(&[y, self.cv2.forward(x)?], 1)?)
    }
}

/// `C2f` (YOLOv8) and `C3k2` (YOLO11): split, chain inner blocks on the
/// second half, concatenate every intermediate, fuse.
pub struct C2f {
    cv1: ConvBn,
    cv2: ConvBn,
    m: Vec<Box<dyn Module + Send + Sync>>,
}

impl C2f {
    pub fn load(
        w: &Weights,
        p: &str,
        shortcut: bool,
        precision: Precision,
    ) -> Result<Self, InferenceError> {
        let mut m: Vec<Box<dyn Module + Send + Sync>> = Vec::new();
        for i in 0.. {
            let inner = format!("{p}.m.{i}");
            if w.has(&format!("{inner}.cv3.conv.weight")) {
                m.push(Box::new(C3k::load(w, &inner, shortcut, precision)?));
            } else if w.has(&format!("{inner}.cv1.conv.weight")) {
                m.push(Box::new(Bottleneck::load(w, &inner, shortcut, precision)?));
            } else if w.has(&format!("{inner}.0.cv1.conv.weight")) {
                return Err(w.format_error(format!(
                    "{inner}: attention blocks inside C3k2 are not supported"
                )));
            } else {
                break;
            }
        }
        Ok(Self {
            cv1: silu(w, &format!("{p}.cv1"), precision)?,
            cv2: silu(w, &format!("{p}.cv2"), precision)?,
            m,
        })
    }
}

impl Module for C2f {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.cv1.forward(x)?;
        let half = y.dim(1)? / 2;
        let mut parts = vec![y.narrow(1, 0, half)?, y.narrow(1, half, half)?];
        for block in &self.m {
            let next = block.forward(parts.last().expect("two halves"))?;
            parts.push(next);
        }
        self.cv2.forward(&Tensor::cat(&parts, 1)?)
    }
}

/// `SPPF`: three chained 5x5 max pools, concatenated with their input.
pub struct Sppf {
    cv1: ConvBn,
    cv2: ConvBn,
}

impl Sppf {
    pub fn load(w: &Weights, p: &str, precision: Precision) -> Result<Self, InferenceError> {
        Ok(Self {
            cv1: silu(w, &format!("{p}.cv1"), precision)?,
            cv2: silu(w, &format!("{p}.cv2"), precision)?,
        })
    }
}

impl Module for Sppf {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut parts = vec![self.cv1.forward(x)?];
        for _ in 0..3 {
            let last = parts.last().expect("one part");
            let (_, _, h, w) = last.dims4()?;
            let pool = MaxPool {
                size: 5,
                stride: 1,
                before: 2,
                out_h: h,
                out_w: w,
            };
            let pooled = max_pool(last, pool)?;
            parts.push(pooled);
        }
        self.cv2.forward(&Tensor::cat(&parts, 1)?)
    }
}

/// Softmax over the last dimension.
fn softmax_last(x: &Tensor) -> candle_core::Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?;
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// YOLO11's multi-head self-attention over all pixels of the smallest map.
pub struct Attention {
    qkv: ConvBn,
    proj: ConvBn,
    pe: ConvBn,
    heads: usize,
    key_dim: usize,
    head_dim: usize,
}

impl Attention {
    fn load(w: &Weights, p: &str, precision: Precision) -> Result<Self, InferenceError> {
        let qkv = linear(w, &format!("{p}.qkv"), precision)?;
        let proj = linear(w, &format!("{p}.proj"), precision)?;
        let dim = proj.out_channels();
        // Ultralytics: heads = max(dim / 64, 1), key_dim = head_dim / 2.
        let heads = (dim / 64).max(1);
        let head_dim = dim / heads;
        let key_dim = (qkv.out_channels() - dim) / (2 * heads);
        Ok(Self {
            qkv,
            proj,
            pe: linear(w, &format!("{p}.pe"), precision)?,
            heads,
            key_dim,
            head_dim,
        })
    }
}

impl Module for Attention {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let n = h * w;
        let qkv =
            self.qkv
                .forward(x)?
                .reshape((b, self.heads, 2 * self.key_dim + self.head_dim, n))?;
        let q = qkv.narrow(2, 0, self.key_dim)?;
        let k = qkv.narrow(2, self.key_dim, self.key_dim)?;
        let v = qkv
            .narrow(2, 2 * self.key_dim, self.head_dim)?
            .contiguous()?;
        let scale = (self.key_dim as f64).powf(-0.5);
        let scores = (q * scale)?
            .transpose(2, 3)?
            .contiguous()?
            .matmul(&k.contiguous()?)?;
        let attn = softmax_last(&scores)?; // [B, heads, N, N]
        let out = v
            .matmul(&attn.transpose(2, 3)?.contiguous()?)?
            .reshape((b, c, h, w))?;
        let out = (out + self.pe.forward(&v.reshape((b, c, h, w))?)?)?;
        self.proj.forward(&out)
    }
}

/// Attention then a two-layer feed-forward, each with a residual.
pub struct PsaBlock {
    attn: Attention,
    ffn1: ConvBn,
    ffn2: ConvBn,
}

impl Module for PsaBlock {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = (x + self.attn.forward(x)?)?;
        let y = self.ffn2.forward(&self.ffn1.forward(&x)?)?;
        x + y
    }
}

/// `C2PSA`: YOLO11's attention stage after SPPF.
pub struct C2Psa {
    cv1: ConvBn,
    cv2: ConvBn,
    m: Vec<PsaBlock>,
}

impl C2Psa {
    pub fn load(w: &Weights, p: &str, precision: Precision) -> Result<Self, InferenceError> {
        let m = (0..count(w, &format!("{p}.m"), ".attn.qkv.conv.weight"))
            .map(|i| {
                let b = format!("{p}.m.{i}");
                Ok(PsaBlock {
                    attn: Attention::load(w, &format!("{b}.attn"), precision)?,
                    ffn1: silu(w, &format!("{b}.ffn.0"), precision)?,
                    ffn2: linear(w, &format!("{b}.ffn.1"), precision)?,
                })
            })
            .collect::<Result<_, InferenceError>>()?;
        Ok(Self {
            cv1: silu(w, &format!("{p}.cv1"), precision)?,
            cv2: silu(w, &format!("{p}.cv2"), precision)?,
            m,
        })
    }
}

impl Module for C2Psa {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.cv1.forward(x)?;
        let half = y.dim(1)? / 2;
        let mut b = y.narrow(1, half, half)?;
        for block in &self.m {
            b = block.forward(&b)?;
        }
        self.cv2
            .forward(&Tensor::cat(&[y.narrow(1, 0, half)?, b], 1)?)
    }
}

/// A chain of `Conv`s ending in a plain 1x1 `Conv2d` with bias, as each
/// branch of the detection head is. YOLOv8's branches are `Conv, Conv,
/// Conv2d`; YOLO11's class branch nests `(DWConv, Conv)` pairs.
struct Branch {
    convs: Vec<ConvBn>,
    last: Pointwise,
}

impl Branch {
    fn load(w: &Weights, p: &str, precision: Precision) -> Result<Self, InferenceError> {
        let mut convs = Vec::new();
        let mut stage = 0;
        loop {
            let s = format!("{p}.{stage}");
            if w.has(&format!("{s}.conv.weight")) {
                convs.push(silu(w, &s, precision)?);
            } else if w.has(&format!("{s}.0.conv.weight")) {
                for j in 0..count(w, &s, ".conv.weight") {
                    convs.push(silu(w, &format!("{s}.{j}"), precision)?);
                }
            } else {
                break;
            }
            stage += 1;
        }
        let weight = w
            .get(&format!("{p}.{stage}.weight"))?
            .to_dtype(precision.dtype())?;
        let bias = w
            .get(&format!("{p}.{stage}.bias"))?
            .to_dtype(precision.dtype())?;
        Ok(Self {
            convs,
            last: Pointwise::new(&weight, &bias, Activation::None, false)?,
        })
    }
}

impl Module for Branch {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut y = x.clone();
        for c in &self.convs {
            y = c.forward(&y)?;
        }
        self.last.forward(&y)
    }
}

/// `Detect`: per scale, a box branch (distributions over 16 distance bins
/// per side) and a class branch; decoded against anchor points.
pub struct Detect {
    boxes: Vec<Branch>,
    classes: Vec<Branch>,
    bins: usize,
    pub class_count: usize,
}

impl Detect {
    pub fn load(w: &Weights, p: &str, precision: Precision) -> Result<Self, InferenceError> {
        let levels = count(w, &format!("{p}.cv2"), ".0.conv.weight");
        let boxes: Vec<Branch> = (0..levels)
            .map(|i| Branch::load(w, &format!("{p}.cv2.{i}"), precision))
            .collect::<Result<_, _>>()?;
        let classes: Vec<Branch> = (0..levels)
            .map(|i| Branch::load(w, &format!("{p}.cv3.{i}"), precision))
            .collect::<Result<_, _>>()?;
        let bins = boxes
            .first()
            .ok_or_else(|| w.format_error(format!("{p}: no detection head")))?
            .last
            .out_channels()
            / 4;
        let class_count = classes[0].last.out_channels();
        Ok(Self {
            boxes,
            classes,
            bins,
            class_count,
        })
    }

    pub fn levels(&self) -> usize {
        self.boxes.len()
    }

    /// Rows `[N, anchors, 4 + classes]`: centre, size (input pixels), sigmoid scores.
    pub fn forward(&self, features: &[Tensor], input_h: usize) -> candle_core::Result<Tensor> {
        let n = features[0].dim(0)?;
        let mut distances = Vec::new();
        let mut logits = Vec::new();
        let mut anchors: Vec<f32> = Vec::new();
        let mut strides: Vec<f32> = Vec::new();
        for (i, x) in features.iter().enumerate() {
            let (_, _, h, w) = x.dims4()?;
            let stride = (input_h / h) as f32;
            distances.push(
                self.boxes[i]
                    .forward(x)?
                    .reshape((n, 4 * self.bins, h * w))?,
            );
            logits.push(
                self.classes[i]
                    .forward(x)?
                    .reshape((n, self.class_count, h * w))?,
            );
            for y in 0..h {
                for xx in 0..w {
                    anchors.extend([xx as f32 + 0.5, y as f32 + 0.5]);
                    strides.push(stride);
                }
            }
        }
        let a = strides.len();
        let dtype = features[0].dtype();
        let device = features[0].device();
        // Expected distance per side: softmax over the bins, weighted by bin index.
        let dist = Tensor::cat(&distances, 2)?
            .reshape((n, 4, self.bins, a))?
            .transpose(2, 3)?
            .contiguous()?;
        let bins = Tensor::arange(0f32, self.bins as f32, device)?.to_dtype(dtype)?;
        let dist = softmax_last(&dist)?.broadcast_mul(&bins)?.sum(D::Minus1)?; // [N, 4, A]: left, top, right, bottom
        let anchors = Tensor::from_vec(anchors, (a, 2), device)?
            .t()?
            .to_dtype(dtype)?
            .unsqueeze(0)?; // [1, 2, A]
        let strides = Tensor::from_vec(strides, (1, 1, a), device)?.to_dtype(dtype)?;
        let lt = dist.narrow(1, 0, 2)?;
        let rb = dist.narrow(1, 2, 2)?;
        let x1y1 = anchors.broadcast_sub(&lt)?;
        let x2y2 = anchors.broadcast_add(&rb)?;
        let centre = ((&x1y1 + &x2y2)? * 0.5)?;
        let size = (x2y2 - x1y1)?;
        let boxes = Tensor::cat(&[centre, size], 1)?.broadcast_mul(&strides)?;
        let scores = sigmoid_tensor(&Tensor::cat(&logits, 2)?)?;
        Tensor::cat(&[boxes, scores], 1)?
            .transpose(1, 2)?
            .contiguous()
    }
}
