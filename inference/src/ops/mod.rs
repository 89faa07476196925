//! Tensor operations candle lacks or runs slowly for detection models.

pub mod bias_activation;
pub mod conv;
pub mod depthwise;
pub mod int8;
pub mod maxpool;

pub use bias_activation::bias_activation;
pub use conv::conv2d;
pub use depthwise::{depthwise_conv2d, Padding};
pub use maxpool::{max_pool, MaxPool};

/// What follows a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    None,
    /// `min(max(x, 0), 6)`, MobileNet's activation.
    Relu6,
    Relu,
    /// `x` above zero, `0.1 x` below: darknet's `leaky`.
    Leaky,
    /// `x * sigmoid(x)`: YOLOv5/v8/11's activation (darknet's `swish`).
    Silu,
    /// darknet's `logistic`.
    Sigmoid,
    /// `x * tanh(softplus(x))`: YOLOv4's activation.
    Mish,
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

impl Activation {
    fn apply_one(self, v: f32) -> f32 {
        match self {
            Activation::None => v,
            Activation::Relu6 => v.clamp(0.0, 6.0),
            Activation::Relu => v.max(0.0),
            Activation::Leaky => {
                if v > 0.0 {
                    v
                } else {
                    0.1 * v
                }
            }
            Activation::Silu => v * sigmoid(v),
            Activation::Sigmoid => sigmoid(v),
            Activation::Mish => v * v.exp().ln_1p().tanh(),
        }
    }

    /// Applies the activation in place.
    pub(crate) fn apply_slice(self, values: &mut [f32]) {
        if self != Activation::None {
            for v in values {
                *v = self.apply_one(*v);
            }
        }
    }

    /// Applies the activation with candle's own ops (devices without our kernels).
    pub(crate) fn apply_tensor(
        self,
        x: candle_core::Tensor,
    ) -> candle_core::Result<candle_core::Tensor> {
        match self {
            Activation::None => Ok(x),
            Activation::Relu6 => x.clamp(0f32, 6f32),
            Activation::Relu => x.relu(),
            Activation::Leaky => x.maximum(&(&x * 0.1)?),
            Activation::Silu => x.silu(),
            Activation::Sigmoid => sigmoid_tensor(&x),
            Activation::Mish => &x * x.exp()?.affine(1.0, 1.0)?.log()?.tanh()?,
        }
    }
}

/// `1 / (1 + exp(-x))` with candle's element-wise ops.
pub(crate) fn sigmoid_tensor(x: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
    (x.neg()?.exp()? + 1.0)?.recip()
}

/// The f32 contents of a contiguous CPU tensor argument, or an error naming the op.
fn contiguous_f32<'a>(
    op: &str,
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
) -> candle_core::Result<&'a [f32]> {
    let candle_core::CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: only f32 on the CPU")
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: inputs must be contiguous")
    };
    Ok(&data[start..end])
}
