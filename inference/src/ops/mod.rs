//! Tensor operations candle lacks or runs slowly for detection models.

pub mod bias_activation;
pub mod depthwise;

pub use bias_activation::bias_activation;
pub use depthwise::{depthwise_conv2d, Padding};

/// What follows a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    None,
    /// `min(max(x, 0), 6)`, MobileNet's activation.
    Relu6,
}

impl Activation {
    /// Applies the activation in place.
    pub(crate) fn apply_slice(self, values: &mut [f32]) {
        if self == Activation::Relu6 {
            for v in values {
                *v = v.clamp(0.0, 6.0);
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
        }
    }
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
