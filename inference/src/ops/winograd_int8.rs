//! INT8 3x3 stride-1 convolution by Winograd's F(2x2, 3x3).
//!
//! The im2col int8 convolution (`ops::int8`) spends 9 multiply-adds per
//! output pixel and channel pair, and f32 Winograd F(4x4, 3x3)
//! (`ops::winograd`) 2.25, so on the CPU the two ran about level. F(2x2,
//! 3x3) spends 4, in int8, where `vpdpbusd` does four times the work of an
//! f32 FMA. Its input transform only adds and subtracts (`Bᵀ` holds 0 and
//! ±1), so a transformed tile is at most 4x its input and 8 bits still
//! resolve it once each of the 16 points has its own scale. F(4x4)'s
//! transforms scale by up to 25 and 1/24: too wide for 8 bits.
//!
//! - Weights: `U = G g Gᵀ`, quantized per point and output channel
//!   (symmetric int8), when the model loads.
//! - Inputs: `V = Bᵀ d B` for every 4x4 tile. A first pass finds the
//!   largest `|V|` per image and point, a second stores `V` as uint8 with
//!   zero point 128, packed for the int8 micro-kernel.
//! - Products: 16 int8 matrix products `U[p] (O x C) x V[p] (C x tiles)`,
//!   one micro-tile at a time. Each micro-tile's 16 results are scaled back
//!   to f32 and turned into 2x2 output blocks (`Aᵀ m A`), with bias and
//!   activation, while they are still in cache.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::int8::{for_each_micro_tile, micro_tile, nearest_byte, padded, quantize_row, MR, NR};
use super::maxpool::window_max;
use super::winograd::transformed_kernels;
use super::{avx2_dispatch, conv_input, Activation, SharedMut};

/// Side of an input tile.
const ALPHA: usize = 4;
/// Side of the output block one tile gives.
const BLOCK: usize = 2;
/// Points of a transformed tile: one matrix product each.
const POINTS: usize = ALPHA * ALPHA;
/// The uint8 that stands for a transformed input of 0.
const ZERO: u8 = 128;
/// Tile columns per parallel task.
const TASK_COLUMNS: usize = 4 * NR;

/// A 3x3 convolution with stride 1, padding 1, bias and activation, its
/// kernels transformed and quantized.
pub struct QuantizedWinogradConv {
    /// `[POINTS][O padded to MR][C padded to 4]`.
    kernels: Vec<i8>,
    /// `[O padded][POINTS]`: the f32 value of one step of each int8 row.
    kernel_steps: Vec<[f32; POINTS]>,
    /// `[O padded][POINTS]`: `ZERO` x the sum of each int8 row, taken off
    /// the products so that the inputs' zero point counts as 0.
    zero_sums: Vec<[i32; POINTS]>,
    bias: Vec<f32>,
    out_channels: usize,
    in_channels: usize,
    act: Activation,
}

impl QuantizedWinogradConv {
    /// Transforms and quantizes `weight` `[O, C, 3, 3]`; keeps `bias` `[O]`.
    pub fn new(weight: &Tensor, bias: &Tensor, act: Activation) -> candle_core::Result<Self> {
        // G of F(2, 3) with interpolation points 0, ±1 and infinity.
        const G: [[f64; 3]; ALPHA] = [
            [1.0, 0.0, 0.0],
            [0.5, 0.5, 0.5],
            [0.5, -0.5, 0.5],
            [0.0, 0.0, 1.0],
        ];
        // [POINTS][O][C]
        let (transformed, o, c) = transformed_kernels("int8 winograd conv", weight, bias, &G)?;
        let (rows, depth4) = (padded(o, MR), padded(c, 4));
        let mut kernels = vec![0i8; POINTS * rows * depth4];
        let mut kernel_steps = vec![[1f32; POINTS]; rows];
        let mut zero_sums = vec![[0i32; POINTS]; rows];
        for p in 0..POINTS {
            for oc in 0..o {
                let row = &transformed[(p * o + oc) * c..][..c];
                let dst = &mut kernels[(p * rows + oc) * depth4..][..c];
                let (step, sum) = quantize_row(row, dst);
                kernel_steps[oc][p] = step;
                zero_sums[oc][p] = ZERO as i32 * sum;
            }
        }
        Ok(Self {
            kernels,
            kernel_steps,
            zero_sums,
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
        let op = QuantizedWinogradOp {
            conv: self,
            pool: false,
        };
        super::run_conv_op(x, &op, false)
    }

    /// The convolution followed by a 2x2 max pool with stride 2: each
    /// tile's 2x2 block is one pooled value, written as the block is made.
    /// `x`'s sides must be even.
    pub fn forward_max_pooled(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let op = QuantizedWinogradOp {
            conv: self,
            pool: true,
        };
        super::run_conv_op(x, &op, true)
    }
}

/// One call's op: the convolution, and whether a 2x2 max pool follows.
struct QuantizedWinogradOp<'a> {
    conv: &'a QuantizedWinogradConv,
    pool: bool,
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

    /// Where each tile of `images` images writes, padded to `columns`.
    fn spots(&self, images: usize, columns: usize) -> Vec<TileSpot> {
        let mut spots = Vec::with_capacity(columns);
        for image in 0..images {
            for ty in 0..self.tiles_y {
                for tx in 0..self.tiles_x {
                    let (y, x) = (ty * BLOCK, tx * BLOCK);
                    spots.push(TileSpot {
                        image,
                        offset: y * self.w + x,
                        rows: BLOCK.min(self.h - y),
                        width_left: self.w - x,
                        run: self.tiles_x - tx,
                    });
                }
            }
        }
        spots.resize(columns, TileSpot::default());
        spots
    }

    fn plane<'a>(&self, x: &'a [f32], image: usize, channel: usize) -> &'a [f32] {
        &x[(image * self.channels + channel) * self.h * self.w..][..self.h * self.w]
    }
}

/// Channels that share one packed word: the 4 `vpdpbusd` sums together.
const LANES: usize = 4;

/// One value of each of a group's 4 channels.
type Quad = [f32; LANES];

#[inline(always)]
fn quad_sub(a: Quad, b: Quad) -> Quad {
    std::array::from_fn(|l| a[l] - b[l])
}

#[inline(always)]
fn quad_add(a: Quad, b: Quad) -> Quad {
    std::array::from_fn(|l| a[l] + b[l])
}

/// `Bᵀ d B` of the tiles of 4 channels at once, one tile row at a time,
/// the channels interleaved in every value: quantized, a tile row is
/// already in the packed inputs' word order, and every step is a flat
/// loop over whole rows, which vectorises.
///
/// Tile `(ty, tx)` reads padded rows `2ty..2ty+4` and columns `2tx..2tx+4`.
struct GroupTransform {
    tiling: Tiling,
    /// Padded columns per row: `2 tiles_x + 2`.
    width: usize,
    /// The group's padded planes, `[2 tiles_y + 2][width]`; zero outside
    /// the image (only the inside is ever written).
    padded: Vec<Quad>,
    /// Read for the channels past the last.
    zero_row: Vec<f32>,
    /// `Bᵀ d` of one tile row, `[ALPHA][width]`.
    columns: Vec<Quad>,
    /// Tile rows transformed before their values are used: enough for
    /// long loops over them, where one row of a small plane is a few tiles.
    run_rows: usize,
    /// `[POINTS][run_rows][tiles_x]`: a run of tile rows' transformed values.
    points: Vec<Quad>,
}

/// The fewest tiles a run of tile rows holds (unless the plane has fewer).
const RUN_TILES: usize = 64;

impl GroupTransform {
    fn new(tiling: Tiling) -> Self {
        let width = 2 * tiling.tiles_x + 2;
        let run_rows = RUN_TILES.div_ceil(tiling.tiles_x).min(tiling.tiles_y);
        Self {
            tiling,
            width,
            padded: vec![[0.0; LANES]; (2 * tiling.tiles_y + 2) * width],
            zero_row: vec![0.0; tiling.w],
            columns: vec![[0.0; LANES]; ALPHA * width],
            run_rows,
            points: vec![[0.0; LANES]; POINTS * run_rows * tiling.tiles_x],
        }
    }

    /// Copies channels `4 group..4 group + 4` of `image` in, interleaved.
    #[inline(always)]
    fn load(&mut self, x: &[f32], image: usize, group: usize) {
        let Self {
            tiling,
            width,
            padded,
            zero_row,
            ..
        } = self;
        let (w, zero_row): (usize, &[f32]) = (tiling.w, zero_row);
        for iy in 0..tiling.h {
            let rows: [&[f32]; LANES] = std::array::from_fn(|lane| {
                let channel = group * LANES + lane;
                if channel < tiling.channels {
                    &tiling.plane(x, image, channel)[iy * w..][..w]
                } else {
                    zero_row
                }
            });
            // Input (iy, ix) is padded (iy + 1, ix + 1).
            let dst = &mut padded[(iy + 1) * *width + 1..][..w];
            let lanes = rows[0].iter().zip(rows[1]).zip(rows[2]).zip(rows[3]);
            for (d, (((a, b), c), e)) in dst.iter_mut().zip(lanes) {
                *d = [*a, *b, *c, *e];
            }
        }
    }

    /// Transforms tile rows `first..first + rows` (at most `run_rows`) of
    /// the loaded group into `points`.
    #[inline(always)]
    fn tile_rows(&mut self, first: usize, rows: usize) {
        for slot in 0..rows {
            self.tile_row(first + slot, slot);
        }
    }

    /// Transforms tile row `ty` of the loaded group into slot `slot` of
    /// `points`.
    #[inline(always)]
    fn tile_row(&mut self, ty: usize, slot: usize) {
        let (width, n) = (self.width, self.tiling.tiles_x);
        let stride = self.run_rows * n;
        let rows = &self.padded[2 * ty * width..][..ALPHA * width];
        let d = |r: usize| rows[r * width..][..width].as_flattened();
        let (d0, d1, d2, d3) = (d(0), d(1), d(2), d(3));
        let (r0, rest) = self.columns.split_at_mut(width);
        let (r1, rest) = rest.split_at_mut(width);
        let (r2, r3) = rest.split_at_mut(width);
        let outs = r0.as_flattened_mut().iter_mut().zip(r1.as_flattened_mut());
        let outs = outs.zip(r2.as_flattened_mut()).zip(r3.as_flattened_mut());
        let ins = d0.iter().zip(d1).zip(d2).zip(d3);
        for ((((r0, r1), r2), r3), (((a, b), c), e)) in outs.zip(ins) {
            *r0 = a - c;
            *r1 = b + c;
            *r2 = c - b;
            *r3 = b - e;
        }
        // Tile t reads column pairs t and t + 1 (even and odd columns).
        for (i, points) in self.points.chunks_exact_mut(ALPHA * stride).enumerate() {
            let r = &self.columns[i * width..][..width];
            let (v0, rest) = points.split_at_mut(stride);
            let (v1, rest) = rest.split_at_mut(stride);
            let (v2, v3) = rest.split_at_mut(stride);
            let at = slot * n..(slot + 1) * n;
            let (v0, v1) = (&mut v0[at.clone()], &mut v1[at.clone()]);
            let (v2, v3) = (&mut v2[at.clone()], &mut v3[at]);
            let outs = v0.iter_mut().zip(v1.iter_mut()).zip(v2.iter_mut()).zip(v3);
            let pairs = r.chunks_exact(2).zip(r[2..].chunks_exact(2));
            for ((((v0, v1), v2), v3), (here, next)) in outs.zip(pairs) {
                let (e0, o0, e1, o1) = (here[0], here[1], next[0], next[1]);
                *v0 = quad_sub(e0, e1);
                *v1 = quad_add(o0, e1);
                *v2 = quad_sub(e1, o0);
                *v3 = quad_sub(o0, o1);
            }
        }
    }

    /// Point `p` of the first `rows` transformed tile rows: `tiles_x`
    /// words of 4 channels each.
    fn point(&self, p: usize, rows: usize) -> &[f32] {
        let n = self.tiling.tiles_x;
        self.points[p * self.run_rows * n..][..rows * n].as_flattened()
    }
}

/// The largest `|V|` of each point over one group of one image.
#[inline(always)]
fn group_largest_body(
    transform: &mut GroupTransform,
    x: &[f32],
    image: usize,
    group: usize,
) -> [f32; POINTS] {
    // Plain loops, not a closure: a closure is compiled without the
    // AVX2 twin's target features unless it happens to be inlined.
    transform.load(x, image, group);
    // Eight lanes per point, folded into one only at the end.
    let mut lanes = [[0f32; 8]; POINTS];
    for first in (0..transform.tiling.tiles_y).step_by(transform.run_rows) {
        let rows = transform.run_rows.min(transform.tiling.tiles_y - first);
        transform.tile_rows(first, rows);
        for (p, lanes) in lanes.iter_mut().enumerate() {
            let chunks = transform.point(p, rows).chunks_exact(8);
            let mut tail = [0f32; 8];
            tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
            // In a local, which stays in a register; in place in the array,
            // the comparisons became masked stores, which are slow on AMD.
            let mut largest = *lanes;
            for chunk in chunks {
                largest = larger_magnitudes(largest, chunk.try_into().expect("8"));
            }
            *lanes = larger_magnitudes(largest, &tail);
        }
    }
    lanes.map(|lanes| lanes.iter().fold(0f32, |m, v| m.max(*v)))
}

/// The larger of `lanes` and `|values|`, lane by lane: comparisons, not
/// `f32::max`, whose NaN handling keeps this from vectorising.
#[inline(always)]
fn larger_magnitudes(mut lanes: [f32; 8], values: &[f32; 8]) -> [f32; 8] {
    for (m, v) in lanes.iter_mut().zip(values) {
        let v = v.abs();
        *m = if v > *m { v } else { *m };
    }
    lanes
}

avx2_dispatch!(fn group_largest(
    transform: &mut GroupTransform,
    x: &[f32],
    image: usize,
    group: usize,
) -> [f32; POINTS] = group_largest_body);

/// `v` (within ±127) rounded to the nearest integer, plus `ZERO`, as a byte.
#[inline(always)]
fn to_byte(v: f32) -> u8 {
    nearest_byte(v).wrapping_add(ZERO)
}

impl QuantizedWinogradConv {
    /// Per image and point, the f32 value of one step of the transformed
    /// inputs: the largest `|V|` over 127.
    fn input_steps(&self, x: &[f32], tiling: &Tiling, images: usize) -> Vec<[f32; POINTS]> {
        let groups = padded(self.in_channels, LANES) / LANES;
        let largest: Vec<[f32; POINTS]> = (0..images * groups)
            .into_par_iter()
            .map_init(
                || GroupTransform::new(*tiling),
                |transform, job| group_largest(transform, x, job / groups, job % groups),
            )
            .collect();
        largest
            .chunks(groups)
            .map(|image| {
                let mut steps = [0f32; POINTS];
                for (p, step) in steps.iter_mut().enumerate() {
                    let max = image.iter().fold(0f32, |m, l| m.max(l[p]));
                    *step = if max > 0.0 { max / 127.0 } else { 1.0 };
                }
                steps
            })
            .collect()
    }

    /// The quantized transformed inputs of every image `steps` has,
    /// `[POINTS][columns / NR][C / 4][NR][4]`: for each point and each
    /// panel of `NR` tiles, the 4 channels `vpdpbusd` sums, for each tile,
    /// so that a micro-tile reads one stretch of memory.
    fn packed_inputs(
        &self,
        x: &[f32],
        tiling: &Tiling,
        steps: &[[f32; POINTS]],
        columns: usize,
    ) -> Vec<u8> {
        let groups = padded(self.in_channels, LANES) / LANES;
        let target = PackTarget {
            groups,
            panels: columns / NR,
            per_image: tiling.per_image(),
            tiles: steps.len() * tiling.per_image(),
        };
        // SAFETY: each (image, group) task writes that group's words of
        // the image's tiles, every point (`pack_group`); the image-0 task
        // also writes the group's padding columns.
        unsafe {
            super::filled(POINTS * target.panels * groups * NR * LANES, |packed| {
                (0..steps.len() * groups).into_par_iter().for_each_init(
                    || GroupTransform::new(*tiling),
                    |transform, job| {
                        let (image, group) = (job / groups, job % groups);
                        // This job's (image, group) is its alone.
                        pack_group(x, transform, &steps[image], packed, target, image, group);
                    },
                );
            })
        }
    }
}

/// The shape of the packed inputs.
#[derive(Clone, Copy)]
struct PackTarget {
    groups: usize,
    panels: usize,
    per_image: usize,
    /// Tiles of all images (the columns after them are padding).
    tiles: usize,
}

impl PackTarget {
    /// Where the word of `column` (a tile) of `group` for point `p` lies.
    fn word(&self, p: usize, group: usize, column: usize) -> usize {
        (((p * self.panels + column / NR) * self.groups + group) * NR + column % NR) * LANES
    }
}

/// Quantizes the transformed inputs of channels `4 group..4 group + 4` of
/// `image` (a step per point in `steps`) and writes them to `packed`.
///
/// # Safety
/// Only this call may write those words (and, for image 0, the group's
/// padding columns).
#[inline(always)]
unsafe fn pack_group_body(
    x: &[f32],
    transform: &mut GroupTransform,
    steps: &[f32; POINTS],
    packed: SharedMut<u8>,
    target: PackTarget,
    image: usize,
    group: usize,
) {
    let n = transform.tiling.tiles_x;
    let inverse = steps.map(|s| 1.0 / s);
    transform.load(x, image, group);
    for first in (0..transform.tiling.tiles_y).step_by(transform.run_rows) {
        let rows = transform.run_rows.min(transform.tiling.tiles_y - first);
        transform.tile_rows(first, rows);
        let start = image * target.per_image + first * n;
        for (p, inverse) in inverse.iter().enumerate() {
            let mut values = transform.point(p, rows);
            let mut column = start;
            // Panel by panel: the run's tiles in each are one stretch.
            while !values.is_empty() {
                let len = (NR - column % NR).min(values.len() / LANES);
                let dst = packed.part(target.word(p, group, column), len * LANES);
                for (q, v) in dst.iter_mut().zip(&values[..len * LANES]) {
                    q.write(to_byte((v * inverse).clamp(-127.0, 127.0)));
                }
                values = &values[len * LANES..];
                column += len;
            }
        }
    }
    // The padding columns, all in the last panel.
    if image == 0 && target.tiles < target.panels * NR {
        let padding = target.panels * NR - target.tiles;
        for p in 0..POINTS {
            for byte in packed.part(target.word(p, group, target.tiles), padding * LANES) {
                byte.write(ZERO);
            }
        }
    }
}

avx2_dispatch!(unsafe fn pack_group(
    x: &[f32],
    transform: &mut GroupTransform,
    steps: &[f32; POINTS],
    packed: SharedMut<u8>,
    target: PackTarget,
    image: usize,
    group: usize,
) -> () = pack_group_body);

/// A micro-tile's products, `[MR][POINTS][NR]`: each output channel's
/// sums in one stretch.
type Sums = [[[i32; NR]; POINTS]; MR];

/// The input step of each of a micro-tile's `NR` tiles, per point.
type PanelSteps = [[f32; NR]; POINTS];

/// Where a tile's output block goes.
#[derive(Clone, Copy, Default)]
struct TileSpot {
    image: usize,
    /// Of the block's first pixel, within its channel's plane.
    offset: usize,
    /// Rows of the block inside the image (1 at an odd bottom edge).
    rows: usize,
    /// Output columns from the block's first to the image's right edge.
    width_left: usize,
    /// Tiles from this one to the end of its tile row.
    run: usize,
}

/// What the products and the output transform read, and where they write.
struct OutputPass<'a> {
    /// Whether each block is max-pooled to one value (the output then
    /// holds, per image and channel, one value per tile, in tile order).
    pool: bool,
    per_image: usize,
    /// Pixels of one output plane, and of one of its rows (unpooled).
    plane: usize,
    width: usize,
    /// The tiles' spots, padded to `columns` (the padding is never
    /// written); none when pooling, which needs only the tile order.
    spots: Vec<TileSpot>,
    tiles: usize,
    columns: usize,
    packed: &'a [u8],
    /// Per micro-tile of columns: the input step of each tile's image.
    column_steps: Vec<PanelSteps>,
    /// The layer's output, `[N, O, H, W]` (pooled: `[N, O, H / 2, W / 2]`).
    out: SharedMut,
}

/// Output channels `rb * MR..+MR` for tile columns `col..col + NR`.
#[inline(always)]
fn output_tile_body(
    conv: &QuantizedWinogradConv,
    pass: &OutputPass,
    rb: usize,
    col: usize,
    acc: &mut Sums,
) {
    let o = conv.out_channels;
    let rows = padded(o, MR);
    let depth4 = padded(conv.in_channels, 4);
    let panel_len = depth4 * NR;
    let panel = (col / NR) * panel_len;
    let point_len = pass.columns * depth4;
    let sums = acc.as_mut_ptr().cast::<i32>();
    for p in 0..POINTS {
        // SAFETY: `acc` holds MR rows of POINTS x NR values, point p's at
        // p x NR in each; the panel holds the micro-tile's NR columns.
        unsafe {
            micro_tile(
                &conv.kernels[(p * rows + rb * MR) * depth4..][..MR * depth4],
                &pass.packed[p * point_len + panel..][..panel_len],
                depth4,
                sums.add(p * NR),
                POINTS * NR,
            )
        };
    }
    // Tiles of this micro-tile (the rest of its columns are padding).
    let count = pass.tiles.saturating_sub(col).min(NR);
    let steps = &pass.column_steps[col / NR];
    for (r, sums) in acc
        .iter()
        .enumerate()
        .take(MR.min(o.saturating_sub(rb * MR)))
    {
        let oc = rb * MR + r;
        let bias = conv.bias[oc];
        let (kernel_steps, zeros) = (&conv.kernel_steps[oc], &conv.zero_sums[oc]);
        let mut block = [[0f32; NR]; BLOCK * BLOCK];
        // Eight tiles at a time, one column k of the tile at a time: its
        // four points m back in f32, then their two rows of Aᵀ m. Few
        // enough values at once to stay in registers.
        for j in (0..NR).step_by(8) {
            let mut half = [[[0f32; 8]; BLOCK]; ALPHA];
            for (k, half) in half.iter_mut().enumerate() {
                let mut m = [[0f32; 8]; ALPHA];
                for (i, m) in m.iter_mut().enumerate() {
                    let p = i * ALPHA + k;
                    let (step, zero) = (kernel_steps[p], zeros[p]);
                    for l in 0..8 {
                        m[l] = (sums[p][j + l] - zero) as f32 * (step * steps[p][j + l]);
                    }
                }
                for l in 0..8 {
                    half[0][l] = m[0][l] + m[1][l] + m[2][l];
                    half[1][l] = m[1][l] - m[2][l] - m[3][l];
                }
            }
            // (Aᵀ m) A and the bias: the 2x2 blocks, row by row.
            for a in 0..BLOCK {
                let t = [half[0][a], half[1][a], half[2][a], half[3][a]];
                for l in 0..8 {
                    block[a * BLOCK][j + l] = t[0][l] + t[1][l] + t[2][l] + bias;
                    block[a * BLOCK + 1][j + l] = t[1][l] - t[2][l] - t[3][l] + bias;
                }
            }
        }
        conv.act.apply_inline(block.as_flattened_mut());
        if pass.pool {
            write_pooled(&block, pass, o, oc, col, count);
            continue;
        }
        let spots = &pass.spots[col..][..count];
        // Runs of tiles side by side in one tile row: each output row of
        // a run is one stretch of memory, the two block columns interleaved.
        let mut j = 0;
        while j < spots.len() {
            let spot = spots[j];
            let run = spot.run.min(spots.len() - j);
            let width = (BLOCK * run).min(spot.width_left);
            let first = (spot.image * o + oc) * pass.plane + spot.offset;
            for a in 0..spot.rows {
                // SAFETY: one output row of these tiles' blocks in channel
                // oc, which only this task writes.
                let dst = unsafe { pass.out.part(first + a * pass.width, width) };
                let left = &block[a * BLOCK][j..j + run];
                let right = &block[a * BLOCK + 1][j..j + run];
                let mut pairs = dst.chunks_exact_mut(BLOCK);
                for ((pair, l), r) in (&mut pairs).zip(left).zip(right) {
                    pair[0].write(*l);
                    pair[1].write(*r);
                }
                if let [last] = pairs.into_remainder() {
                    last.write(left[run - 1]);
                }
            }
            j += run;
        }
    }
}

/// The max of each tile's 2x2 block, for the `count` tiles from `col`: a
/// run of tiles of one image is one stretch of its pooled plane.
#[inline(always)]
fn write_pooled(
    block: &[[f32; NR]; BLOCK * BLOCK],
    pass: &OutputPass,
    o: usize,
    oc: usize,
    col: usize,
    count: usize,
) {
    let [top_left, top_right, bottom_left, bottom_right] = block;
    let mut pooled = [0f32; NR];
    for (j, m) in pooled.iter_mut().enumerate() {
        *m = window_max(top_left[j], top_right[j], bottom_left[j], bottom_right[j]);
    }
    let mut j = 0;
    while j < count {
        let (image, within) = ((col + j) / pass.per_image, (col + j) % pass.per_image);
        let run = (pass.per_image - within).min(count - j);
        // SAFETY: these tiles' pooled values in channel oc, which only
        // this task writes.
        let dst = unsafe {
            pass.out
                .part((image * o + oc) * pass.per_image + within, run)
        };
        for (d, v) in dst.iter_mut().zip(&pooled[j..j + run]) {
            d.write(*v);
        }
        j += run;
    }
}

avx2_dispatch!(fn output_tile(
    conv: &QuantizedWinogradConv,
    pass: &OutputPass,
    rb: usize,
    col: usize,
    acc: &mut Sums,
) -> () = output_tile_body);

impl CustomOp1 for QuantizedWinogradOp<'_> {
    fn name(&self) -> &'static str {
        if self.pool {
            "int8-winograd-conv3x3-maxpool2"
        } else {
            "int8-winograd-conv3x3"
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
        let columns = padded(tiles, NR);
        let steps = conv.input_steps(x, &tiling, n);
        let packed = conv.packed_inputs(x, &tiling, &steps, columns);
        let mut column_steps = vec![[[1f32; NR]; POINTS]; columns / NR];
        for tile in 0..tiles {
            for p in 0..POINTS {
                column_steps[tile / NR][p][tile % NR] = steps[tile / tiling.per_image()][p];
            }
        }
        // SAFETY: every output pixel lies in one tile (pooled: the even
        // sides make each 2x2 window one tile's block), and every tile's
        // block is written for every output channel.
        let out = unsafe {
            super::filled(n * o * out_h * out_w, |out| {
                let pass = OutputPass {
                    pool: self.pool,
                    per_image: tiling.per_image(),
                    plane: h * w,
                    width: w,
                    spots: if self.pool {
                        Vec::new()
                    } else {
                        tiling.spots(n, columns)
                    },
                    tiles,
                    columns,
                    packed: &packed,
                    column_steps,
                    out,
                };
                for_each_micro_tile(
                    o,
                    columns,
                    TASK_COLUMNS,
                    || Box::new([[[0i32; NR]; POINTS]; MR]),
                    |acc, rb, col| output_tile(conv, &pass, rb, col, acc),
                );
            })
        };
        Ok((CpuStorage::F32(out), Shape::from((n, o, out_h, out_w))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Close to candle's f32 convolution (quantization error only): single
    /// tiles, odd sizes, several images with different ranges, channel
    /// counts not a multiple of 4, more output channels than one row block.
    #[test]
    fn close_to_f32_convolution() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        for (n, c, o, h, w, act) in [
            (1, 1, 1, 2, 2, Activation::None),
            (1, 6, 10, 11, 9, Activation::None),
            (2, 16, 24, 13, 13, Activation::Leaky),
            (3, 35, 9, 26, 7, Activation::Silu),
            (1, 64, 40, 52, 52, Activation::Relu),
            (2, 8, 2, 1, 1, Activation::None),
        ] {
            let x = Tensor::randn(0f32, 1., (n, c, h, w), &dev)?;
            // Images far apart in range: each must keep its own scale.
            let ranges = Tensor::arange(0u32, n as u32, &dev)?
                .to_dtype(candle_core::DType::F32)?
                .affine(9.0, 1.0)?
                .reshape((n, 1, 1, 1))?;
            let x = x.broadcast_mul(&ranges)?;
            let wt = Tensor::randn(0f32, 0.2, (o, c, 3, 3), &dev)?;
            let b = Tensor::randn(0f32, 0.1, o, &dev)?;
            let ours = QuantizedWinogradConv::new(&wt, &b, act)?.forward(&x)?;
            let theirs = crate::ops::reference_conv(&x, &wt, &b, 1, 1, act)?;
            assert_eq!(ours.dims(), theirs.dims());
            // The scale of the sums, Σ|x||w|: the quantization error grows
            // with it, whatever the sums cancel to. (Measured against the
            // outputs' own range instead, the 1x1 images' two outputs made
            // the test fail about once in a hundred runs.)
            let magnitudes = crate::ops::reference_conv(
                &x.abs()?,
                &wt.abs()?,
                &b.zeros_like()?,
                1,
                1,
                Activation::None,
            )?;
            for image in 0..n {
                let (ours, theirs) = (ours.get(image)?, theirs.get(image)?);
                let err = (&ours - &theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
                let scale = magnitudes.get(image)?.max_all()?.to_scalar::<f32>()?;
                // 0.013 the worst seen in 100 runs of every case; a wrong
                // transform is off by a good part of the scale itself.
                assert!(
                    err <= 0.03 * scale,
                    "n{n} c{c} o{o} {h}x{w} image {image}: error {err} of scale {scale}"
                );
            }
        }
        Ok(())
    }

    /// Pooled while written, the same as the convolution then candle's
    /// 2x2 max pool: several images, tile counts not a multiple of the
    /// micro-tile's, a non-monotonic activation; odd sides refused.
    #[test]
    fn fused_max_pool_matches_conv_then_pool() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        for (n, c, o, h, w, act) in [
            (1, 3, 2, 2, 2, Activation::Leaky),
            (3, 8, 9, 14, 10, Activation::Silu),
            (1, 32, 16, 52, 52, Activation::Leaky),
        ] {
            let x = Tensor::randn(0f32, 1., (n, c, h, w), &dev)?;
            let wt = Tensor::randn(0f32, 1., (o, c, 3, 3), &dev)?;
            let b = Tensor::randn(0f32, 1., o, &dev)?;
            let conv = QuantizedWinogradConv::new(&wt, &b, act)?;
            let ours = conv.forward_max_pooled(&x)?;
            let theirs = conv.forward(&x)?.max_pool2d(2)?;
            assert_eq!(ours.dims(), theirs.dims());
            let diff = (ours - theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert_eq!(diff, 0.0, "n{n} c{c} o{o} {h}x{w}");
        }
        let wt = Tensor::zeros((2, 3, 3, 3), candle_core::DType::F32, &dev)?;
        let b = Tensor::zeros(2, candle_core::DType::F32, &dev)?;
        let conv = QuantizedWinogradConv::new(&wt, &b, Activation::None)?;
        let odd = Tensor::zeros((1, 3, 5, 4), candle_core::DType::F32, &dev)?;
        assert!(conv.forward_max_pooled(&odd).is_err());
        Ok(())
    }

    #[test]
    fn refuses_other_kernels() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let wt = Tensor::zeros((2, 2, 5, 5), candle_core::DType::F32, &dev)?;
        let b = Tensor::zeros(2, candle_core::DType::F32, &dev)?;
        assert!(QuantizedWinogradConv::new(&wt, &b, Activation::None).is_err());
        let wt = Tensor::zeros((2, 2, 3, 3), candle_core::DType::F32, &dev)?;
        let x = Tensor::zeros((1, 3, 4, 4), candle_core::DType::F32, &dev)?;
        let conv = QuantizedWinogradConv::new(&wt, &b, Activation::None)?;
        assert!(conv.forward(&x).is_err());
        Ok(())
    }
}
