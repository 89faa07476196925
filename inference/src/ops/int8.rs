//! INT8 convolution: weights quantized per output channel (symmetric,
//! int8), activations per image and layer (asymmetric, uint8, range taken
//! from the data), products summed in int32 by AVX-512 VNNI's `vpdpbusd`
//! (64 multiply-adds per instruction, four times an f32 FMA) or, on CPUs
//! without AVX-512, AVX-VNNI's 256-bit `vpdpbusd` or AVX2's `vpmaddubsw`
//! (weights then get 7 bits: see [`Int8Kernel`]), then scaled back to f32
//! with the bias and activation as each micro-tile is written.
//! 3x3 stride-1 layers go through Winograd instead (`ops::winograd_int8`),
//! which shares this file's micro-kernel.
//!
//! Why our own kernel: candle's quantized matmul (Q8_0) serves LLM
//! matrix-vector products; on convolution-shaped products it measured 7-10x
//! slower than candle's f32 GEMM here (docs/benchmarks.md).

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{avx2_dispatch, conv_input, inside_columns, out_size, Activation, SharedMut};

/// Output channels per micro-tile (rows of the int32 result).
pub(super) const MR: usize = 8;
/// Output pixels per micro-tile: two 16-lane int32 vectors.
pub(super) const NR: usize = 32;
/// Columns per parallel task.
const TASK_COLUMNS: usize = 256;
/// Input values per parallel task when finding the range and quantizing.
const QUANTIZE_CHUNK: usize = 1 << 16;

/// Below this many taps per output (`C x K x K`), int8 is not worth its
/// loss of resolution. On YOLOv3-tiny's 3x3 layers
/// (`benches/benches/conv3x3.rs`), int8 Winograd ran 1.1-1.3x f32's
/// Winograd at 288 taps (32 channels), 1.0-2.2x at 576 and 1.4-3.7x from
/// 1152 up, but slower at 144, where quantizing also cost the model a
/// detection on the shared photos. From 288 up, the model's int8 still
/// finds all of f32's detections, its scores within 0.05.
pub const MIN_INT8_DEPTH: usize = 288;

/// Fewest input channels of a 1x1 layer run in int8. In int8, YOLOv3-tiny's
/// 1x1 layers (256 to 1024 channels, not yet those feeding a head) made
/// the model about 4% faster at batch 1, no slower at batch 4, and moved
/// no detection; YOLOv8n and YOLO11n gained 0-5%.
pub const MIN_INT8_POINTWISE: usize = 256;

/// Above this many taps per output the i32 sums of u8 x i8 products
/// (255 x 127 each) could overflow, and `vpdpbusd` would wrap silently:
/// such layers stay f32. No real detector comes near (YOLO's widest: 9216).
const MAX_INT8_DEPTH: usize = 65_536;

/// Whether a convolution with this many input channels and kernel size is
/// worth running in int8 (and safe to).
pub fn worth_quantizing(in_channels: usize, kernel: usize) -> bool {
    let depth = in_channels * kernel * kernel;
    let worth = depth >= MIN_INT8_DEPTH || (kernel == 1 && in_channels >= MIN_INT8_POINTWISE);
    worth && depth <= MAX_INT8_DEPTH
}

/// A dense convolution with int8 weights.
pub struct QuantizedConv {
    /// `[O padded to MR, K padded to 4]` int8, row-major.
    weight: Vec<i8>,
    /// Per output channel: f32 weight = int8 x scale.
    scales: Vec<f32>,
    /// Per output channel: sum of its int8 weights (for the zero point).
    row_sums: Vec<i32>,
    bias: Vec<f32>,
    out_channels: usize,
    in_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    act: Activation,
}

pub(super) fn padded(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// Quantizes one output channel's weights into `out` (symmetric int8, the
/// largest magnitude at the running kernel's `weight_limit`); returns the
/// f32 value of one step and the sum of the int8 weights (for the inputs'
/// zero point).
pub(super) fn quantize_row(row: &[f32], out: &mut [i8]) -> (f32, i32) {
    let limit = int8_kernel().weight_limit() as f32;
    let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
    let step = if max > 0.0 { max / limit } else { 1.0 };
    let mut sum = 0i32;
    for (q, v) in out.iter_mut().zip(row) {
        *q = (v / step).round().clamp(-limit, limit) as i8;
        sum += *q as i32;
    }
    (step, sum)
}

/// Calls `tile(scratch, rb, col)` for every micro-tile of an
/// `out_channels` x `columns` product (`columns` a multiple of `NR`), in
/// parallel tasks of one row block and up to `task_columns` columns, so
/// that a task's weights stay in cache across its columns. `scratch` comes
/// from `init`, one per task thread.
pub(super) fn for_each_micro_tile<S>(
    out_channels: usize,
    columns: usize,
    task_columns: usize,
    init: impl Fn() -> S + Sync + Send,
    tile: impl Fn(&mut S, usize, usize) + Sync + Send,
) {
    let chunks = columns.div_ceil(task_columns);
    (0..padded(out_channels, MR) / MR * chunks)
        .into_par_iter()
        .for_each_init(init, |scratch, task| {
            let (rb, chunk) = (task / chunks, task % chunks);
            let end = ((chunk + 1) * task_columns).min(columns);
            for col in (chunk * task_columns..end).step_by(NR) {
                tile(scratch, rb, col);
            }
        });
}

impl QuantizedConv {
    /// Quantizes `weight` `[O, C, K, K]` (f32) per output channel.
    pub fn new(
        weight: &Tensor,
        bias: &Tensor,
        stride: usize,
        padding: usize,
        act: Activation,
    ) -> candle_core::Result<Self> {
        let (o, c, k, _) = weight.dims4()?;
        let depth = c * k * k;
        let depth4 = padded(depth, 4);
        let rows = weight
            .to_dtype(candle_core::DType::F32)?
            .reshape((o, depth))?
            .to_vec2::<f32>()?;
        let mut q = vec![0i8; padded(o, MR) * depth4];
        let mut scales = vec![0f32; o];
        let mut row_sums = vec![0i32; padded(o, MR)];
        for (oc, row) in rows.iter().enumerate() {
            (scales[oc], row_sums[oc]) = quantize_row(row, &mut q[oc * depth4..][..depth]);
        }
        Ok(Self {
            weight: q,
            scales,
            row_sums,
            bias: bias.to_dtype(candle_core::DType::F32)?.to_vec1()?,
            out_channels: o,
            in_channels: c,
            kernel: k,
            stride,
            padding,
            act,
        })
    }

    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.contiguous()?.apply_op1_no_bwd(self)
    }

    /// Output channels `rb * MR..+MR` of columns `col..col + NR` (those
    /// that are pixels, of one image or more): the int32 sums back in f32,
    /// each column with its image's scale and zero point, with bias and
    /// activation, written straight to the output.
    #[inline(always)]
    fn output_tile(&self, pass: &OutputPass, rb: usize, col: usize) {
        let depth4 = padded(self.in_channels * self.kernel * self.kernel, 4);
        let mut acc = [0i32; MR * NR];
        // SAFETY: `acc` holds MR rows of NR; the panel holds NR columns.
        unsafe {
            micro_tile(
                &self.weight[rb * MR * depth4..][..MR * depth4],
                &pass.patches[col * depth4..][..NR * depth4],
                depth4,
                acc.as_mut_ptr(),
                NR,
            )
        };
        let count = pass.pixels.saturating_sub(col).min(NR);
        let rows = MR.min(self.out_channels.saturating_sub(rb * MR));
        let x_scales: &[f32; NR] = pass.x_scales[col..][..NR].try_into().expect("NR");
        let zeros: &[i32; NR] = pass.zeros[col..][..NR].try_into().expect("NR");
        for (r, sums) in acc.chunks_exact(NR).enumerate().take(rows) {
            let oc = rb * MR + r;
            let (scale, row_sum, bias) = (self.scales[oc], self.row_sums[oc], self.bias[oc]);
            let mut values = [0f32; NR];
            for (((v, s), x_scale), zero) in values.iter_mut().zip(sums).zip(x_scales).zip(zeros) {
                *v = (s - zero * row_sum) as f32 * (scale * x_scale) + bias;
            }
            self.act.apply_inline(&mut values);
            // Runs of columns within one image: one stretch of its plane.
            let mut j = 0;
            while j < count {
                let (image, pixel) = ((col + j) / pass.plane, (col + j) % pass.plane);
                let run = (pass.plane - pixel).min(count - j);
                let at = (image * self.out_channels + oc) * pass.plane + pixel;
                // SAFETY: these pixels of channel oc: this task's alone.
                let dst = unsafe { pass.out.part(at, run) };
                for (d, v) in dst.iter_mut().zip(&values[j..j + run]) {
                    d.write(*v);
                }
                j += run;
            }
        }
    }
}

/// What the products and their write-back read, and where they write.
struct OutputPass<'a> {
    /// In panels of `NR` columns.
    patches: &'a [u8],
    /// Output pixels per channel of one image.
    plane: usize,
    /// Columns that are pixels (of all images).
    pixels: usize,
    /// Per column: its image's activation scale and zero point.
    x_scales: Vec<f32>,
    zeros: Vec<i32>,
    /// The output, `[N, O, plane]`.
    out: SharedMut,
}

avx2_dispatch!(fn output_tile(conv: &QuantizedConv, pass: &OutputPass, rb: usize, col: usize) -> () = QuantizedConv::output_tile);

/// The nearest integer to `v` (within ±2^22), as its low byte. Adding
/// 1.5 x 2^23 rounds (ties to even) and leaves the integer in the low
/// mantissa bits: no libm `roundf` call, and no saturating float-to-int
/// conversion, either of which kept the loops around it from vectorising.
#[inline(always)]
pub(super) fn nearest_byte(v: f32) -> u8 {
    const MAGIC: f32 = 12_582_912.0;
    (v + MAGIC).to_bits() as u8
}

/// The smallest and largest of `values`, both taken with 0 (so that 0 is
/// always inside the range), in eight independent lanes so the loop
/// vectorises.
#[inline(always)]
pub(super) fn range_with_zero(values: &[f32]) -> (f32, f32) {
    let (mut lo, mut hi) = ([0f32; 8], [0f32; 8]);
    let chunks = values.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        // Comparisons, not `f32::min`/`max`, whose NaN handling kept
        // this from becoming vector min/max instructions.
        for ((lo, hi), v) in lo.iter_mut().zip(hi.iter_mut()).zip(chunk) {
            *lo = if *v < *lo { *v } else { *lo };
            *hi = if *v > *hi { *v } else { *hi };
        }
    }
    let lo = rest.iter().chain(&lo).fold(0f32, |m, v| m.min(*v));
    let hi = rest.iter().chain(&hi).fold(0f32, |m, v| m.max(*v));
    (lo, hi)
}

avx2_dispatch!(fn image_range(values: &[f32]) -> (f32, f32) = range_with_zero);

/// `values` as uint8 steps of `x_scale` above `zero`, clamped to 0..=255.
#[inline(always)]
fn quantize_body(values: &[f32], x_scale: f32, zero: u8, out: &mut [u8]) {
    let (inverse, zero) = (1.0 / x_scale, zero as f32);
    for (q, v) in out.iter_mut().zip(values) {
        *q = nearest_byte((v * inverse + zero).clamp(0.0, 255.0));
    }
}

avx2_dispatch!(fn quantize(values: &[f32], x_scale: f32, zero: u8, out: &mut [u8]) -> () = quantize_body);

/// An image's activation scale and zero point: its range, zero always
/// inside it, in 255 steps.
fn quantizer(image: &[f32]) -> (f32, u8) {
    let (lo, hi) = image
        .par_chunks(QUANTIZE_CHUNK)
        .map(image_range)
        .reduce(|| (0f32, 0f32), |a, b| (a.0.min(b.0), a.1.max(b.1)));
    let x_scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
    (x_scale, nearest_byte((-lo / x_scale).clamp(0.0, 255.0)))
}

impl CustomOp1 for QuantizedConv {
    fn name(&self) -> &'static str {
        "int8-conv"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, (n, c, h, w)) = conv_input(self.name(), storage, layout, self.in_channels)?;
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        if h + 2 * p < k || w + 2 * p < k {
            candle_core::bail!("int8 conv: a {k}x{k} kernel does not fit a {h}x{w} input")
        }
        let oh = out_size(h, 2 * p, k, s);
        let ow = out_size(w, 2 * p, k, s);
        let plane = oh * ow;
        let o = self.out_channels;
        // All images side by side in one product, so that one pass over
        // the weights serves the batch; each keeps its own scale.
        let columns = padded(n * plane, NR);
        let images: Vec<&[f32]> = x.chunks_exact(c * h * w).collect();
        let quantizers: Vec<(f32, u8)> = images.par_iter().map(|image| quantizer(image)).collect();
        let mut quantized = vec![0u8; n * c * h * w];
        quantized
            .par_chunks_mut(c * h * w)
            .zip(&images)
            .zip(&quantizers)
            .for_each(|((q, image), &(x_scale, zero))| {
                q.par_chunks_mut(QUANTIZE_CHUNK)
                    .zip(image.par_chunks(QUANTIZE_CHUNK))
                    .for_each(|(q, v)| quantize(v, x_scale, zero, q));
            });
        let zero_points: Vec<u8> = quantizers.iter().map(|q| q.1).collect();
        let patches = self.patches(&quantized, &zero_points, h, w, oh, ow, columns);
        let (mut x_scales, mut zeros) = (vec![1f32; columns], vec![0i32; columns]);
        for (image, &(x_scale, zero)) in quantizers.iter().enumerate() {
            x_scales[image * plane..][..plane].fill(x_scale);
            zeros[image * plane..][..plane].fill(zero as i32);
        }
        // SAFETY: every image's every output channel and pixel is written
        // by one `output_tile`.
        let out = unsafe {
            super::filled(n * o * plane, |out| {
                let pass = OutputPass {
                    patches: &patches,
                    plane,
                    pixels: n * plane,
                    x_scales,
                    zeros,
                    out,
                };
                for_each_micro_tile(
                    o,
                    columns,
                    TASK_COLUMNS,
                    || (),
                    |_, rb, col| output_tile(self, &pass, rb, col),
                );
            })
        };
        Ok((CpuStorage::F32(out), Shape::from((n, o, oh, ow))))
    }
}

impl QuantizedConv {
    /// Packs the uint8 patches of every image (`images`, each with its
    /// zero point) as `[columns / NR][K/4][NR][4]`: for each panel of `NR`
    /// output pixels (what one micro-tile reads, in one stretch), the 4
    /// consecutive taps `vpdpbusd` sums, for each pixel, the images one
    /// after another. Padding (outside the image, or past the last tap)
    /// holds the image's zero point, which stands for 0.0.
    #[allow(clippy::too_many_arguments)]
    fn patches(
        &self,
        images: &[u8],
        zero_points: &[u8],
        h: usize,
        w: usize,
        oh: usize,
        ow: usize,
        columns: usize,
    ) -> Vec<u8> {
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        let depth = self.in_channels * k * k;
        let depth4 = padded(depth, 4);
        let image_len = self.in_channels * h * w;
        let groups = depth4 / 4;
        let mut packed = vec![0u8; depth4 * columns];
        let panels = SharedMut(packed.as_mut_ptr());
        // Each group's row is built whole, then split into the panels.
        (0..groups).into_par_iter().for_each_init(
            || vec![0u8; columns * 4],
            |row, group| {
                let dst = &mut row[..];
                // The (up to) four taps this group interleaves.
                let taps: Vec<(usize, usize, usize)> = (group * 4..(group * 4 + 4).min(depth))
                    .map(|r| (r / (k * k), (r / k) % k, r % k))
                    .collect();
                // Output columns where every tap's x lies inside the image.
                let (first, end) = taps.iter().fold((0, ow), |(f, e), &(_, _, kx)| {
                    let (tf, te) = inside_columns(kx, s, p, w, ow);
                    (f.max(tf), e.min(te.max(tf)))
                });
                for (index, &zero) in zero_points.iter().enumerate() {
                    let image = &images[index * image_len..][..image_len];
                    let dst = &mut dst[index * oh * ow * 4..][..oh * ow * 4];
                    // Rows above or below the image, and missing taps of the
                    // last group, read the zero point.
                    let blank = vec![zero; w];
                    let mut rows: [&[u8]; 4] = [&blank; 4];
                    let mut kxs = [p; 4];
                    for oy in 0..oh {
                        for (lane, &(ch, ky, kx)) in taps.iter().enumerate() {
                            let iy = (oy * s + ky) as isize - p as isize;
                            kxs[lane] = kx;
                            rows[lane] = if iy >= 0 && iy < h as isize {
                                let start = ch * h * w + iy as usize * w;
                                &image[start..start + w]
                            } else {
                                &blank
                            };
                        }
                        let out = &mut dst[oy * ow * 4..(oy + 1) * ow * 4];
                        let pixel = |ox: usize, lane: usize| -> u8 {
                            let ix = (ox * s + kxs[lane]) as isize - p as isize;
                            if ix >= 0 && (ix as usize) < w {
                                rows[lane][ix as usize]
                            } else {
                                zero
                            }
                        };
                        // Borders, tap by tap.
                        for ox in (0..first.min(ow)).chain(end.max(first)..ow) {
                            for lane in 0..4 {
                                out[ox * 4 + lane] = pixel(ox, lane);
                            }
                        }
                        // Interior: the four taps of a pixel written as one word.
                        let count = end.saturating_sub(first);
                        if count == 0 {
                            continue;
                        }
                        let span = (count - 1) * s + 1;
                        let src: [&[u8]; 4] = std::array::from_fn(|lane| {
                            let base = first * s + kxs[lane] - p;
                            &rows[lane][base..base + span]
                        });
                        let cells = out[first * 4..end * 4].chunks_exact_mut(4);
                        if s == 1 {
                            // Four streams interleaved, no index arithmetic: vectorises.
                            let lanes = src[0].iter().zip(src[1]).zip(src[2]).zip(src[3]);
                            for (cell, (((a, b), c), d)) in cells.zip(lanes) {
                                cell.copy_from_slice(&[*a, *b, *c, *d]);
                            }
                        } else {
                            for (i, cell) in cells.enumerate() {
                                let x = i * s;
                                cell.copy_from_slice(&[src[0][x], src[1][x], src[2][x], src[3][x]]);
                            }
                        }
                    }
                }
                for (panel, words) in row.chunks_exact(NR * 4).enumerate() {
                    // SAFETY: this group's words of the panel: this task's alone.
                    let dst = unsafe { panels.part((panel * groups + group) * NR * 4, NR * 4) };
                    for (d, v) in dst.iter_mut().zip(words) {
                        d.write(*v);
                    }
                }
            },
        );
        packed
    }
}

/// `MR` rows x `NR` columns of the product `weights` (`MR` rows of
/// `depth4`) x `panel` (`[depth4 / 4][NR][4]`, one panel of the packed
/// inputs); written to `out`, `MR` rows of `NR` i32s `out_stride` apart.
/// The weights must lie within the kernel's `weight_limit`.
///
/// # Safety
/// `out` must be valid for those writes, and no other thread may touch
/// them; `panel` must hold `depth4 * NR` bytes.
pub(super) unsafe fn micro_tile(
    weights: &[i8],
    panel: &[u8],
    depth4: usize,
    out: *mut i32,
    out_stride: usize,
) {
    (int8_kernel().micro_tile())(weights, panel, depth4, out, out_stride)
}

/// A kernel's [`micro_tile`].
type MicroTile = unsafe fn(&[i8], &[u8], usize, *mut i32, usize);

/// The portable version: the same sums in plain loops over fixed-size
/// tiles, which the compiler vectorises with whatever the target offers.
unsafe fn micro_tile_scalar(
    weights: &[i8],
    panel: &[u8],
    depth4: usize,
    out: *mut i32,
    out_stride: usize,
) {
    let mut acc = [[0i32; NR]; MR];
    for g in 0..depth4 / 4 {
        let b: &[u8] = &panel[g * NR * 4..(g + 1) * NR * 4];
        for (r, row) in acc.iter_mut().enumerate() {
            let w = &weights[r * depth4 + g * 4..r * depth4 + g * 4 + 4];
            let (w0, w1, w2, w3) = (w[0] as i32, w[1] as i32, w[2] as i32, w[3] as i32);
            for (j, a) in row.iter_mut().enumerate() {
                let p = &b[j * 4..j * 4 + 4];
                *a += w0 * p[0] as i32 + w1 * p[1] as i32 + w2 * p[2] as i32 + w3 * p[3] as i32;
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        std::ptr::copy_nonoverlapping(row.as_ptr(), out.add(r * out_stride), NR);
    }
}

/// The int8 dot-product kernel a process runs, picked once (the weights
/// are quantized for it when a model loads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int8Kernel {
    /// AVX-512 VNNI's `vpdpbusd`: 64 multiply-adds per instruction.
    Vnni,
    /// AVX-VNNI's `vpdpbusd` on 256 bits, 32 multiply-adds per
    /// instruction: Intel from Alder Lake (Core 12th generation, N100) on,
    /// AMD from Zen 5, without AVX-512.
    AvxVnni,
    /// AVX2's `vpmaddubsw`, `vpmaddwd` and `vpaddd`: 32 multiply-adds per
    /// three instructions, on x86-64 CPUs without either VNNI (Intel Core
    /// before Ice Lake, older Atoms, AMD before Zen 4).
    Avx2,
    /// Plain loops; far slower than f32, for checking the others.
    Portable,
}

impl Int8Kernel {
    /// The largest int8 weight the kernel sums exactly. `vpmaddubsw` adds
    /// two uint8 x int8 products in a saturating int16: 2 x 255 x 63 fits,
    /// 2 x 255 x 127 does not, so AVX2 gives weights 7 bits.
    pub fn weight_limit(self) -> i8 {
        match self {
            Int8Kernel::Avx2 => 63,
            Int8Kernel::Vnni | Int8Kernel::AvxVnni | Int8Kernel::Portable => 127,
        }
    }

    /// Its [`micro_tile`]; the CPU must run the kernel.
    fn micro_tile(self) -> MicroTile {
        match self {
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::Vnni => vnni::micro_tile,
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::AvxVnni => ymm::avx_vnni,
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::Avx2 => ymm::avx2,
            _ => micro_tile_scalar,
        }
    }

    /// Whether int8 is faster than f32 with this kernel.
    pub fn is_fast(self) -> bool {
        self != Int8Kernel::Portable
    }

    /// The fastest kernel this CPU runs.
    pub fn best() -> Self {
        Self::supported()[0]
    }

    /// The kernels this CPU runs, fastest first.
    pub fn supported() -> Vec<Self> {
        let mut kernels = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512vnni")
                && std::arch::is_x86_feature_detected!("avx512f")
            {
                kernels.push(Int8Kernel::Vnni);
            }
            if std::arch::is_x86_feature_detected!("avxvnni")
                && std::arch::is_x86_feature_detected!("avx2")
            {
                kernels.push(Int8Kernel::AvxVnni);
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                kernels.push(Int8Kernel::Avx2);
            }
        }
        kernels.push(Int8Kernel::Portable);
        kernels
    }

    /// Its name in `VIGIL_INT8_KERNEL`, the stats and the logs.
    pub fn name(self) -> &'static str {
        match self {
            Int8Kernel::Vnni => "vnni",
            Int8Kernel::AvxVnni => "avxvnni",
            Int8Kernel::Avx2 => "avx2",
            Int8Kernel::Portable => "portable",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        [
            Int8Kernel::Vnni,
            Int8Kernel::AvxVnni,
            Int8Kernel::Avx2,
            Int8Kernel::Portable,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }
}

/// The kernel this process runs: the CPU's best, or the one
/// `VIGIL_INT8_KERNEL` (`vnni`, `avxvnni`, `avx2` or `portable`) names, for measuring
/// and testing a slower one on a fast CPU.
pub fn int8_kernel() -> Int8Kernel {
    static KERNEL: std::sync::OnceLock<Int8Kernel> = std::sync::OnceLock::new();
    *KERNEL.get_or_init(|| {
        let Some(name) = std::env::var_os("VIGIL_INT8_KERNEL") else {
            return Int8Kernel::best();
        };
        let name = name.to_string_lossy();
        match Int8Kernel::parse(&name) {
            Some(kernel) if Int8Kernel::supported().contains(&kernel) => kernel,
            _ => {
                let best = Int8Kernel::best();
                tracing::warn!(requested = %name, using = ?best, "VIGIL_INT8_KERNEL: not a kernel this CPU runs");
                best
            }
        }
    })
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    use super::{MR, NR};

    #[target_feature(enable = "avx512f,avx512vnni")]
    pub(super) unsafe fn micro_tile(
        weights: &[i8],
        panel: &[u8],
        depth4: usize,
        out: *mut i32,
        out_stride: usize,
    ) {
        let mut acc = [[_mm512_setzero_si512(); 2]; MR];
        let b_base = panel.as_ptr();
        let w_base = weights.as_ptr();
        for g in 0..depth4 / 4 {
            let b = b_base.add(g * NR * 4);
            let b0 = _mm512_loadu_si512(b as *const _);
            let b1 = _mm512_loadu_si512(b.add(64) as *const _);
            for (r, lanes) in acc.iter_mut().enumerate() {
                let four = (w_base.add(r * depth4 + g * 4) as *const i32).read_unaligned();
                let a = _mm512_set1_epi32(four);
                lanes[0] = _mm512_dpbusd_epi32(lanes[0], b0, a);
                lanes[1] = _mm512_dpbusd_epi32(lanes[1], b1, a);
            }
        }
        for (r, lanes) in acc.iter().enumerate() {
            let dst = out.add(r * out_stride);
            _mm512_storeu_si512(dst as *mut _, lanes[0]);
            _mm512_storeu_si512(dst.add(16) as *mut _, lanes[1]);
        }
    }
}

/// The 256-bit kernels: one loop, written once, around each CPU's
/// multiply-add of four uint8 x int8 pairs into an int32 lane.
#[cfg(target_arch = "x86_64")]
mod ymm {
    use std::arch::x86_64::*;

    use super::{MR, NR};

    /// Rows and 8-column vectors per pass: 8 accumulators, with the two
    /// input vectors, the weights and the temporaries, fit the 16 ymm
    /// registers.
    const ROWS: usize = 4;
    const VECTORS: usize = 2;

    /// Defines `$name`, the micro-tile product in `MR / ROWS` x
    /// `NR / (8 * VECTORS)` passes, with `$madd(sums, inputs, weights)`
    /// adding each lane's four products to its sum.
    macro_rules! ymm_micro_tile {
        ($(#[$doc:meta])* $name:ident, $features:literal, $madd:expr) => {
            $(#[$doc])*
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name(
                weights: &[i8],
                panel: &[u8],
                depth4: usize,
                out: *mut i32,
                out_stride: usize,
            ) {
                let b_base = panel.as_ptr();
                let w_base = weights.as_ptr();
                for first_row in (0..MR).step_by(ROWS) {
                    for first_col in (0..NR).step_by(8 * VECTORS) {
                        let mut acc = [[_mm256_setzero_si256(); VECTORS]; ROWS];
                        for g in 0..depth4 / 4 {
                            let b = b_base.add((g * NR + first_col) * 4);
                            let mut inputs = [_mm256_setzero_si256(); VECTORS];
                            for (v, input) in inputs.iter_mut().enumerate() {
                                *input = _mm256_loadu_si256(b.add(32 * v) as *const _);
                            }
                            for (r, lanes) in acc.iter_mut().enumerate() {
                                let w = w_base.add((first_row + r) * depth4 + g * 4);
                                let a = _mm256_set1_epi32((w as *const i32).read_unaligned());
                                for (lane, input) in lanes.iter_mut().zip(&inputs) {
                                    *lane = $madd(*lane, *input, a);
                                }
                            }
                        }
                        for (r, lanes) in acc.iter().enumerate() {
                            let dst = out.add((first_row + r) * out_stride + first_col);
                            for (v, lane) in lanes.iter().enumerate() {
                                _mm256_storeu_si256(dst.add(8 * v) as *mut _, *lane);
                            }
                        }
                    }
                }
            }
        };
    }

    /// `vpmaddubsw` adds pairs of uint8 x int8 products into int16 (exact
    /// for weights within ±63), `vpmaddwd` by ones adds those pairs into
    /// int32.
    #[inline(always)]
    unsafe fn maddubs(sums: __m256i, inputs: __m256i, weights: __m256i) -> __m256i {
        let pairs = _mm256_maddubs_epi16(inputs, weights);
        _mm256_add_epi32(sums, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
    }

    ymm_micro_tile!(avx2, "avx2", maddubs);

    ymm_micro_tile!(
        /// AVX-VNNI's `vpdpbusd` (VEX-encoded; Alder Lake and later, Zen 5).
        avx_vnni,
        "avx2,avxvnni",
        _mm256_dpbusd_avx_epi32
    );

    ymm_micro_tile!(
        /// The same loop with the EVEX-encoded `vpdpbusd` of AVX-512 VNNI,
        /// which computes what AVX-VNNI's does: how the loop around it is
        /// tested on a CPU without AVX-VNNI.
        #[cfg(test)]
        avx512_vnni_ymm,
        "avx2,avx512vl,avx512vnni",
        _mm256_dpbusd_epi32
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn layers_too_deep_for_exact_i32_sums_stay_f32() {
        assert!(worth_quantizing(1024, 3), "YOLO's widest 3x3");
        assert!(worth_quantizing(65_536, 1));
        // 255 x 127 x 66_400 > 2^31: these could wrap.
        assert!(!worth_quantizing(66_400, 1));
        assert!(!worth_quantizing(8_192, 3));
        assert!(!worth_quantizing(16, 3), "too shallow to pay");
    }

    /// Close to the f32 convolution (quantization error only).
    #[test]
    fn close_to_f32() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        // 3x3 and 1x1, stride 1 and 2, tap counts not a multiple of 4.
        for (c, k, stride, padding, h, w) in [
            (6, 3, 1, 1, 11, 9),
            (5, 3, 2, 1, 12, 13),
            (7, 1, 1, 0, 5, 8),
            (3, 3, 2, 0, 9, 9),
        ] {
            // Three images in one product, ranges 1, 10 and 19 (shifted
            // up, so zero points differ too): each keeps its own scale.
            let x = Tensor::randn(0f32, 1., (3, c, h, w), &dev)?;
            let ranges = Tensor::new(&[1f32, 10.0, 19.0], &dev)?.reshape((3, 1, 1, 1))?;
            let x = x
                .broadcast_mul(&ranges)?
                .broadcast_add(&ranges.affine(0.5, 0.0)?)?;
            let wt = Tensor::randn(0f32, 0.2, (10, c, k, k), &dev)?;
            let b = Tensor::randn(0f32, 0.1, 10, &dev)?;
            let q = QuantizedConv::new(&wt, &b, stride, padding, Activation::None)?;
            let ours = q.forward(&x)?;
            let reference =
                crate::ops::reference_conv(&x, &wt, &b, stride, padding, Activation::None)?;
            assert_eq!(ours.dims(), reference.dims());
            for image in 0..3 {
                let (ours, reference) = (ours.get(image)?, reference.get(image)?);
                let err = (&ours - &reference)?.abs()?.max_all()?.to_scalar::<f32>()?;
                let range = reference.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(
                    err < 0.03 * range,
                    "c{c} k{k} s{stride} image {image}: error {err} of range {range}"
                );
            }
        }
        // A kernel larger than the padded input is an error, not a panic.
        let big = QuantizedConv::new(
            &Tensor::ones((2, 3, 5, 5), candle_core::DType::F32, &dev)?,
            &Tensor::zeros(2, candle_core::DType::F32, &dev)?,
            1,
            0,
            Activation::None,
        )?;
        assert!(big
            .forward(&Tensor::ones((1, 3, 2, 2), candle_core::DType::F32, &dev)?)
            .is_err());

        Ok(())
    }

    /// A panel's product by `tile`, written `2 * NR` apart from column
    /// `NR` on (so that the kernel must keep to `out_stride`).
    fn product(tile: MicroTile, weights: &[i8], panel: &[u8], depth4: usize) -> Vec<i32> {
        let mut out = vec![0i32; MR * 2 * NR];
        // SAFETY: `out` holds MR rows of 2 * NR; `panel` holds depth4 * NR bytes.
        unsafe { tile(weights, panel, depth4, out.as_mut_ptr().add(NR), 2 * NR) };
        out
    }

    /// Every kernel this CPU runs gives exactly the portable kernel's sums,
    /// with weights at its limit and inputs at 255 (where AVX2's 16-bit
    /// pair sums would saturate if the limit were wrong).
    #[test]
    fn kernels_sum_exactly() {
        let depth4 = 76;
        let mut seed = 12345u32;
        let mut next = move || {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            seed >> 8
        };
        for kernel in Int8Kernel::supported() {
            let limit = kernel.weight_limit() as i32;
            let mut weights: Vec<i8> = (0..MR * depth4)
                .map(|_| (next() as i32 % (2 * limit + 1) - limit) as i8)
                .collect();
            let mut panel: Vec<u8> = (0..depth4 * NR).map(|_| next() as u8).collect();
            // Row 0 all at +limit, row 1 all at -limit, over inputs of 255
            // in column 0.
            weights[..depth4].fill(limit as i8);
            weights[depth4..2 * depth4].fill(-limit as i8);
            for group in panel.chunks_exact_mut(NR * 4) {
                group[..4].fill(255);
            }
            let fast = product(kernel.micro_tile(), &weights, &panel, depth4);
            let slow = product(micro_tile_scalar, &weights, &panel, depth4);
            assert_eq!(fast, slow, "{kernel:?}");
            assert_eq!(slow[NR], 255 * limit * depth4 as i32, "{kernel:?}");
        }
    }

    /// The AVX-VNNI kernel's loop, run with AVX-512 VNNI's 256-bit
    /// `vpdpbusd` (the same operation) where the CPU has that and not
    /// AVX-VNNI: the same sums as the portable kernel, at full 8-bit weights.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx_vnni_loop_sums_exactly() {
        if !(std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512vnni"))
        {
            return;
        }
        let depth4 = 76;
        let weights: Vec<i8> = (0..MR * depth4).map(|i| (i * 89 % 255) as i8).collect();
        let panel: Vec<u8> = (0..depth4 * NR).map(|i| (i * 37 % 256) as u8).collect();
        let fast = product(ymm::avx512_vnni_ymm, &weights, &panel, depth4);
        let slow = product(micro_tile_scalar, &weights, &panel, depth4);
        assert_eq!(fast, slow);
    }
}
