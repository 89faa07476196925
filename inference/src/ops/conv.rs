//! Dense 2-D convolution with bias and activation, as tiled matrix products.
//!
//! candle's CPU convolution builds a pixel-major im2col matrix and
//! transposes the product back to NCHW; on YOLO layers it ran at a quarter
//! of OpenCV's speed. Here each tile of output rows gets its own small
//! patch matrix `[C*K*K, rows*OW]` (it stays in cache), one GEMM writes
//! `weight [O, C*K*K] x patches` straight into the NCHW output, and the bias
//! and activation are applied to that tile while it is still hot.
//! Tiles run in parallel; when there are too few (deep layers on small
//! maps), the GEMM itself is parallel instead.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use super::maxpool::window_max;
use super::{bias_activation, contiguous_f32, inside_columns, out_size, Activation, SharedMut};

/// Patch-matrix size aimed for per tile, in floats (about 1 MiB).
const TILE_FLOATS: usize = 1 << 18;
/// Fewer output columns per GEMM than this wastes its micro-kernels.
const MIN_TILE_COLUMNS: usize = 256;

struct DenseConv {
    stride: usize,
    padding: usize,
    act: Activation,
    /// Whether a 2x2 stride-2 max pool follows (the output's sides are
    /// even): each tile is then multiplied into scratch and pooled from
    /// there, and the full-size map is never written.
    pool: bool,
}

/// Geometry of one call.
#[derive(Clone, Copy)]
struct Geometry {
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    padding: usize,
    oh: usize,
    ow: usize,
}

impl Geometry {
    /// Fills `col` (`[C*K*K, rows * OW]`) with the patches of output rows
    /// `row0..row0 + rows` of one image, zero where a tap reads padding.
    fn patches(&self, image: &[f32], row0: usize, rows: usize, col: &mut [f32]) {
        let Geometry {
            c,
            h,
            w,
            k,
            stride: s,
            padding: p,
            ow,
            ..
        } = *self;
        let width = rows * ow;
        for r in 0..c * k * k {
            let (ch, ky, kx) = (r / (k * k), (r / k) % k, r % k);
            let plane = &image[ch * h * w..(ch + 1) * h * w];
            let (first, end) = inside_columns(kx, s, p, w, ow);
            for (i, oy) in (row0..row0 + rows).enumerate() {
                let dst = &mut col[r * width + i * ow..r * width + (i + 1) * ow];
                let iy = (oy * s + ky) as isize - p as isize;
                if iy < 0 || iy >= h as isize || first >= end {
                    dst.fill(0.0);
                    continue;
                }
                dst[..first].fill(0.0);
                dst[end..].fill(0.0);
                let src = &plane[iy as usize * w..(iy as usize + 1) * w];
                if s == 1 {
                    let start = first + kx - p;
                    dst[first..end].copy_from_slice(&src[start..start + (end - first)]);
                } else {
                    for (ox, d) in dst.iter_mut().enumerate().take(end).skip(first) {
                        *d = src[ox * s + kx - p];
                    }
                }
            }
        }
    }
}

thread_local! {
    /// Each thread's patch matrix, kept between tiles and calls: a fresh
    /// zeroed megabyte per tile cost more than the stem's arithmetic.
    static PATCHES: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
    /// Each thread's unpooled tile, `[O, rows * OW]`, when a pool follows.
    static UNPOOLED: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Max-pools `tile` (`rows` x `width`, both even) 2x2 with stride 2 into
/// `out` (`rows / 2` rows of `width / 2`, `out_width` apart).
fn max_pool_rows(tile: &[f32], rows: usize, width: usize, out: SharedMut, out_width: usize) {
    for (i, pair) in tile[..rows * width].chunks_exact(2 * width).enumerate() {
        let (top, bottom) = pair.split_at(width);
        // SAFETY: pooled row i of the caller's part of the output.
        let dst = unsafe { out.part(i * out_width, width / 2) };
        for ((d, t), b) in dst
            .iter_mut()
            .zip(top.chunks_exact(2))
            .zip(bottom.chunks_exact(2))
        {
            d.write(window_max(t[0], t[1], b[0], b[1]));
        }
    }
}

impl CustomOp3 for DenseConv {
    fn name(&self) -> &'static str {
        "dense-conv2d"
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
        let weight = contiguous_f32(self.name(), kernel, kernel_layout)?;
        let bias = contiguous_f32(self.name(), bias, bias_layout)?;
        let (n, c, h, w) = input_layout.shape().dims4()?;
        let (o, kc, k, k2) = kernel_layout.shape().dims4()?;
        if kc != c
            || k != k2
            || bias.len() != o
            || h + 2 * self.padding < k
            || w + 2 * self.padding < k
        {
            candle_core::bail!(
                "dense-conv2d: kernel {o}x{kc}x{k}x{k2} does not fit input {n}x{c}x{h}x{w}"
            )
        }
        let side = |i: usize| out_size(i, 2 * self.padding, k, self.stride);
        let g = Geometry {
            c,
            h,
            w,
            k,
            stride: self.stride,
            padding: self.padding,
            oh: side(h),
            ow: side(w),
        };
        let depth = c * k * k;
        let plane = g.oh * g.ow;
        if self.pool && (!g.oh.is_multiple_of(2) || !g.ow.is_multiple_of(2)) {
            candle_core::bail!("dense-conv2d: a fused 2x2 pool needs even sides")
        }
        let rows_per_tile = (TILE_FLOATS / (depth * g.ow))
            .max(MIN_TILE_COLUMNS.div_ceil(g.ow))
            .clamp(1, g.oh);
        // Pooled tiles hold whole pairs of rows.
        let rows_per_tile = if self.pool {
            rows_per_tile.next_multiple_of(2).min(g.oh)
        } else {
            rows_per_tile
        };
        let shrink = if self.pool { 2 } else { 1 };
        let out_plane = plane / (shrink * shrink);
        let tiles_per_image = g.oh.div_ceil(rows_per_tile);
        let tiles: Vec<(usize, usize)> = (0..n)
            .flat_map(|img| (0..tiles_per_image).map(move |t| (img, t * rows_per_tile)))
            .collect();
        let threads = rayon::current_num_threads();
        // Enough tiles to keep every thread busy: one single-threaded GEMM
        // per tile. Otherwise the GEMMs share the threads.
        let tile_parallel = tiles.len() >= 2 * threads;
        let run_tile = |out_ptr: SharedMut, &(img, row0): &(usize, usize)| {
            let rows = rows_per_tile.min(g.oh - row0);
            let cols = rows * g.ow;
            let image = &x[img * c * h * w..(img + 1) * c * h * w];
            let pointwise = k == 1 && self.stride == 1 && self.padding == 0;
            let mut scratch = PATCHES.take();
            let (rhs, rhs_rs) = if pointwise {
                // A 1x1 convolution reads the input as it is.
                (image[row0 * g.ow..].as_ptr(), (h * w) as isize)
            } else {
                if scratch.len() < depth * cols {
                    scratch.resize(depth * cols, 0.0);
                }
                g.patches(image, row0, rows, &mut scratch[..depth * cols]);
                (scratch.as_ptr(), cols as isize)
            };
            let mut unpooled = Vec::new();
            if self.pool {
                unpooled = UNPOOLED.take();
                if unpooled.len() < o * cols {
                    unpooled.resize(o * cols, 0.0);
                }
            }
            // SAFETY: the tile's rows of image `img` lie inside `out`
            // (offset + (o - 1) * plane + cols <= len), or, pooled, inside
            // `unpooled`, and no other tile writes them; lhs and rhs are live
            // slices of the given shapes. The GEMM writes every one of them
            // without reading (tiles cover all rows, so all of `out` is
            // written, pooled or not).
            unsafe {
                let (dst, dst_rs) = if self.pool {
                    (unpooled.as_mut_ptr(), cols)
                } else {
                    (out_ptr.at(img * o * plane + row0 * g.ow), plane)
                };
                gemm::gemm(
                    o,
                    cols,
                    depth,
                    dst,
                    1,
                    dst_rs as isize,
                    false,
                    weight.as_ptr(),
                    1,
                    depth as isize,
                    rhs,
                    1,
                    rhs_rs,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    if tile_parallel {
                        Parallelism::None
                    } else {
                        Parallelism::Rayon(threads)
                    },
                );
                for (oc, b) in bias.iter().enumerate() {
                    let row = std::slice::from_raw_parts_mut(dst.add(oc * dst_rs), cols);
                    row.iter_mut().for_each(|v| *v += b);
                    self.act.apply_slice(row);
                    if self.pool {
                        let first = (img * o + oc) * out_plane + row0 / 2 * (g.ow / 2);
                        max_pool_rows(row, rows, g.ow, SharedMut(out_ptr.at(first)), g.ow / 2);
                    }
                }
            }
            PATCHES.set(scratch);
            if self.pool {
                UNPOOLED.set(unpooled);
            }
        };
        // SAFETY: the tiles cover every output row of every image, and each
        // tile's GEMM writes its rows for every output channel.
        let out = unsafe {
            super::filled(n * o * out_plane, |out| {
                if tile_parallel {
                    tiles.par_iter().for_each(|tile| run_tile(out, tile));
                } else {
                    tiles.iter().for_each(|tile| run_tile(out, tile));
                }
            })
        };
        let (oh, ow) = (g.oh / shrink, g.ow / shrink);
        Ok((CpuStorage::F32(out), Shape::from((n, o, oh, ow))))
    }
}

impl DenseConv {
    fn apply(&self, x: &Tensor, weight: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
        x.contiguous()?
            .apply_op3_no_bwd(&weight.contiguous()?, &bias.contiguous()?, self)
    }
}

fn on_cpu_in_f32(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == candle_core::DType::F32
}

/// `act(conv2d(x, weight) + bias)` with symmetric zero `padding`, for
/// `x` `[N, C, H, W]`, `weight` `[O, C, K, K]` and `bias` `[O]`.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    stride: usize,
    padding: usize,
    act: Activation,
) -> candle_core::Result<Tensor> {
    if on_cpu_in_f32(x) {
        return DenseConv {
            stride,
            padding,
            act,
            pool: false,
        }
        .apply(x, weight, bias);
    }
    let y = x.conv2d(weight, padding, stride, 1, 1)?;
    bias_activation(&y, bias, act)
}

/// `conv2d` followed by a 2x2 max pool with stride 2, pooled tile by tile
/// as the products are written, for f32 on the CPU. The convolution's
/// output sides must be even.
pub fn conv2d_max_pooled(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    stride: usize,
    padding: usize,
    act: Activation,
) -> candle_core::Result<Tensor> {
    if !on_cpu_in_f32(x) {
        candle_core::bail!("dense-conv2d: a fused pool runs on f32 CPU tensors only")
    }
    DenseConv {
        stride,
        padding,
        act,
        pool: true,
    }
    .apply(x, weight, bias)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Must agree with candle's own convolution for every geometry YOLO
    /// uses, in tiles and in one piece, one image or several.
    #[test]
    fn matches_candle_conv2d() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        for (n, c, o, k, stride, padding, h, w) in [
            (2, 3, 4, 3, 1, 1, 9, 7),
            (2, 3, 4, 3, 2, 1, 10, 9),
            (1, 5, 4, 1, 1, 0, 5, 6),
            (1, 3, 4, 5, 1, 2, 6, 6),
            (3, 3, 4, 3, 2, 0, 8, 8),
            // Large enough to split into tiles.
            (1, 8, 16, 3, 1, 1, 300, 300),
            (2, 64, 8, 3, 2, 1, 120, 90),
        ] {
            let x = Tensor::randn(0f32, 1., (n, c, h, w), &dev)?;
            let wt = Tensor::randn(0f32, 1., (o, c, k, k), &dev)?;
            let b = Tensor::randn(0f32, 1., o, &dev)?;
            let ours = conv2d(&x, &wt, &b, stride, padding, Activation::Leaky)?;
            let theirs = Activation::Leaky.apply_tensor(
                x.conv2d(&wt, padding, stride, 1, 1)?
                    .broadcast_add(&b.reshape((1, o, 1, 1))?)?,
            )?;
            assert_eq!(ours.dims(), theirs.dims());
            let diff = (ours - theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(
                diff < 1e-3,
                "n{n} c{c} k{k} s{stride} p{padding} {h}x{w}: {diff}"
            );
        }
        Ok(())
    }

    /// Pooled tile by tile, the same as the convolution then candle's 2x2
    /// max pool: in one tile and in several (an odd row count per tile
    /// rounds up to pairs), stride 1 and 2; odd sides are refused.
    #[test]
    fn fused_max_pool_matches_conv_then_pool() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        for (n, c, o, stride, h, w) in [
            (2, 3, 4, 1, 10, 8),
            (1, 3, 16, 1, 416, 416),
            (1, 8, 5, 2, 120, 92),
        ] {
            let x = Tensor::randn(0f32, 1., (n, c, h, w), &dev)?;
            let wt = Tensor::randn(0f32, 1., (o, c, 3, 3), &dev)?;
            let b = Tensor::randn(0f32, 1., o, &dev)?;
            let act = Activation::Leaky;
            let ours = conv2d_max_pooled(&x, &wt, &b, stride, 1, act)?;
            let theirs = conv2d(&x, &wt, &b, stride, 1, act)?.max_pool2d(2)?;
            assert_eq!(ours.dims(), theirs.dims());
            let diff = (ours - theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert_eq!(diff, 0.0, "n{n} c{c} s{stride} {h}x{w}");
        }
        let odd = Tensor::zeros((1, 3, 7, 8), candle_core::DType::F32, &dev)?;
        let wt = Tensor::zeros((2, 3, 3, 3), candle_core::DType::F32, &dev)?;
        let b = Tensor::zeros(2, candle_core::DType::F32, &dev)?;
        assert!(conv2d_max_pooled(&odd, &wt, &b, 1, 1, Activation::None).is_err());
        Ok(())
    }
}
