//! Convolution layers with their bias and activation folded in, as an
//! inference graph has them after batch norm folding.

use candle_core::{Module, Tensor};

use super::Weights;
use crate::ops::{depthwise_conv2d, Padding};
use crate::InferenceError;

/// What follows a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    None,
    Relu6,
}

impl Activation {
    fn apply(self, x: Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::None => Ok(x),
            Activation::Relu6 => x.clamp(0f32, 6f32),
        }
    }
}

/// `[C]` bias reshaped to broadcast over `[N, C, H, W]`.
fn bias4(bias: Tensor) -> candle_core::Result<Tensor> {
    let c = bias.dim(0)?;
    bias.reshape((1, c, 1, 1))
}

/// A 1x1 convolution run as one matrix product over all pixels.
pub struct Pointwise {
    weight: Tensor, // [O, C]
    bias: Tensor,   // [1, O, 1, 1]
    act: Activation,
}

impl Pointwise {
    /// Reads `{prefix}.weight` `[O, C, 1, 1]` and `{prefix}.bias` `[O]`.
    pub fn load(w: &Weights, prefix: &str, act: Activation) -> Result<Self, InferenceError> {
        let weight = w.get(&format!("{prefix}.weight"))?;
        let (o, c, _, _) = weight.dims4()?;
        Ok(Self {
            weight: weight.reshape((o, c))?,
            bias: bias4(w.get(&format!("{prefix}.bias"))?)?,
            act,
        })
    }

    pub fn out_channels(&self) -> usize {
        self.weight.dims()[0]
    }
}

impl Module for Pointwise {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let o = self.out_channels();
        let y = self
            .weight
            .broadcast_matmul(&x.reshape((n, c, h * w))?)?
            .reshape((n, o, h, w))?
            .broadcast_add(&self.bias)?;
        self.act.apply(y)
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
            bias: bias4(w.get(&format!("{prefix}.bias"))?)?,
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
        let y = depthwise_conv2d(x, &self.weight, self.stride, pad)?.broadcast_add(&self.bias)?;
        self.act.apply(y)
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
            bias: bias4(w.get(&format!("{prefix}.bias"))?)?,
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
        let y = x
            .conv2d(&self.weight, 0, self.stride, 1, 1)?
            .broadcast_add(&self.bias)?;
        self.act.apply(y)
    }
}
