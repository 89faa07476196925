//! Max pooling with implicit padding (out-of-image cells never win), in one
//! pass per plane. candle needs the padding materialised first and pools
//! slowly on large maps; darknet's stride-1 pools and SPPF's 5x5 pools run
//! on every frame.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::contiguous_f32;

/// The largest of a 2x2 window, in the one order every 2x2 pool here uses
/// (the separate pool and those fused into convolutions), so that they
/// agree bit for bit.
#[inline(always)]
pub(crate) fn window_max(
    top_left: f32,
    top_right: f32,
    bottom_left: f32,
    bottom_right: f32,
) -> f32 {
    top_left.max(top_right).max(bottom_left.max(bottom_right))
}

/// A `size` x `size` max pool; `before` cells of padding on the top and
/// left, the output `out_h` x `out_w`.
#[derive(Debug, Clone, Copy)]
pub struct MaxPool {
    pub size: usize,
    pub stride: usize,
    pub before: usize,
    pub out_h: usize,
    pub out_w: usize,
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "max-pool"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(self.name(), storage, layout)?;
        let (n, c, h, w) = layout.shape().dims4()?;
        let (oh, ow) = (self.out_h, self.out_w);
        // Window bounds along one axis, clipped to the image.
        let span = |o: usize, len: usize| {
            let start = (o * self.stride) as isize - self.before as isize;
            let lo = start.max(0) as usize;
            let hi = ((start + self.size as isize).max(0) as usize).min(len);
            (lo, hi.max(lo + 1).min(len))
        };
        let xs: Vec<(usize, usize)> = (0..ow).map(|o| span(o, w)).collect();
        // The common 2x2 stride-2 pool: outputs whose window lies inside
        // the image take the maximum of two pairs in a loop that vectorises.
        let halving = self.size == 2 && self.stride == 2 && self.before == 0;
        let full_columns = if halving { (w / 2).min(ow) } else { 0 };
        let pool_plane = |p: usize, dst: &mut [MaybeUninit<f32>]| {
            let plane = &x[p * h * w..(p + 1) * h * w];
            for oy in 0..oh {
                let (y0, y1) = span(oy, h);
                let row = &mut dst[oy * ow..(oy + 1) * ow];
                let done = if halving && y1 - y0 == 2 {
                    let (top, bottom) = (&plane[y0 * w..], &plane[(y0 + 1) * w..]);
                    let pairs = top.chunks_exact(2).zip(bottom.chunks_exact(2));
                    for (d, (a, b)) in row[..full_columns].iter_mut().zip(pairs) {
                        d.write(window_max(a[0], a[1], b[0], b[1]));
                    }
                    full_columns
                } else {
                    0
                };
                for (ox, &(x0, x1)) in xs.iter().enumerate().skip(done) {
                    let mut m = f32::NEG_INFINITY;
                    for y in y0..y1 {
                        for v in &plane[y * w + x0..y * w + x1] {
                            m = m.max(*v);
                        }
                    }
                    row[ox].write(m);
                }
            }
        };
        let plane_out = oh * ow;
        // SAFETY: every plane is pooled, and every output of a plane written.
        let out = unsafe {
            super::filled(n * c * plane_out, |out| {
                (0..n * c).into_par_iter().for_each(|p| {
                    // SAFETY: plane p of the output, written only by this task.
                    pool_plane(p, out.part(p * plane_out, plane_out))
                });
            })
        };
        Ok((CpuStorage::F32(out), Shape::from((n, c, oh, ow))))
    }
}

/// Pools `x` `[N, C, H, W]`; other devices and dtypes pad by edge
/// replication (the same maximum) and use candle's pool.
pub fn max_pool(x: &Tensor, pool: MaxPool) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        return x.contiguous()?.apply_op1_no_bwd(&pool);
    }
    let (_, _, h, w) = x.dims4()?;
    let extent = |out: usize| (out - 1) * pool.stride + pool.size;
    let after_h = extent(pool.out_h).saturating_sub(h + pool.before);
    let after_w = extent(pool.out_w).saturating_sub(w + pool.before);
    x.pad_with_same(2, pool.before, after_h)?
        .pad_with_same(3, pool.before, after_w)?
        .max_pool2d_with_stride(pool.size, pool.stride)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn agrees_with_padded_candle_pool() -> candle_core::Result<()> {
        for (size, stride, before, (h, w), out_h, out_w) in [
            (2, 2, 0, (9, 8), 5, 4),
            (2, 2, 0, (8, 9), 4, 5),
            (2, 2, 0, (12, 12), 6, 6),
            (2, 1, 0, (9, 8), 9, 8),
            (5, 1, 2, (9, 8), 9, 8),
        ] {
            let x = Tensor::randn(0f32, 1., (2, 3, h, w), &Device::Cpu)?;
            let pool = MaxPool {
                size,
                stride,
                before,
                out_h,
                out_w,
            };
            let ours = max_pool(&x, pool)?;
            let extent = |out: usize| (out - 1) * stride + size;
            let reference = x
                .pad_with_same(2, before, extent(out_h).saturating_sub(h + before))?
                .pad_with_same(3, before, extent(out_w).saturating_sub(w + before))?
                .max_pool2d_with_stride(size, stride)?;
            let diff = (ours - reference)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert_eq!(diff, 0.0, "size {size} stride {stride}");
        }
        Ok(())
    }
}
