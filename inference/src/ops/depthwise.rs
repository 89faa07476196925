//! Depthwise 2-D convolution with bias and activation, as a candle custom op.
//!
//! candle runs a grouped convolution as one convolution per group, which for
//! MobileNet's 960-channel depthwise layers means 960 tiny kernels. This op
//! walks each channel plane once instead, in parallel over (batch, channel),
//! with branch-free inner loops over the valid span of each kernel tap,
//! compiled for AVX2 where the CPU has it. A 3-wide kernel row adds its three
//! taps in one pass; with stride 2 the plane's columns are first split into
//! even and odd, so that every tap reads contiguous inputs.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{avx2_dispatch, contiguous_f32, fill_uninit, out_size, Activation};

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
    #[inline(always)]
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

    /// Output columns `lo..hi` that tap column `kx` of input row `iy`
    /// reaches, and their inputs, one per column.
    #[inline(always)]
    fn span<'a>(&self, source: &Source<'a>, iy: usize, kx: usize) -> (usize, usize, &'a [f32]) {
        let s = self.stride;
        let offset = kx as isize - self.padding.left as isize;
        let (lo, hi) = self.valid_columns(offset);
        if lo >= hi {
            return (0, 0, &[]);
        }
        let first = (lo as isize * s as isize + offset) as usize;
        let inputs = if s == 1 {
            &source.src[iy * self.w + first..]
        } else {
            &source.phases[(iy * s + first % s) * source.phase_len + first / s..]
        };
        (lo, hi, &inputs[..hi - lo])
    }
}

/// A plane's input: the plane itself, or with stride 2 or more its
/// columns split by phase, row `iy`'s phase `ph` from
/// `(iy * stride + ph) * phase_len`.
struct Source<'a> {
    src: &'a [f32],
    phases: &'a [f32],
    phase_len: usize,
}

/// One output plane: `dst = act(bias + sum of taps x shifted src)`. With
/// stride 2 or more, `phases` (scratch) receives the plane's columns split
/// by phase, `x % stride`, so that every tap reads a contiguous run.
#[inline(always)]
fn plane_body(
    g: &Geometry,
    src: &[f32],
    taps: &[f32],
    bias: f32,
    act: Activation,
    phases: &mut Vec<f32>,
    dst: &mut [MaybeUninit<f32>],
) {
    let (s, p) = (g.stride, g.padding);
    // Row iy's phase ph starts at (iy * s + ph) * phase_len.
    let phase_len = g.w.div_ceil(s);
    if s > 1 {
        // Every slot a tap reads is written below: no need to clear first.
        phases.resize(g.h * s * phase_len, 0.0);
        for (row, split) in src
            .chunks_exact(g.w)
            .zip(phases.chunks_exact_mut(s * phase_len))
        {
            if s == 2 {
                // MobileNet's case: a loop the compiler vectorises.
                let (even, odd) = split.split_at_mut(phase_len);
                for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(row.chunks_exact(2)) {
                    (*e, *o) = (pair[0], pair[1]);
                }
                if g.w % 2 == 1 {
                    even[phase_len - 1] = row[g.w - 1];
                }
            } else {
                for (j, group) in row.chunks(s).enumerate() {
                    for (phase, v) in group.iter().enumerate() {
                        split[phase * phase_len + j] = *v;
                    }
                }
            }
        }
    }
    let src = Source {
        src,
        phases,
        phase_len,
    };
    let dst = fill_uninit(dst, bias);
    for oy in 0..g.oh {
        let row = &mut dst[oy * g.ow..(oy + 1) * g.ow];
        for ky in 0..g.kh {
            let iy = (oy * s + ky) as isize - p.top as isize;
            if iy < 0 || iy >= g.h as isize {
                continue; // this tap row lies in the padding
            }
            let taps = &taps[ky * g.kw..(ky + 1) * g.kw];
            let iy = iy as usize;
            if let &[t0, t1, t2] = taps {
                // 3 wide: the columns all three taps reach in one pass (one
                // load and store of the sums instead of three), the edges
                // tap by tap. Every sum still adds its taps in kx order.
                let spans = [
                    g.span(&src, iy, 0),
                    g.span(&src, iy, 1),
                    g.span(&src, iy, 2),
                ];
                let lo = spans.iter().map(|s| s.0).max().unwrap_or(0);
                let hi = spans.iter().map(|s| s.1).min().unwrap_or(0);
                if lo < hi {
                    for (tap, &(from, to, inputs)) in taps.iter().zip(&spans) {
                        add_tap(row, *tap, from, to.min(lo), inputs);
                    }
                    let [a, b, c] = spans.map(|(from, _, inputs)| &inputs[lo - from..][..hi - lo]);
                    for (((sum, a), b), c) in row[lo..hi].iter_mut().zip(a).zip(b).zip(c) {
                        *sum = ((*sum + t0 * a) + t1 * b) + t2 * c;
                    }
                    for (tap, &(from, to, inputs)) in taps.iter().zip(&spans) {
                        let start = from.max(hi);
                        add_tap(row, *tap, start, to, &inputs[start.min(to) - from..]);
                    }
                    continue;
                }
            }
            for (kx, tap) in taps.iter().enumerate() {
                let (lo, hi, inputs) = g.span(&src, iy, kx);
                add_tap(row, *tap, lo, hi, inputs);
            }
        }
    }
    act.apply_inline(dst);
}

/// `row[lo..hi] += tap x inputs` (nothing where `lo >= hi`).
#[inline(always)]
fn add_tap(row: &mut [f32], tap: f32, lo: usize, hi: usize, inputs: &[f32]) {
    if lo < hi {
        for (sum, x) in row[lo..hi].iter_mut().zip(inputs) {
            *sum += tap * x;
        }
    }
}

avx2_dispatch!(fn plane(
    g: &Geometry,
    src: &[f32],
    taps: &[f32],
    bias: f32,
    act: Activation,
    phases: &mut Vec<f32>,
    dst: &mut [MaybeUninit<f32>],
) -> () = plane_body);

/// Channels the narrow-plane path computes together: one AVX2 vector.
const LANES: usize = 8;

/// Planes whose input is at most this wide go through [`lanes_body`]: their
/// rows are too short for [`plane_body`]'s per-row work (spans, edges,
/// remainders) to pay. Measured on MobileNetV2's layers: lanes are faster
/// up to 75 wide (2x at 19 and 10 wide), planes at 150.
const NARROW: usize = 100;

/// `LANES` consecutive planes at once, channel-interleaved: their inputs
/// copied into `scratch` as `[row][column][lane]` with the padding as
/// zeros, so that each tap is one vector multiply-add over the lanes with
/// no edge cases. Every sum adds its taps in the same order as
/// [`plane_body`] (padding adds a zero), so the results are the same.
#[inline(always)]
fn lanes_body(
    g: &Geometry,
    src: &[f32],
    taps: &[f32],
    bias: &[f32],
    act: Activation,
    scratch: &mut Vec<f32>,
    dst: &mut [MaybeUninit<f32>],
) {
    let s = g.stride;
    // The padded input every output reaches, no more.
    let (ph, pw) = ((g.oh - 1) * s + g.kh, (g.ow - 1) * s + g.kw);
    let area = g.kh * g.kw;
    let plane_out = g.oh * g.ow;
    let len = (ph * pw + area + plane_out) * LANES;
    if scratch.len() != len {
        // Zeroed once per worker: nothing below writes the padding, and a
        // call has one geometry, so its zeros stay for every block.
        scratch.clear();
        scratch.resize(len, 0.0);
    }
    let (input, rest) = scratch.split_at_mut(ph * pw * LANES);
    let (lane_taps, out) = rest.split_at_mut(area * LANES);
    for (lane, plane) in src.chunks_exact(g.h * g.w).enumerate() {
        for (row, py) in plane.chunks_exact(g.w).zip(g.padding.top..ph) {
            let padded = &mut input[py * pw * LANES..(py + 1) * pw * LANES];
            for (v, px) in row.iter().zip(g.padding.left..pw) {
                padded[px * LANES + lane] = *v;
            }
        }
    }
    for (lane, plane_taps) in taps.chunks_exact(area).enumerate() {
        for (i, t) in plane_taps.iter().enumerate() {
            lane_taps[i * LANES + lane] = *t;
        }
    }
    let bias: [f32; LANES] = bias.try_into().expect("LANES biases");
    if g.kw == 3 {
        sum_lanes::<3>(g, input, pw, lane_taps, bias, out);
    } else {
        sum_lanes::<0>(g, input, pw, lane_taps, bias, out);
    }
    act.apply_inline(out);
    for (lane, plane) in dst.chunks_exact_mut(plane_out).enumerate() {
        for (d, sums) in plane.iter_mut().zip(out.chunks_exact(LANES)) {
            d.write(sums[lane]);
        }
    }
}

/// Every output's sums over the interleaved `input` (`pw` columns wide),
/// for a kernel `KW` wide (0: `g.kw`, unknown when compiled).
#[inline(always)]
fn sum_lanes<const KW: usize>(
    g: &Geometry,
    input: &[f32],
    pw: usize,
    lane_taps: &[f32],
    bias: [f32; LANES],
    out: &mut [f32],
) {
    let (s, kw) = (g.stride, if KW == 0 { g.kw } else { KW });
    for (oy, out_row) in out.chunks_exact_mut(g.ow * LANES).enumerate() {
        for (ox, sums) in out_row.chunks_exact_mut(LANES).enumerate() {
            let mut acc = bias;
            for ky in 0..g.kh {
                let at = ((oy * s + ky) * pw + ox * s) * LANES;
                let inputs = &input[at..at + kw * LANES];
                let row_taps = &lane_taps[ky * kw * LANES..(ky + 1) * kw * LANES];
                for (x, t) in inputs.chunks_exact(LANES).zip(row_taps.chunks_exact(LANES)) {
                    add_lanes(&mut acc, x, t);
                }
            }
            sums.copy_from_slice(&acc);
        }
    }
}

/// `acc += x * t`, lane by lane: one vector multiply and add.
#[inline(always)]
fn add_lanes(acc: &mut [f32; LANES], x: &[f32], t: &[f32]) {
    for ((a, x), t) in acc.iter_mut().zip(x).zip(t) {
        *a += x * t;
    }
}

avx2_dispatch!(fn lanes(
    g: &Geometry,
    src: &[f32],
    taps: &[f32],
    bias: &[f32],
    act: Activation,
    scratch: &mut Vec<f32>,
    dst: &mut [MaybeUninit<f32>],
) -> () = lanes_body);

struct DepthwiseConv2d {
    stride: usize,
    padding: Padding,
    act: Activation,
}

impl DepthwiseConv2d {
    /// Batch, channels and the geometry of a call, once the shapes are checked.
    fn geometry(
        &self,
        input: &Layout,
        kernel: &Layout,
        bias: &Layout,
    ) -> candle_core::Result<(usize, usize, Geometry)> {
        let (n, c, h, w) = input.shape().dims4()?;
        let (kc, one, kh, kw) = kernel.shape().dims4()?;
        let biases = bias.shape().elem_count();
        if kc != c || one != 1 || biases != c {
            candle_core::bail!(
                "depthwise-conv2d: kernel {kc}x{one} and {biases} biases do not fit {c} channels"
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
        Ok((n, c, g))
    }
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
        let (n, c, g) = self.geometry(input_layout, kernel_layout, bias_layout)?;
        let (h, w, kh, kw) = (g.h, g.w, g.kh, g.kw);
        let plane_in = h * w;
        let plane_out = g.oh * g.ow;
        // LANES planes per task where they are narrow; as c is a multiple
        // of LANES then, a task's planes never straddle two images.
        let planes = if c.is_multiple_of(LANES) && g.w <= NARROW {
            LANES
        } else {
            1
        };
        // SAFETY: each task writes its planes' every output (both bodies do).
        let out = unsafe {
            super::filled(n * c * plane_out, |out| {
                (0..n * c / planes)
                    .into_par_iter()
                    .for_each_init(Vec::new, |scratch, task| {
                        let (first, ch) = (task * planes, (task * planes) % c);
                        let src = &x[first * plane_in..(first + planes) * plane_in];
                        let taps = &k[ch * kh * kw..(ch + planes) * kh * kw];
                        // SAFETY: this task's planes of the output, its alone.
                        let dst = out.part(first * plane_out, planes * plane_out);
                        if planes == LANES {
                            let bias = &b[ch..ch + LANES];
                            lanes(&g, src, taps, bias, self.act, scratch, dst);
                        } else {
                            plane(&g, src, taps, b[ch], self.act, scratch, dst);
                        }
                    });
            })
        };
        Ok((CpuStorage::F32(out), Shape::from((n, c, g.oh, g.ow))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        input: &candle_core::CudaStorage,
        input_layout: &Layout,
        kernel: &candle_core::CudaStorage,
        kernel_layout: &Layout,
        bias: &candle_core::CudaStorage,
        bias_layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (n, c, g) = self.geometry(input_layout, kernel_layout, bias_layout)?;
        let size = |v| super::kernel_u32(self.name(), v);
        let launch = cuda::Depthwise {
            outputs: n * c * g.oh * g.ow,
            planes: n * c,
            dims: [
                size(c)?,
                size(g.h)?,
                size(g.w)?,
                size(g.kh)?,
                size(g.kw)?,
                size(g.oh)?,
                size(g.ow)?,
                size(g.stride)?,
                size(g.padding.top)?,
                size(g.padding.left)?,
            ],
            act: self.act.cuda_code(),
        };
        let inputs = [
            (input, input_layout),
            (kernel, kernel_layout),
            (bias, bias_layout),
        ];
        let out = super::cuda::run(&launch, &inputs)?;
        Ok((out, Shape::from((n, c, g.oh, g.ow))))
    }
}

/// The launch of `depthwise_conv2d_<type>` in `cuda/ops.cu`.
#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::cuda_backend::cudarc::driver::{LaunchArgs, PushKernelArg};

    pub(super) struct Depthwise {
        pub outputs: usize,
        pub planes: usize,
        /// channels, h, w, kh, kw, oh, ow, stride, top and left padding:
        /// the kernel's parameters after `planes`, in order.
        pub dims: [u32; 10],
        pub act: i32,
    }

    impl super::super::cuda::FloatKernel for Depthwise {
        const NAME: &'static str = "depthwise_conv2d";

        fn outputs(&self) -> usize {
            self.outputs
        }

        fn push_scalars<'a>(&'a self, args: &mut LaunchArgs<'a>) {
            args.arg(&self.planes);
            for dim in &self.dims {
                args.arg(dim);
            }
            args.arg(&self.act);
        }
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
    if super::has_kernel(input) {
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

    /// The custom op must agree with candle's own grouped convolution, on
    /// both paths: 5 channels plane by plane, 16 in blocks of `LANES`
    /// where the planes are narrow.
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
            (30, 1),
            (31, 2),
        ] {
            for c in [5, 16] {
                let input = Tensor::randn(0f32, 1., (2, c, size, size + 1), &dev)?;
                let kernel = Tensor::randn(0f32, 1., (c, 1, 3, 3), &dev)?;
                let bias = Tensor::randn(0f32, 1., c, &dev)?;
                let pad = Padding::same(size, size + 1, 3, stride);
                for act in [Activation::None, Activation::Relu6] {
                    let ours = depthwise_conv2d(&input, &kernel, &bias, stride, pad, act)?;
                    let reference = input
                        .pad_with_zeros(2, pad.top, pad.bottom)?
                        .pad_with_zeros(3, pad.left, pad.right)?
                        .conv2d(&kernel, 0, stride, 1, c)?
                        .broadcast_add(&bias.reshape((1, c, 1, 1))?)?;
                    let reference = act.apply_tensor(reference)?;
                    assert_eq!(ours.dims(), reference.dims());
                    let diff = (ours - reference)?.abs()?.max_all()?.to_scalar::<f32>()?;
                    assert!(
                        diff < 1e-4,
                        "{c} channels, size {size} stride {stride}: {diff}"
                    );
                }
            }
        }
        Ok(())
    }

    /// Both paths add each output's taps in the same order (the lanes
    /// path adds zeros for the padding): equal values, checked without
    /// any tolerance, for every activation.
    #[test]
    fn lanes_and_planes_give_equal_values() {
        for (size, stride) in [(19, 1), (19, 2), (10, 1), (5, 2), (2, 2), (1, 1), (75, 2)] {
            let (h, w) = (size, size + 1);
            let padding = Padding::same(h, w, 3, stride);
            let g = Geometry {
                h,
                w,
                kh: 3,
                kw: 3,
                oh: out_size(h, padding.top + padding.bottom, 3, stride),
                ow: out_size(w, padding.left + padding.right, 3, stride),
                stride,
                padding,
            };
            let random = |len: usize| {
                let t = Tensor::randn(0f32, 1., len, &Device::Cpu).unwrap();
                t.to_vec1::<f32>().unwrap()
            };
            let (src, taps, bias) = (random(LANES * h * w), random(LANES * 9), random(LANES));
            for act in [Activation::None, Activation::Relu6, Activation::Silu] {
                let plane_out = g.oh * g.ow;
                let mut by_lanes = vec![MaybeUninit::new(f32::NAN); LANES * plane_out];
                lanes(&g, &src, &taps, &bias, act, &mut Vec::new(), &mut by_lanes);
                let mut by_planes = vec![MaybeUninit::new(f32::NAN); LANES * plane_out];
                for (lane, dst) in by_planes.chunks_exact_mut(plane_out).enumerate() {
                    let src = &src[lane * h * w..(lane + 1) * h * w];
                    let taps = &taps[lane * 9..(lane + 1) * 9];
                    plane(&g, src, taps, bias[lane], act, &mut Vec::new(), dst);
                }
                // SAFETY: both were initialised (to NaN) when made.
                let values = |v: &[MaybeUninit<f32>]| -> Vec<f32> {
                    v.iter().map(|x| unsafe { x.assume_init() }).collect()
                };
                assert_eq!(
                    values(&by_lanes),
                    values(&by_planes),
                    "size {size} stride {stride} {act:?}"
                );
            }
        }
    }

    #[test]
    fn same_padding_puts_the_extra_pixel_last() {
        assert_eq!(same_1d(300, 3, 2), (0, 1));
        assert_eq!(same_1d(75, 3, 2), (1, 1));
        assert_eq!(same_1d(19, 3, 1), (1, 1));
        assert_eq!(same_1d(2, 3, 2), (0, 1));
    }
}
