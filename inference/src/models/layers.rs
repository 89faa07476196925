//! Convolution layers with their bias and activation folded in, as an
//! inference graph has them after batch norm folding.

use candle_core::{DType, Module, Tensor};

use super::Weights;
use crate::ops::int8::{worth_quantizing, QuantizedConv};
use crate::ops::winograd::{self, WinogradConv};
use crate::ops::winograd_int8::QuantizedWinogradConv;
pub use crate::ops::Activation;
use crate::ops::{bias_activation, conv2d, conv2d_max_pooled, depthwise_conv2d, Padding};
use crate::InferenceError;

/// A 1x1 convolution with its bias and activation.
pub enum Pointwise {
    /// One matrix product over all pixels.
    Float {
        weight: Tensor, // [O, C]
        bias: Tensor,   // [O]
        act: Activation,
    },
    /// Int8 weights and activations (`ops::int8`), where the model runs in
    /// int8 and the layer has enough input channels for that to pay.
    Int8(QuantizedConv),
}

impl Pointwise {
    /// Reads `{prefix}.weight` `[O, C, 1, 1]` and `{prefix}.bias` `[O]`.
    /// `int8`: whether this layer may run in int8.
    pub fn load(
        w: &Weights,
        prefix: &str,
        act: Activation,
        int8: bool,
    ) -> Result<Self, InferenceError> {
        let weight = w.get(&format!("{prefix}.weight"))?;
        let bias = w.get(&format!("{prefix}.bias"))?;
        Ok(Self::new(&weight, &bias, act, int8)?)
    }

    /// From a `[O, C, 1, 1]` weight already in memory.
    pub fn new(
        weight: &Tensor,
        bias: &Tensor,
        act: Activation,
        int8: bool,
    ) -> candle_core::Result<Self> {
        let (o, c, _, _) = weight.dims4()?;
        if int8 && worth_quantizing(c, 1) {
            return Ok(Self::Int8(QuantizedConv::new(weight, bias, 1, 0, act)?));
        }
        Ok(Self::Float {
            weight: weight.reshape((o, c))?,
            bias: bias.clone(),
            act,
        })
    }

    pub fn out_channels(&self) -> usize {
        match self {
            Self::Float { weight, .. } => weight.dims()[0],
            Self::Int8(q) => q.out_channels(),
        }
    }
}

impl Module for Pointwise {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (weight, bias, act) = match self {
            Self::Float { weight, bias, act } => (weight, bias, *act),
            Self::Int8(q) => return q.forward(x),
        };
        let (n, c, h, w) = x.dims4()?;
        let o = self.out_channels();
        // The weights broadcast over the batch as a view (stride 0), which
        // the matrix product reads in place: candle's `broadcast_matmul`
        // would first copy them once per image.
        let y = weight
            .broadcast_as((n, o, c))?
            .matmul(&x.reshape((n, c, h * w))?)?
            .reshape((n, o, h, w))?;
        bias_activation(&y, bias, act)
    }
}

/// A 3x3 depthwise convolution with TensorFlow `SAME` padding.
pub struct Depthwise {
    weight: Tensor, // [C, 1, 3, 3]
    bias: Tensor,
    stride: usize,
    act: Activation,
}

impl Depthwise {
    pub fn load(
        w: &Weights,
        prefix: &str,
        stride: usize,
        act: Activation,
    ) -> Result<Self, InferenceError> {
        Ok(Self {
            weight: w.get(&format!("{prefix}.weight"))?,
            bias: w.get(&format!("{prefix}.bias"))?,
            stride,
            act,
        })
    }
}

impl Module for Depthwise {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let k = self.weight.dim(2)?;
        let pad = Padding::same(h, w, k, self.stride);
        depthwise_conv2d(x, &self.weight, &self.bias, self.stride, pad, self.act)
    }
}

/// A full KxK convolution with TensorFlow `SAME` padding (the stem).
pub struct Conv {
    weight: Tensor, // [O, C, K, K]
    bias: Tensor,
    stride: usize,
    act: Activation,
}

impl Conv {
    pub fn load(
        w: &Weights,
        prefix: &str,
        stride: usize,
        act: Activation,
    ) -> Result<Self, InferenceError> {
        Ok(Self {
            weight: w.get(&format!("{prefix}.weight"))?,
            bias: w.get(&format!("{prefix}.bias"))?,
            stride,
            act,
        })
    }
}

impl Module for Conv {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let k = self.weight.dim(2)?;
        let pad = Padding::same(h, w, k, self.stride);
        // candle pads symmetrically; TensorFlow puts the odd pixel last.
        let x = x
            .pad_with_zeros(2, pad.top, pad.bottom)?
            .pad_with_zeros(3, pad.left, pad.right)?;
        let y = x.conv2d(&self.weight, 0, self.stride, 1, 1)?;
        bias_activation(&y, &self.bias, self.act)
    }
}

/// A dense convolution with symmetric padding, bias and activation fused
/// (`ops::conv2d`); where the model runs in int8 and the layer is deep
/// enough for that to pay, its int8 version: Winograd F(2x2, 3x3) for 3x3
/// stride-1 layers (`ops::winograd_int8`), im2col for the rest
/// (`ops::int8`); or, for f32 3x3 layers on the CPU, Winograd F(4x4, 3x3)
/// (`ops::winograd`). Darknet's and Ultralytics' convolutions are all this.
pub enum FusedConv {
    Float {
        weight: Tensor, // [O, C, K, K]
        bias: Tensor,
        stride: usize,
        padding: usize,
        act: Activation,
    },
    Int8(QuantizedConv),
    Int8Winograd(QuantizedWinogradConv),
    Winograd(WinogradConv),
}

impl FusedConv {
    /// `int8`: whether this layer may run in int8 (the model runs in int8
    /// and the layer is not one that must keep f32's resolution).
    pub fn new(
        weight: Tensor,
        bias: Tensor,
        stride: usize,
        padding: usize,
        act: Activation,
        int8: bool,
    ) -> candle_core::Result<Self> {
        let (_, c, k, _) = weight.dims4()?;
        if int8 && worth_quantizing(c, k) {
            if winograd::fits(k, stride, padding) {
                return Ok(Self::Int8Winograd(QuantizedWinogradConv::new(
                    &weight, &bias, act,
                )?));
            }
            return Ok(Self::Int8(QuantizedConv::new(
                &weight, &bias, stride, padding, act,
            )?));
        }
        let f32_on_cpu = weight.device().is_cpu() && weight.dtype() == DType::F32;
        if f32_on_cpu && winograd::worth_it(c, k, stride, padding) {
            return Ok(Self::Winograd(WinogradConv::new(&weight, &bias, act)?));
        }
        Ok(Self::Float {
            weight,
            bias,
            stride,
            padding,
            act,
        })
    }

    /// The convolution followed by a 2x2 max pool with stride 2, where this
    /// layer can pool as it writes (Winograd, f32 or int8, or the f32 CPU
    /// convolution with stride 1; same-size output with even sides);
    /// `None` where the pool must run on its own.
    pub fn forward_max_pooled(&self, x: &Tensor) -> Option<candle_core::Result<Tensor>> {
        let (_, _, h, w) = x.dims4().ok()?;
        let even = h.is_multiple_of(2) && w.is_multiple_of(2);
        match self {
            Self::Winograd(conv) if even => Some(conv.forward_max_pooled(x)),
            Self::Int8Winograd(conv) if even => Some(conv.forward_max_pooled(x)),
            Self::Float {
                weight,
                bias,
                stride: 1,
                padding,
                act,
            } if even && x.device().is_cpu() && x.dtype() == DType::F32 => {
                let (k, p) = (weight.dim(3).ok()?, *padding);
                // Same-size output (k = 2p + 1): its sides are x's, even.
                (k == 2 * p + 1).then(|| conv2d_max_pooled(x, weight, bias, 1, p, *act))
            }
            _ => None,
        }
    }

    pub fn out_channels(&self) -> usize {
        match self {
            Self::Float { weight, .. } => weight.dims()[0],
            Self::Int8(q) => q.out_channels(),
            Self::Int8Winograd(q) => q.out_channels(),
            Self::Winograd(w) => w.out_channels(),
        }
    }
}

impl Module for FusedConv {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Float {
                weight,
                bias,
                stride,
                padding,
                act,
            } => conv2d(x, weight, bias, *stride, *padding, *act),
            Self::Int8(q) => q.forward(x),
            Self::Int8Winograd(q) => q.forward(x),
            Self::Winograd(w) => w.forward(x),
        }
    }
}
