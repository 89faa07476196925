//! Depthwise 2-D convolution as a candle custom op.
//!
//! candle runs a grouped convolution as one convolution per group, which for
//! MobileNet's 960-channel depthwise layers means 960 tiny kernels. This op
//! walks each channel plane once instead, in parallel over (batch, channel).

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

/// Zero padding on each side, as TensorFlow's `SAME` computes it (the extra
/// row or column goes at the bottom or right).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Padding {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

impl Padding {
    /// TensorFlow `SAME` padding for one input size, kernel size and stride.
    pub fn same(in_h: usize, in_w: usize, kernel: usize, stride: usize) -> Self {
        let (top, bottom) = same_1d(in_h, kernel, stride);
        let (left, right) = same_1d(in_w, kernel, stride);
        Self {
            top,
            bottom,
            left,
            right,
        }
    }
}

fn same_1d(input: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = input.div_ceil(stride);
    let total = ((out - 1) * stride + kernel).saturating_sub(input);
    (total / 2, total - total / 2)
}

/// Output size of a convolution along one axis.
fn out_size(input: usize, pad: usize, kernel: usize, stride: usize) -> usize {
    (input + pad - kernel) / stride + 1
}

struct DepthwiseConv2d {
    stride: usize,
    padding: Padding,
}

impl CustomOp2 for DepthwiseConv2d {
    fn name(&self) -> &'static str {
        "depthwise-conv2d"
    }

    fn cpu_fwd(
        &self,
        input: &CpuStorage,
        input_layout: &Layout,
        kernel: &CpuStorage,
        kernel_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (input, kernel) = match (input, kernel) {
            (CpuStorage::F32(i), CpuStorage::F32(k)) => (i, k),
            _ => candle_core::bail!("depthwise-conv2d: only f32 on the CPU"),
        };
        let (Some((i0, i1)), Some((k0, k1))) = (
            input_layout.contiguous_offsets(),
            kernel_layout.contiguous_offsets(),
        ) else {
            candle_core::bail!("depthwise-conv2d: inputs must be contiguous")
        };
        let input = &input[i0..i1];
        let kernel = &kernel[k0..k1];
        let (n, c, h, w) = input_layout.shape().dims4()?;
        let (kc, one, kh, kw) = kernel_layout.shape().dims4()?;
        if kc != c || one != 1 {
            candle_core::bail!("depthwise-conv2d: kernel {kc}x{one} does not fit {c} channels")
        }
        let p = self.padding;
        let s = self.stride;
        let oh = out_size(h, p.top + p.bottom, kh, s);
        let ow = out_size(w, p.left + p.right, kw, s);
        let mut out = vec![0f32; n * c * oh * ow];
        out.par_chunks_mut(oh * ow)
            .enumerate()
            .for_each(|(plane, dst)| {
                let ch = plane % c;
                let src = &input[plane * h * w..(plane + 1) * h * w];
                let taps = &kernel[ch * kh * kw..(ch + 1) * kh * kw];
                for oy in 0..oh {
                    let row = &mut dst[oy * ow..(oy + 1) * ow];
                    for ky in 0..kh {
                        // Signed arithmetic: the tap may fall into the padding.
                        let iy = (oy * s + ky) as isize - p.top as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        let src_row = &src[iy as usize * w..(iy as usize + 1) * w];
                        for kx in 0..kw {
                            let tap = taps[ky * kw + kx];
                            for (ox, acc) in row.iter_mut().enumerate() {
                                let ix = (ox * s + kx) as isize - p.left as isize;
                                if ix >= 0 && ix < w as isize {
                                    *acc += tap * src_row[ix as usize];
                                }
                            }
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((n, c, oh, ow))))
    }
}

/// Depthwise convolution of `input` `[N, C, H, W]` with `kernel` `[C, 1, KH, KW]`.
pub fn depthwise_conv2d(
    input: &Tensor,
    kernel: &Tensor,
    stride: usize,
    padding: Padding,
) -> candle_core::Result<Tensor> {
    if input.device().is_cpu() {
        let input = input.contiguous()?;
        let kernel = kernel.contiguous()?;
        return input.apply_op2_no_bwd(&kernel, &DepthwiseConv2d { stride, padding });
    }
    // Other devices: explicit padding, then candle's grouped convolution.
    let channels = input.dim(1)?;
    let padded = input
        .pad_with_zeros(2, padding.top, padding.bottom)?
        .pad_with_zeros(3, padding.left, padding.right)?;
    padded.conv2d(kernel, 0, stride, 1, channels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// The custom op must agree with candle's own grouped convolution.
    #[test]
    fn matches_candle_grouped_conv() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        for (size, stride) in [(7usize, 1usize), (8, 2), (9, 2), (3, 2), (2, 2), (1, 2)] {
            let input = Tensor::randn(0f32, 1., (2, 5, size, size + 1), &dev)?;
            let kernel = Tensor::randn(0f32, 1., (5, 1, 3, 3), &dev)?;
            let pad = Padding::same(size, size + 1, 3, stride);
            let ours = depthwise_conv2d(&input, &kernel, stride, pad)?;
            let reference = input
                .pad_with_zeros(2, pad.top, pad.bottom)?
                .pad_with_zeros(3, pad.left, pad.right)?
                .conv2d(&kernel, 0, stride, 1, 5)?;
            assert_eq!(ours.dims(), reference.dims());
            let diff = (ours - reference)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-4, "size {size} stride {stride}: max diff {diff}");
        }
        Ok(())
    }

    #[test]
    fn same_padding_puts_the_extra_pixel_last() {
        assert_eq!(same_1d(300, 3, 2), (0, 1));
        assert_eq!(same_1d(75, 3, 2), (1, 1));
        assert_eq!(same_1d(19, 3, 1), (1, 1));
        assert_eq!(same_1d(2, 3, 2), (0, 1));
    }
}
