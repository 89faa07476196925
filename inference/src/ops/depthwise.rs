//! Depthwise 2-D convolution with bias and activation, as a candle custom op.
//!
//! candle runs a grouped convolution as one convolution per group, which for
//! MobileNet's 960-channel depthwise layers means 960 tiny kernels. This op
//! walks each channel plane once instead, in parallel over (batch, channel),
//! with branch-free inner loops over the valid span of each kernel tap.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{contiguous_f32, out_size, Activation};

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

/// Geometry shared by every plane of one call.
#[derive(Clone, Copy)]
struct Geometry {
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    stride: usize,
    padding: Padding,
}

impl Geometry {
    /// Output columns `lo..hi` whose input column `ox * stride + offset` is inside the row.
    fn valid_columns(&self, offset: isize) -> (usize, usize) {
        let s = self.stride as isize;
        let lo = if offset >= 0 {
            0
        } else {
            (-offset + s - 1) / s
        };
        let last = (self.w as isize - 1 - offset).div_euclid(s);
        let hi = (last + 1).clamp(0, self.ow as isize);
        (lo.min(hi) as usize, hi as usize)
    }

    /// One output plane: `dst = act(bias + sum of taps x shifted src)`.
    fn plane(&self, src: &[f32], taps: &[f32], bias: f32, act: Activation, dst: &mut [f32]) {
        let (s, p) = (self.stride, self.padding);
        dst.fill(bias);
        for oy in 0..self.oh {
            let row = &mut dst[oy * self.ow..(oy + 1) * self.ow];
            for ky in 0..self.kh {
                let iy = (oy * s + ky) as isize - p.top as isize;
                if iy < 0 || iy >= self.h as isize {
                    continue; // this tap row lies in the padding
                }
                let src_row = &src[iy as usize * self.w..(iy as usize + 1) * self.w];
                for kx in 0..self.kw {
                    let tap = taps[ky * self.kw + kx];
                    let offset = kx as isize - p.left as isize;
                    let (lo, hi) = self.valid_columns(offset);
                    if lo >= hi {
                        continue;
                    }
                    let first = (lo as isize * s as isize + offset) as usize;
                    if s == 1 {
                        let inputs = &src_row[first..first + (hi - lo)];
                        for (acc, x) in row[lo..hi].iter_mut().zip(inputs) {
                            *acc += tap * x;
                        }
                    } else {
                        let inputs = src_row[first..].iter().step_by(s);
                        for (acc, x) in row[lo..hi].iter_mut().zip(inputs) {
                            *acc += tap * x;
                        }
                    }
                }
            }
        }
        act.apply_slice(dst);
    }
}

struct DepthwiseConv2d {
    stride: usize,
    padding: Padding,
    act: Activation,
}

impl CustomOp3 for DepthwiseConv2d {
    fn name(&self) -> &'static str {
        "depthwise-conv2d"
    }

    fn cpu_fwd(
        &self,
        input: &CpuStorage,
        input_layout: &Layout,
        kernel: &CpuStorage,
        kernel_layout: &Layout,
        bias: &CpuStorage,
        bias_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(self.name(), input, input_layout)?;
        let k = contiguous_f32(self.name(), kernel, kernel_layout)?;
        let b = contiguous_f32(self.name(), bias, bias_layout)?;
        let (n, c, h, w) = input_layout.shape().dims4()?;
        let (kc, one, kh, kw) = kernel_layout.shape().dims4()?;
        if kc != c || one != 1 || b.len() != c {
            candle_core::bail!(
                "depthwise-conv2d: kernel {kc}x{one} and {} biases do not fit {c} channels",
                b.len()
            )
        }
        let p = self.padding;
        let g = Geometry {
            h,
            w,
            kh,
            kw,
            oh: out_size(h, p.top + p.bottom, kh, self.stride),
            ow: out_size(w, p.left + p.right, kw, self.stride),
            stride: self.stride,
            padding: p,
        };
        let mut out = vec![0f32; n * c * g.oh * g.ow];
        out.par_chunks_mut(g.oh * g.ow)
            .enumerate()
            .for_each(|(plane, dst)| {
                let ch = plane % c;
                g.plane(
                    &x[plane * h * w..(plane + 1) * h * w],
                    &k[ch * kh * kw..(ch + 1) * kh * kw],
                    b[ch],
                    self.act,
                    dst,
                );
            });
        Ok((CpuStorage::F32(out), Shape::from((n, c, g.oh, g.ow))))
    }
}

/// `act(depthwise(input, kernel) + bias)` for `input` `[N, C, H, W]`,
/// `kernel` `[C, 1, KH, KW]` and `bias` `[C]`.
pub fn depthwise_conv2d(
    input: &Tensor,
    kernel: &Tensor,
    bias: &Tensor,
    stride: usize,
    padding: Padding,
    act: Activation,
) -> candle_core::Result<Tensor> {
    if input.device().is_cpu() && input.dtype() == candle_core::DType::F32 {
        let op = DepthwiseConv2d {
            stride,
            padding,
            act,
        };
        return input.contiguous()?.apply_op3_no_bwd(
            &kernel.contiguous()?,
            &bias.contiguous()?,
            &op,
        );
    }
    // Other devices and dtypes: explicit padding, then candle's grouped convolution.
    let channels = input.dim(1)?;
    let y = input
        .pad_with_zeros(2, padding.top, padding.bottom)?
        .pad_with_zeros(3, padding.left, padding.right)?
        .conv2d(kernel, 0, stride, 1, channels)?
        .broadcast_add(&bias.reshape((1, channels, 1, 1))?)?;
    act.apply_tensor(y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// The custom op must agree with candle's own grouped convolution.
    #[test]
    fn matches_candle_grouped_conv() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        for (size, stride) in [
            (7usize, 1usize),
            (8, 2),
            (9, 2),
            (3, 2),
            (2, 2),
            (1, 2),
            (1, 1),
        ] {
            let input = Tensor::randn(0f32, 1., (2, 5, size, size + 1), &dev)?;
            let kernel = Tensor::randn(0f32, 1., (5, 1, 3, 3), &dev)?;
            let bias = Tensor::randn(0f32, 1., 5, &dev)?;
            let pad = Padding::same(size, size + 1, 3, stride);
            for act in [Activation::None, Activation::Relu6] {
                let ours = depthwise_conv2d(&input, &kernel, &bias, stride, pad, act)?;
                let reference = input
                    .pad_with_zeros(2, pad.top, pad.bottom)?
                    .pad_with_zeros(3, pad.left, pad.right)?
                    .conv2d(&kernel, 0, stride, 1, 5)?
                    .broadcast_add(&bias.reshape((1, 5, 1, 1))?)?;
                let reference = act.apply_tensor(reference)?;
                assert_eq!(ours.dims(), reference.dims());
                let diff = (ours - reference)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(diff < 1e-4, "size {size} stride {stride}: max diff {diff}");
            }
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
