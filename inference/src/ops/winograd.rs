//! 3x3 stride-1 convolution by Winograd's minimal filtering, F(4x4, 3x3).
//!
//! A plain convolution spends 9 multiply-adds per output pixel and channel
//! pair; F(4x4, 3x3) turns each 6x6 input tile and each 3x3 kernel into
//! 6x6 transformed tiles whose element-wise product, transformed back,
//! is a 4x4 block of output: 36 multiply-adds for 16 pixels, 2.25 each,
//! a quarter of the direct count. Summed over input channels, the
//! element-wise products are 36 independent matrix products
//! `U[p] (O x C) x V[p] (C x tiles)`, run by `gemm`. This is how OpenCV DNN
//! runs the 3x3 layers that dominate YOLO models (Lavin and Gray, "Fast
//! Algorithms for Convolutional Neural Networks", 2015).
//!
//! The kernels are transformed once, when the model loads (4x their
//! size). Tiles are transformed `LANES` at a time so the arithmetic runs
//! in vector registers; bias and activation are applied as each output
//! block is written. The transforms' rounding error reaches about 2e-5 of
//! the layer's scale (the tests bound it); detections do not move
//! (`tests/yolov3_tiny_reference.rs`, `tests/precision_agreement.rs`).

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use super::maxpool::window_max;
use super::{conv_input, Activation, SharedMut};

/// Side of an input tile.
const ALPHA: usize = 6;
/// Side of the output block one tile gives.
const BLOCK: usize = 4;
/// Points of a transformed tile: one matrix product each.
const POINTS: usize = ALPHA * ALPHA;
/// Tiles transformed together, one per vector lane.
const LANES: usize = 8;
/// Scratch aimed for per batch of tiles, in floats (about 4 MiB): enough
/// tiles for the products to run at full speed, few enough to stay in cache.
const BATCH_FLOATS: usize = 1 << 20;
/// Fewest tiles per batch: fewer leave the products' micro-kernels idle.
const MIN_BATCH_TILES: usize = 64;

type Lanes = [f32; LANES];

thread_local! {
    /// The transformed tiles and products of the calling thread's last
    /// call, kept for the next: zeroing and faulting in megabytes of fresh
    /// scratch on every layer cost more than some layers' arithmetic.
    /// Bounded by the batch size rule (`batch_tiles`), whatever the input.
    static SCRATCH: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// A 3x3 convolution with stride 1, padding 1, bias and activation, its
/// kernels already in the Winograd domain.
pub struct WinogradConv {
    /// `[POINTS, O, C]`: `G g Gᵀ` of every kernel, point-major so each
    /// point's matrix is contiguous.
    kernels: Vec<f32>,
    bias: Vec<f32>,
    out_channels: usize,
    in_channels: usize,
    act: Activation,
}

/// Fewer input channels than this and the transforms cost more than the
/// products save (the stem's 3 channels ran at 0.6x); YOLOv3-tiny's
/// 16-channel layer at 208x208 ran 1.0-1.2x the GEMM convolution's speed
/// through Winograd, its deeper ones 1.5-2.3x (`benches/benches/conv3x3.rs`).
pub const MIN_CHANNELS: usize = 16;

/// Whether a convolution with this shape runs faster through Winograd:
/// one it `fits`, with enough input channels.
pub fn worth_it(in_channels: usize, kernel: usize, stride: usize, padding: usize) -> bool {
    fits(kernel, stride, padding) && in_channels >= MIN_CHANNELS
}

/// Whether Winograd's 3x3 algorithms compute this convolution: 3x3
/// kernels, stride 1, the input padded by one on every side.
pub fn fits(kernel: usize, stride: usize, padding: usize) -> bool {
    kernel == 3 && stride == 1 && padding == 1
}

impl WinogradConv {
    /// Transforms `weight` `[O, C, 3, 3]` (f32) and keeps `bias` `[O]`.
    pub fn new(weight: &Tensor, bias: &Tensor, act: Activation) -> candle_core::Result<Self> {
        // G of F(4, 3) with interpolation points 0, ±1, ±2 and infinity.
        const G: [[f64; 3]; ALPHA] = [
            [1.0 / 4.0, 0.0, 0.0],
            [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
            [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
            [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
            [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
            [0.0, 0.0, 1.0],
        ];
        let (kernels, o, c) = transformed_kernels("winograd conv", weight, bias, &G)?;
        Ok(Self {
            kernels,
            bias: bias.to_dtype(candle_core::DType::F32)?.to_vec1()?,
            out_channels: o,
            in_channels: c,
            act,
        })
    }

    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let op = WinogradOp {
            conv: self,
            pool: false,
        };
        super::run_conv_op(x, &op, false)
    }

    /// The convolution followed by a 2x2 max pool with stride 2, pooled
    /// as each block is written: a quarter of the output to write, and no
    /// pass over the full-size map. `x`'s sides must be even.
    pub fn forward_max_pooled(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let op = WinogradOp {
            conv: self,
            pool: true,
        };
        super::run_conv_op(x, &op, true)
    }
}

/// One call's op: the convolution, and whether a 2x2 max pool follows.
struct WinogradOp<'a> {
    conv: &'a WinogradConv,
    pool: bool,
}

/// Where a call's output goes.
#[derive(Clone, Copy)]
struct Output {
    /// `[N, O, H, W]`, or `[N, O, H / 2, W / 2]` with `pool`.
    data: SharedMut,
    pool: bool,
}

/// `G g Gᵀ` of every 3x3 kernel of `weight` `[O, C, 3, 3]`, point-major
/// (`[A²][O][C]`, so each point's matrix is contiguous), with O and C;
/// `G` picks the algorithm (`A` = its rows). In f64, so the only rounding
/// is the final one. Checks that `bias` has O values.
pub(super) fn transformed_kernels<const A: usize>(
    op: &str,
    weight: &Tensor,
    bias: &Tensor,
    g_matrix: &[[f64; 3]; A],
) -> candle_core::Result<(Vec<f32>, usize, usize)> {
    let (o, c, k, k2) = weight.dims4()?;
    if k != 3 || k2 != 3 || bias.dims1()? != o {
        candle_core::bail!("{op}: needs [O, C, 3, 3] kernels and O biases")
    }
    let weight = weight
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let mut kernels = vec![0f32; A * A * o * c];
    for (pair, g) in weight.chunks_exact(9).enumerate() {
        let mut gg = [[0f64; 3]; A]; // G g
        for (i, row) in gg.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = (0..3).map(|k| g_matrix[i][k] * g[k * 3 + j] as f64).sum();
            }
        }
        for i in 0..A {
            for j in 0..A {
                let u: f64 = (0..3).map(|k| gg[i][k] * g_matrix[j][k]).sum();
                kernels[(i * A + j) * o * c + pair] = u as f32;
            }
        }
    }
    Ok((kernels, o, c))
}

/// `Bᵀ d` for six rows of lanes.
#[inline(always)]
fn input_rows(d: &[Lanes; ALPHA]) -> [Lanes; ALPHA] {
    let mut r = [[0f32; LANES]; ALPHA];
    for l in 0..LANES {
        let [d0, d1, d2, d3, d4, d5] = [d[0][l], d[1][l], d[2][l], d[3][l], d[4][l], d[5][l]];
        r[0][l] = 4.0 * d0 - 5.0 * d2 + d4;
        r[1][l] = -4.0 * (d1 + d2) + d3 + d4;
        r[2][l] = 4.0 * (d1 - d2) - d3 + d4;
        r[3][l] = 2.0 * (d3 - d1) - d2 + d4;
        r[4][l] = 2.0 * (d1 - d3) - d2 + d4;
        r[5][l] = 4.0 * d1 - 5.0 * d3 + d5;
    }
    r
}

/// `Aᵀ m` for six rows of lanes: four rows.
#[inline(always)]
fn output_rows(m: &[Lanes; ALPHA]) -> [Lanes; BLOCK] {
    let mut r = [[0f32; LANES]; BLOCK];
    for l in 0..LANES {
        let [m0, m1, m2, m3, m4, m5] = [m[0][l], m[1][l], m[2][l], m[3][l], m[4][l], m[5][l]];
        let (sum12, diff12) = (m1 + m2, m1 - m2);
        let (sum34, diff34) = (m3 + m4, m3 - m4);
        r[0][l] = m0 + sum12 + sum34;
        r[1][l] = diff12 + 2.0 * diff34;
        r[2][l] = sum12 + 4.0 * sum34;
        r[3][l] = diff12 + 8.0 * diff34 + m5;
    }
    r
}

/// Where the tiles of one call lie.
#[derive(Clone, Copy)]
struct Tiling {
    channels: usize,
    h: usize,
    w: usize,
    tiles_y: usize,
    tiles_x: usize,
}

impl Tiling {
    fn new(channels: usize, h: usize, w: usize) -> Self {
        Self {
            channels,
            h,
            w,
            tiles_y: h.div_ceil(BLOCK),
            tiles_x: w.div_ceil(BLOCK),
        }
    }

    fn per_image(&self) -> usize {
        self.tiles_y * self.tiles_x
    }

    /// Where every tile of `images` images lies, in order.
    fn places(&self, images: usize) -> Vec<TilePlace> {
        let mut places = Vec::with_capacity(images * self.per_image());
        for image in 0..images {
            for ty in 0..self.tiles_y {
                for tx in 0..self.tiles_x {
                    places.push(TilePlace {
                        image,
                        y: ty * BLOCK,
                        x: tx * BLOCK,
                    });
                }
            }
        }
        places
    }

    /// Copies the 6x6 input patch of the tile at `place` in `channel` into
    /// lane `lane` of `patch`, zero outside the image (the padding).
    #[inline(always)]
    fn gather(
        &self,
        x: &[f32],
        channel: usize,
        place: TilePlace,
        lane: usize,
        patch: &mut [Lanes; POINTS],
    ) {
        let TilePlace {
            image,
            y: oy,
            x: ox,
        } = place;
        let plane = &x[(image * self.channels + channel) * self.h * self.w..][..self.h * self.w];
        // Input rows oy-1..oy+5 and columns ox-1..ox+5.
        let interior = oy >= 1 && ox >= 1 && oy + 5 <= self.h && ox + 5 <= self.w;
        for i in 0..ALPHA {
            let iy = (oy + i).wrapping_sub(1);
            if interior {
                let row = &plane[iy * self.w + ox - 1..][..ALPHA];
                for j in 0..ALPHA {
                    patch[i * ALPHA + j][lane] = row[j];
                }
                continue;
            }
            for j in 0..ALPHA {
                let ix = (ox + j).wrapping_sub(1);
                patch[i * ALPHA + j][lane] = if iy < self.h && ix < self.w {
                    plane[iy * self.w + ix]
                } else {
                    0.0
                };
            }
        }
    }
}

/// A tile's image and the first row and column of its output block,
/// worked out once per call rather than once per lane and channel.
#[derive(Clone, Copy)]
struct TilePlace {
    image: usize,
    y: usize,
    x: usize,
}

/// One batch of tiles, transformed and multiplied together.
#[derive(Clone, Copy)]
struct Batch<'a> {
    places: &'a [TilePlace],
    /// Columns of the scratch matrices (the tile count rounded up to `LANES`).
    stride: usize,
}

/// Writes `V[p][channel][..]` for the batch: `Bᵀ d B` of each tile.
#[inline(always)]
fn transform_inputs(x: &[f32], tiling: &Tiling, batch: Batch, channel: usize, v: SharedMut) {
    let c = tiling.channels;
    for (group, places) in batch.places.chunks(LANES).enumerate() {
        let group = group * LANES;
        let mut patch = [[0f32; LANES]; POINTS];
        if let Some(first) = side_by_side_inside(places, tiling) {
            // Eight tiles side by side, away from the edges: each patch
            // row of all eight lies in one stretch of the input row.
            let plane = &x[(first.image * c + channel) * tiling.h * tiling.w..];
            for i in 0..ALPHA {
                let start = (first.y + i - 1) * tiling.w + first.x - 1;
                let row: &[f32; STRETCH] = plane[start..][..STRETCH].try_into().expect("STRETCH");
                for j in 0..ALPHA {
                    for (lane, v) in patch[i * ALPHA + j].iter_mut().enumerate() {
                        *v = row[lane * BLOCK + j];
                    }
                }
            }
        } else {
            for (lane, place) in places.iter().enumerate() {
                tiling.gather(x, channel, *place, lane, &mut patch);
            }
        }
        // Columns first (Bᵀ d), then rows ((Bᵀ d) B).
        let mut columns = [[[0f32; LANES]; ALPHA]; ALPHA]; // [column][row]
        for (j, column) in columns.iter_mut().enumerate() {
            let d: [Lanes; ALPHA] = std::array::from_fn(|i| patch[i * ALPHA + j]);
            *column = input_rows(&d);
        }
        #[allow(clippy::needless_range_loop)] // i picks row i of every column
        for i in 0..ALPHA {
            let d: [Lanes; ALPHA] = std::array::from_fn(|j| columns[j][i]);
            for (j, lanes) in input_rows(&d).iter().enumerate() {
                let p = i * ALPHA + j;
                // SAFETY: row `channel` of point p's matrix, columns
                // group..group+LANES <= stride: only this channel's task writes it.
                unsafe {
                    let dst = v.at((p * c + channel) * batch.stride + group);
                    std::ptr::copy_nonoverlapping(lanes.as_ptr(), dst, LANES);
                }
            }
        }
    }
}

/// What a batch's output transform reads and where it writes.
#[derive(Clone, Copy)]
struct OutputPass<'a> {
    /// `M`: `[POINTS, O, stride]`, the products.
    products: &'a [f32],
    out_channels: usize,
    act: Activation,
    out: Output,
}

/// Turns `M[p][oc][..]` of the batch into output blocks of channel `oc`,
/// with the bias and activation, and max-pooled if the pass says so.
#[inline(always)]
fn transform_outputs(pass: OutputPass, tiling: &Tiling, batch: Batch, oc: usize, bias: f32) {
    let m = pass.products;
    for (group, places) in batch.places.chunks(LANES).enumerate() {
        let group = group * LANES;
        let point = |p: usize| -> Lanes {
            let at = (p * pass.out_channels + oc) * batch.stride + group;
            m[at..at + LANES].try_into().expect("LANES floats")
        };
        let mut columns = [[[0f32; LANES]; BLOCK]; ALPHA]; // [column][row]
        for (j, column) in columns.iter_mut().enumerate() {
            let rows: [Lanes; ALPHA] = std::array::from_fn(|i| point(i * ALPHA + j));
            *column = output_rows(&rows);
        }
        let mut block = [[[0f32; LANES]; BLOCK]; BLOCK]; // [row][column]
        for (i, row) in block.iter_mut().enumerate() {
            let m: [Lanes; ALPHA] = std::array::from_fn(|j| columns[j][i]);
            *row = output_rows(&m);
            let values = row.as_flattened_mut();
            for v in values.iter_mut() {
                *v += bias;
            }
            pass.act.apply_inline(values);
        }
        if pass.out.pool {
            let pooled: [[Lanes; HALF]; HALF] = std::array::from_fn(|i| {
                std::array::from_fn(|j| {
                    let (top, bottom) = (&block[2 * i], &block[2 * i + 1]);
                    std::array::from_fn(|l| {
                        let (left, right) = (2 * j, 2 * j + 1);
                        window_max(
                            top[left][l],
                            top[right][l],
                            bottom[left][l],
                            bottom[right][l],
                        )
                    })
                })
            });
            write_blocks(&pooled, places, pass, tiling, oc);
        } else {
            write_blocks(&block, places, pass, tiling, oc);
        }
    }
}

/// Half a block's side: a pooled block's.
const HALF: usize = BLOCK / 2;

/// Writes the `S`x`S` blocks (`BLOCK` or, pooled, `HALF`) of the tiles at
/// `places` to channel `oc` of the output.
#[inline(always)]
fn write_blocks<const S: usize>(
    block: &[[Lanes; S]; S],
    places: &[TilePlace],
    pass: OutputPass,
    tiling: &Tiling,
    oc: usize,
) {
    let shrink = BLOCK / S;
    let (h, w) = (tiling.h / shrink, tiling.w / shrink);
    let plane = |image: usize| (image * pass.out_channels + oc) * h * w;
    if let Some(first) = side_by_side(places, tiling.h, tiling.w) {
        // Eight whole blocks in a row: each output row is S x 8
        // contiguous values, the lanes' columns interleaved.
        let (y, x) = (first.y / shrink, first.x / shrink);
        for (i, row) in block.iter().enumerate() {
            let mut run = [0f32; BLOCK * LANES];
            for (j, lanes) in row.iter().enumerate() {
                for (lane, v) in lanes.iter().enumerate() {
                    run[lane * S + j] = *v;
                }
            }
            // SAFETY: as below, for the eight tiles' row y + i.
            let at = plane(first.image) + (y + i) * w + x;
            let dst = unsafe { pass.out.data.part(at, S * LANES) };
            for (d, v) in dst.iter_mut().zip(run) {
                d.write(v);
            }
        }
        return;
    }
    for (lane, place) in places.iter().enumerate() {
        let (y, x) = (place.y / shrink, place.x / shrink);
        let (rows, columns) = ((h - y).min(S), (w - x).min(S));
        for (i, row) in block.iter().enumerate().take(rows) {
            // SAFETY: row y + i, columns x..x + columns of channel oc's
            // plane of this image, which only this output channel's
            // task writes.
            let dst = unsafe {
                pass.out
                    .data
                    .part(plane(place.image) + (y + i) * w + x, columns)
            };
            for (d, lanes) in dst.iter_mut().zip(row) {
                d.write(lanes[lane]);
            }
        }
    }
}

/// The first of `places` when they are `LANES` whole blocks side by side
/// in one row of one image.
#[inline(always)]
fn side_by_side(places: &[TilePlace], h: usize, w: usize) -> Option<TilePlace> {
    let (first, last) = (*places.first()?, *places.last()?);
    let whole = places.len() == LANES
        && last.image == first.image
        && last.y == first.y
        && last.x == first.x + (LANES - 1) * BLOCK
        && first.y + BLOCK <= h
        && last.x + BLOCK <= w;
    whole.then_some(first)
}

/// Input values under `LANES` tiles side by side: their patches overlap
/// by `ALPHA - BLOCK` columns.
const STRETCH: usize = (LANES - 1) * BLOCK + ALPHA;

/// The first of `places` when they are `LANES` tiles side by side in one
/// row of one image whose patches lie wholly inside it (no padding).
#[inline(always)]
fn side_by_side_inside(places: &[TilePlace], tiling: &Tiling) -> Option<TilePlace> {
    let first = side_by_side(places, tiling.h, tiling.w)?;
    let inside = first.y >= 1
        && first.x >= 1
        && first.y - 1 + ALPHA <= tiling.h
        && first.x - 1 + STRETCH <= tiling.w;
    inside.then_some(first)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn transform_inputs_avx2(
    x: &[f32],
    tiling: &Tiling,
    batch: Batch,
    channel: usize,
    v: SharedMut,
) {
    transform_inputs(x, tiling, batch, channel, v)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn transform_outputs_avx2(
    pass: OutputPass,
    tiling: &Tiling,
    batch: Batch,
    oc: usize,
    bias: f32,
) {
    transform_outputs(pass, tiling, batch, oc, bias)
}

impl WinogradConv {
    /// Tiles per batch for this layer: as many as fit the scratch budget,
    /// at least `MIN_BATCH_TILES`, never more than there are; with
    /// `spread_over` threads taking whole batches, at most an even share
    /// of two batches each.
    fn batch_tiles(&self, tiles: usize, spread_over: Option<usize>) -> usize {
        let widest = self.in_channels.max(self.out_channels);
        let fits = (BATCH_FLOATS / (POINTS * widest)).max(MIN_BATCH_TILES);
        let share = spread_over.map_or(tiles, |threads| tiles.div_ceil(2 * threads));
        fits.min(share).min(tiles).next_multiple_of(LANES)
    }

    /// Transforms, multiplies and writes back one batch of tiles; with
    /// `parallel`, each of the three steps is spread over the threads.
    #[allow(clippy::too_many_arguments)]
    fn run_batch(
        &self,
        x: &[f32],
        tiling: &Tiling,
        batch: Batch,
        scratch: &mut [f32],
        out: Output,
        avx2: bool,
        parallel: bool,
    ) {
        let (c, o) = (self.in_channels, self.out_channels);
        let (v, m) = scratch.split_at_mut(POINTS * c * batch.stride);
        let v_ptr = SharedMut(v.as_mut_ptr());
        each(c, parallel, |channel| {
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: the CPU has AVX2 and FMA (checked by the caller).
                return unsafe { transform_inputs_avx2(x, tiling, batch, channel, v_ptr) };
            }
            transform_inputs(x, tiling, batch, channel, v_ptr)
        });
        let m_ptr = SharedMut(m.as_mut_ptr());
        each(POINTS, parallel, |p| {
            // SAFETY: point p's matrices: U[p] is O x C, V[p] C x stride and
            // M[p] O x stride, all inside their buffers; only this task
            // writes M[p].
            unsafe {
                gemm::gemm(
                    o,
                    batch.stride,
                    c,
                    m_ptr.at(p * o * batch.stride),
                    1,
                    batch.stride as isize,
                    false,
                    self.kernels.as_ptr().add(p * o * c),
                    1,
                    c as isize,
                    v_ptr.at(p * c * batch.stride),
                    1,
                    batch.stride as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    Parallelism::None,
                )
            }
        });
        let pass = OutputPass {
            products: m,
            out_channels: o,
            act: self.act,
            out,
        };
        each(o, parallel, |oc| {
            let bias = self.bias[oc];
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: as above.
                return unsafe { transform_outputs_avx2(pass, tiling, batch, oc, bias) };
            }
            transform_outputs(pass, tiling, batch, oc, bias)
        });
    }

    /// Runs `batches` on this thread, with its kept scratch.
    #[allow(clippy::too_many_arguments)]
    fn run_batches<'a>(
        &self,
        x: &[f32],
        tiling: &Tiling,
        batches: impl Iterator<Item = &'a [TilePlace]>,
        per_batch: usize,
        out: Output,
        avx2: bool,
        parallel: bool,
    ) {
        let mut scratch = SCRATCH.take();
        let len = POINTS * (self.in_channels + self.out_channels) * per_batch;
        if scratch.len() < len {
            scratch.resize(len, 0.0);
        }
        for places in batches {
            let batch = Batch {
                places,
                stride: places.len().next_multiple_of(LANES),
            };
            self.run_batch(x, tiling, batch, &mut scratch, out, avx2, parallel);
        }
        SCRATCH.set(scratch);
    }
}

/// Calls `f` for `0..count`, on all threads or on this one.
fn each(count: usize, parallel: bool, f: impl Fn(usize) + Send + Sync) {
    if parallel {
        (0..count).into_par_iter().for_each(f)
    } else {
        (0..count).for_each(f)
    }
}

impl CustomOp1 for WinogradOp<'_> {
    fn name(&self) -> &'static str {
        if self.pool {
            "winograd-conv3x3-maxpool2"
        } else {
            "winograd-conv3x3"
        }
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let conv = self.conv;
        let (x, (n, c, h, w)) = conv_input(self.name(), storage, layout, conv.in_channels)?;
        let o = conv.out_channels;
        let shrink = if self.pool { 2 } else { 1 };
        let (out_h, out_w) = (h / shrink, w / shrink);
        let tiling = Tiling::new(c, h, w);
        let tiles = n * tiling.per_image();
        let places = tiling.places(n);
        let avx2 = super::has_avx2_fma();
        let threads = rayon::current_num_threads();
        // Enough tiles for every thread to take whole batches of a useful
        // size: no hand-over between the steps. Otherwise (deep layers on
        // small maps) the threads share each step of each batch.
        let batch_parallel = threads > 1 && tiles >= 2 * threads * MIN_BATCH_TILES;
        let per_batch = conv.batch_tiles(tiles, batch_parallel.then_some(threads));
        // SAFETY: every output pixel lies in one tile (pooled: the even
        // sides keep each 2x2 window inside one block), and every tile's
        // block is written for every output channel.
        let out = unsafe {
            super::filled(n * o * out_h * out_w, |data| {
                let out = Output {
                    data,
                    pool: self.pool,
                };
                if batch_parallel {
                    places.par_chunks(per_batch).for_each(|places| {
                        conv.run_batches(
                            x,
                            &tiling,
                            std::iter::once(places),
                            per_batch,
                            out,
                            avx2,
                            false,
                        )
                    });
                } else {
                    conv.run_batches(
                        x,
                        &tiling,
                        places.chunks(per_batch),
                        per_batch,
                        out,
                        avx2,
                        true,
                    );
                }
            })
        };
        Ok((CpuStorage::F32(out), Shape::from((n, o, out_h, out_w))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Must agree with candle's convolution: single tiles, ragged edges
    /// (sizes not multiples of 4), several images, batches of tiles split
    /// across the scratch, and every activation path.
    #[test]
    fn matches_candle_conv2d() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        for (n, c, o, h, w, act) in [
            (1, 1, 1, 4, 4, Activation::None),
            (1, 3, 2, 5, 7, Activation::Leaky),
            (2, 8, 5, 13, 13, Activation::Silu),
            (3, 16, 24, 26, 9, Activation::Relu),
            // More tiles than one batch holds.
            (1, 32, 16, 104, 104, Activation::Leaky),
            (1, 2, 3, 1, 1, Activation::None),
        ] {
            let x = Tensor::randn(0f32, 1., (n, c, h, w), &dev)?;
            let wt = Tensor::randn(0f32, 1., (o, c, 3, 3), &dev)?;
            let b = Tensor::randn(0f32, 1., o, &dev)?;
            let ours = WinogradConv::new(&wt, &b, act)?.forward(&x)?;
            let theirs = crate::ops::reference_conv(&x, &wt, &b, 1, 1, act)?;
            assert_eq!(ours.dims(), theirs.dims());
            // Sums of 9c products of unit normals: scale sqrt(9c). F(4, 3)'s
            // transforms multiply by up to 8 and 1/24, so its worst rounding
            // is some 1e-5 of that (2.1e-5 measured); a wrong transform is off
            // by the scale itself.
            let scale = (9.0 * c as f32).sqrt();
            let diff = (ours - theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(
                diff < 6e-5 * scale,
                "n{n} c{c} o{o} {h}x{w}: {diff} (scale {scale})"
            );
        }
        Ok(())
    }

    /// Pooled while written, the same as the convolution then candle's
    /// 2x2 max pool: blocks cut by the bottom and right edges (sides 2 mod
    /// 4), eight tiles side by side and not, a non-monotonic activation.
    #[test]
    fn fused_max_pool_matches_conv_then_pool() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        for (n, c, o, h, w, act) in [
            (1, 3, 2, 2, 2, Activation::Leaky),
            (2, 8, 5, 14, 10, Activation::Silu),
            (1, 16, 9, 40, 42, Activation::Leaky),
            (1, 32, 16, 104, 104, Activation::Relu),
        ] {
            let x = Tensor::randn(0f32, 1., (n, c, h, w), &dev)?;
            let wt = Tensor::randn(0f32, 1., (o, c, 3, 3), &dev)?;
            let b = Tensor::randn(0f32, 1., o, &dev)?;
            let conv = WinogradConv::new(&wt, &b, act)?;
            let ours = conv.forward_max_pooled(&x)?;
            let theirs = conv.forward(&x)?.max_pool2d(2)?;
            assert_eq!(ours.dims(), theirs.dims());
            let diff = (ours - theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert_eq!(diff, 0.0, "n{n} c{c} o{o} {h}x{w}");
        }
        let odd = Tensor::zeros((1, 3, 5, 4), candle_core::DType::F32, &dev)?;
        let wt = Tensor::zeros((2, 3, 3, 3), candle_core::DType::F32, &dev)?;
        let b = Tensor::zeros(2, candle_core::DType::F32, &dev)?;
        let conv = WinogradConv::new(&wt, &b, Activation::None)?;
        assert!(conv.forward_max_pooled(&odd).is_err());
        Ok(())
    }

    #[test]
    fn refuses_other_kernels() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let wt = Tensor::zeros((2, 2, 5, 5), candle_core::DType::F32, &dev)?;
        let b = Tensor::zeros(2, candle_core::DType::F32, &dev)?;
        assert!(WinogradConv::new(&wt, &b, Activation::None).is_err());
        assert!(worth_it(16, 3, 1, 1) && !worth_it(3, 3, 1, 1));
        assert!(!worth_it(64, 3, 2, 1) && !worth_it(64, 1, 1, 0) && !worth_it(64, 3, 1, 0));
        Ok(())
    }
}
