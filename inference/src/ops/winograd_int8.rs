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

use super::int8::{
    for_each_micro_tile, micro_tile, nearest_byte, padded, quantize_row, range_with_zero, MR, NR,
};
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
    /// `[POINTS][O padded]`: the f32 value of one step of each int8 row.
    kernel_steps: Vec<f32>,
    /// `[POINTS][O padded]`: `ZERO` x the sum of each int8 row, taken off
    /// the products so that the inputs' zero point counts as 0.
    zero_sums: Vec<i32>,
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
        let mut kernel_steps = vec![1f32; POINTS * rows];
        let mut zero_sums = vec![0i32; POINTS * rows];
        for p in 0..POINTS {
            for oc in 0..o {
                let row = &transformed[(p * o + oc) * c..][..c];
                let dst = &mut kernels[(p * rows + oc) * depth4..][..c];
                let (step, sum) = quantize_row(row, dst);
                kernel_steps[p * rows + oc] = step;
                zero_sums[p * rows + oc] = ZERO as i32 * sum;
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
        x.contiguous()?.apply_op1_no_bwd(self)
    }
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

/// Transforms one channel's plane at a time: `Bᵀ d B` of every tile, as
/// 16 planes (one per point) of `tiles_y` rows of `span` values, the last
/// of each row not a tile.
///
/// Tile `(ty, tx)` reads padded rows `2ty..2ty+4` and columns
/// `2tx..2tx+4`. With the padded plane split into quarters by row and
/// column parity, each term of the transform is one quarter, or one
/// shifted by a row or a column, so every step is a flat loop over the
/// whole plane, which vectorises.
struct PlaneTransform {
    tiling: Tiling,
    /// Tiles per row plus one: the row length of every buffer.
    span: usize,
    /// `[row parity][column parity][tiles_y + 1][span]` (+1 value), the
    /// padded plane; zero outside the image.
    quarters: Vec<f32>,
    /// `[ALPHA][column parity][tiles_y][span]` (+1 value): `Bᵀ d`.
    columns: Vec<f32>,
    /// `[POINTS][tiles_y][span]`: `(Bᵀ d) B`.
    points: Vec<f32>,
}

impl PlaneTransform {
    fn new(tiling: Tiling) -> Self {
        let span = tiling.tiles_x + 1;
        let quarter = (tiling.tiles_y + 1) * span + 1;
        let length = tiling.tiles_y * span;
        Self {
            tiling,
            span,
            quarters: vec![0.0; 4 * quarter],
            columns: vec![0.0; 2 * ALPHA * (length + 1)],
            points: vec![0.0; POINTS * length],
        }
    }

    fn length(&self) -> usize {
        self.tiling.tiles_y * self.span
    }

    /// The transformed values of point `p`, row by row (`span` apart, the
    /// first `tiles_x` of each row being tiles).
    fn point(&self, p: usize) -> &[f32] {
        &self.points[p * self.length()..][..self.length()]
    }

    #[inline(always)]
    fn run(&mut self, plane: &[f32]) {
        let Tiling { h, w, tiles_y, .. } = self.tiling;
        let span = self.span;
        let quarter = (tiles_y + 1) * span + 1;
        // Input (iy, ix) is padded (iy + 1, ix + 1). Every value the rows
        // below leave alone is padding and stays 0 from `new`.
        for (iy, row) in plane.chunks_exact(w).enumerate() {
            let padded_y = iy + 1;
            let (parity, ry) = (padded_y % 2, padded_y / 2);
            let base = parity * 2 * quarter + ry * span;
            // Even input columns land in odd padded columns, at ix / 2.
            let odd = &mut self.quarters[base + quarter..][..span];
            for (d, v) in odd.iter_mut().zip(row.iter().step_by(2)) {
                *d = *v;
            }
            // Odd input columns land in even padded columns, at (ix + 1) / 2.
            let even = &mut self.quarters[base + 1..][..span - 1];
            for (d, v) in even.iter_mut().zip(row.iter().skip(1).step_by(2)) {
                *d = *v;
            }
        }
        debug_assert!(h <= 2 * tiles_y);
        let length = self.length();
        for parity in 0..2 {
            let at = |rp: usize, down: usize| (rp * 2 + parity) * quarter + down * span;
            let q = &self.quarters;
            let (d0, d1) = (&q[at(0, 0)..][..length], &q[at(1, 0)..][..length]);
            let (d2, d3) = (&q[at(0, 1)..][..length], &q[at(1, 1)..][..length]);
            let out = &mut self.columns[parity * ALPHA * (length + 1)..][..ALPHA * (length + 1)];
            let (r0, rest) = out.split_at_mut(length + 1);
            let (r1, rest) = rest.split_at_mut(length + 1);
            let (r2, r3) = rest.split_at_mut(length + 1);
            for k in 0..length {
                r0[k] = d0[k] - d2[k];
                r1[k] = d1[k] + d2[k];
                r2[k] = d2[k] - d1[k];
                r3[k] = d1[k] - d3[k];
            }
        }
        for (i, points) in self.points.chunks_exact_mut(ALPHA * length).enumerate() {
            let row =
                |parity: usize| &self.columns[(parity * ALPHA + i) * (length + 1)..][..length + 1];
            let (e, o) = (row(0), row(1));
            let (e0, e1, o0, o1) = (&e[..length], &e[1..], &o[..length], &o[1..]);
            let (v0, rest) = points.split_at_mut(length);
            let (v1, rest) = rest.split_at_mut(length);
            let (v2, v3) = rest.split_at_mut(length);
            for t in 0..length {
                v0[t] = e0[t] - e1[t];
                v1[t] = o0[t] + e1[t];
                v2[t] = e1[t] - o0[t];
                v3[t] = o0[t] - o1[t];
            }
        }
        // The last value of each row is no tile: 0, so that whole planes
        // can be scanned for their range.
        for row_end in self.points.iter_mut().skip(span - 1).step_by(span) {
            *row_end = 0.0;
        }
    }
}

/// The largest `|V|` of each point over one channel's plane.
#[inline(always)]
fn largest_per_point_body(transform: &mut PlaneTransform, plane: &[f32]) -> [f32; POINTS] {
    transform.run(plane);
    let mut largest = [0f32; POINTS];
    for (p, m) in largest.iter_mut().enumerate() {
        *m = largest_magnitude(transform.point(p));
    }
    largest
}

avx2_dispatch!(fn largest_per_point(transform: &mut PlaneTransform, plane: &[f32]) -> [f32; POINTS] = largest_per_point_body);

/// The largest `|v|` (0 for none).
#[inline(always)]
fn largest_magnitude(values: &[f32]) -> f32 {
    let (lo, hi) = range_with_zero(values);
    hi.max(-lo)
}

/// `v` (within ±127) rounded to the nearest integer, plus `ZERO`, as a byte.
#[inline(always)]
fn to_byte(v: f32) -> u8 {
    nearest_byte(v).wrapping_add(ZERO)
}

impl QuantizedWinogradConv {
    /// Per image and point, the f32 value of one step of the transformed
    /// inputs: the largest `|V|` over 127.
    fn input_steps(&self, x: &[f32], tiling: &Tiling, images: usize) -> Vec<[f32; POINTS]> {
        let c = self.in_channels;
        let largest: Vec<[f32; POINTS]> = (0..images * c)
            .into_par_iter()
            .map_init(
                || PlaneTransform::new(*tiling),
                |transform, plane| {
                    largest_per_point(transform, tiling.plane(x, plane / c, plane % c))
                },
            )
            .collect();
        largest
            .chunks(c)
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
    /// `[POINTS][C / 4][columns][4]`:
    /// for each point, the 4 channels `vpdpbusd` sums, for each tile.
    fn packed_inputs(
        &self,
        x: &[f32],
        tiling: &Tiling,
        steps: &[[f32; POINTS]],
        columns: usize,
    ) -> Vec<u8> {
        let c = self.in_channels;
        let groups = padded(c, 4) / 4;
        let point_len = groups * columns * 4;
        // SAFETY: each group's task writes the group's words of every tile
        // and point (`pack_group`) and of the padding columns after them.
        unsafe {
            super::filled(POINTS * point_len, |packed| {
                (0..groups).into_par_iter().for_each_init(
                    || {
                        let transform = PlaneTransform::new(*tiling);
                        let quantized = vec![ZERO; 4 * POINTS * transform.length()];
                        (transform, quantized)
                    },
                    |(transform, quantized), group| {
                        let target = PackTarget {
                            packed,
                            point_len,
                            columns,
                            group,
                            per_image: tiling.per_image(),
                        };
                        pack_group(x, tiling, steps, transform, quantized, target);
                        let tiles = steps.len() * tiling.per_image();
                        for p in 0..POINTS {
                            let at = p * point_len + (group * columns + tiles) * 4;
                            for byte in packed.part(at, (columns - tiles) * 4) {
                                byte.write(ZERO);
                            }
                        }
                    },
                );
            })
        }
    }
}

/// Where one group of 4 channels goes in the packed inputs.
#[derive(Clone, Copy)]
struct PackTarget {
    packed: SharedMut<u8>,
    point_len: usize,
    columns: usize,
    group: usize,
    per_image: usize,
}

impl PackTarget {
    /// The group's words for the tiles of `image`, point `p`.
    ///
    /// # Safety
    /// Only this group's task may write them, once.
    unsafe fn words<'a>(self, image: usize, p: usize) -> &'a mut [std::mem::MaybeUninit<u8>] {
        let first = image * self.per_image;
        let at = p * self.point_len + (self.group * self.columns + first) * 4;
        self.packed.part(at, self.per_image * 4)
    }
}

/// Quantizes the transformed inputs of the 4 channels of `target`'s group
/// and writes them there, interleaved.
#[inline(always)]
fn pack_group_body(
    x: &[f32],
    tiling: &Tiling,
    steps: &[[f32; POINTS]],
    transform: &mut PlaneTransform,
    quantized: &mut [u8],
    target: PackTarget,
) {
    let (n, length) = (tiling.tiles_x, transform.length());
    for (image, steps) in steps.iter().enumerate() {
        let inverse = steps.map(|s| 1.0 / s);
        // `quantized`: [lane][point][tiles_y][span].
        for (lane, q) in quantized.chunks_exact_mut(POINTS * length).enumerate() {
            let channel = target.group * 4 + lane;
            if channel >= tiling.channels {
                q.fill(ZERO);
                continue;
            }
            transform.run(tiling.plane(x, image, channel));
            for (p, q) in q.chunks_exact_mut(length).enumerate() {
                for (q, v) in q.iter_mut().zip(transform.point(p)) {
                    *q = to_byte((v * inverse[p]).clamp(-127.0, 127.0));
                }
            }
        }
        for p in 0..POINTS {
            let lane = |l: usize| &quantized[(l * POINTS + p) * length..][..length];
            let lanes = [lane(0), lane(1), lane(2), lane(3)];
            // SAFETY: this task is the group's only writer, and each
            // (image, point) is written once.
            let dst = unsafe { target.words(image, p) };
            for (ty, row) in dst.chunks_exact_mut(4 * n).enumerate() {
                let from = ty * (n + 1);
                let [a, b, c, d] = lanes.map(|l| &l[from..][..n]);
                let words = row.as_mut_ptr().cast::<u32>();
                let bytes = a.iter().zip(b).zip(c).zip(d);
                for (t, (((a, b), c), d)) in bytes.enumerate() {
                    let word = u32::from_le_bytes([*a, *b, *c, *d]);
                    // SAFETY: word t of the row's 4 n bytes.
                    unsafe { words.add(t).write_unaligned(word) };
                }
            }
        }
    }
}

avx2_dispatch!(fn pack_group(
    x: &[f32],
    tiling: &Tiling,
    steps: &[[f32; POINTS]],
    transform: &mut PlaneTransform,
    quantized: &mut [u8],
    target: PackTarget,
) -> () = pack_group_body);

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
    /// Pixels of one output plane, and of one of its rows.
    plane: usize,
    width: usize,
    /// The tiles' spots, padded to `columns` (the padding is never written).
    spots: Vec<TileSpot>,
    tiles: usize,
    columns: usize,
    packed: &'a [u8],
    /// `[POINTS][columns]`: the input step of each tile's image.
    column_steps: Vec<f32>,
    /// The layer's output, `[N, O, H, W]`.
    out: SharedMut,
}

/// Output channels `rb * MR..+MR` for tile columns `col..col + NR`.
#[inline(always)]
fn output_tile_body(
    conv: &QuantizedWinogradConv,
    pass: &OutputPass,
    rb: usize,
    col: usize,
    acc: &mut [i32],
) {
    let o = conv.out_channels;
    let rows = padded(o, MR);
    let depth4 = padded(conv.in_channels, 4);
    let point_len = depth4 * pass.columns;
    for p in 0..POINTS {
        // SAFETY: `acc` holds POINTS x MR x NR values; the patches hold
        // columns col..col + NR (columns is a multiple of NR).
        unsafe {
            micro_tile(
                &conv.kernels[(p * rows + rb * MR) * depth4..][..MR * depth4],
                &pass.packed[p * point_len..][..point_len],
                depth4,
                pass.columns,
                col,
                acc.as_mut_ptr().add(p * MR * NR),
                NR,
            )
        };
    }
    let spots = &pass.spots[col..][..pass.tiles.saturating_sub(col).min(NR)];
    let mut m = [[0f32; NR]; POINTS];
    for r in 0..MR.min(o.saturating_sub(rb * MR)) {
        let oc = rb * MR + r;
        for (p, m) in m.iter_mut().enumerate() {
            let step = conv.kernel_steps[p * rows + oc];
            let zero = conv.zero_sums[p * rows + oc];
            let sums: &[i32; NR] = acc[(p * MR + r) * NR..][..NR].try_into().expect("NR");
            let steps: &[f32; NR] = pass.column_steps[p * pass.columns + col..][..NR]
                .try_into()
                .expect("NR");
            // In eights: written as one loop of 32, it was unrolled into
            // scalar code before it could be vectorised.
            for ((m, sums), steps) in m
                .chunks_exact_mut(8)
                .zip(sums.chunks_exact(8))
                .zip(steps.chunks_exact(8))
            {
                let lanes: [f32; 8] =
                    std::array::from_fn(|l| (sums[l] - zero) as f32 * (step * steps[l]));
                m.copy_from_slice(&lanes);
            }
        }
        // Aᵀ m: two rows of four.
        let mut half = [[[0f32; NR]; ALPHA]; BLOCK];
        for k in 0..ALPHA {
            let (m0, m1, m2, m3) = (&m[k], &m[ALPHA + k], &m[2 * ALPHA + k], &m[3 * ALPHA + k]);
            for j in 0..NR {
                half[0][k][j] = m0[j] + m1[j] + m2[j];
                half[1][k][j] = m1[j] - m2[j] - m3[j];
            }
        }
        // (Aᵀ m) A, bias and activation: the 2x2 blocks, row by row.
        let bias = conv.bias[oc];
        let mut block = [[0f32; NR]; BLOCK * BLOCK];
        for (a, t) in half.iter().enumerate() {
            let (left, right) = block[a * BLOCK..].split_at_mut(1);
            for j in 0..NR {
                left[0][j] = t[0][j] + t[1][j] + t[2][j] + bias;
                right[0][j] = t[1][j] - t[2][j] - t[3][j] + bias;
            }
        }
        conv.act.apply_slice(block.as_flattened_mut());
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

avx2_dispatch!(fn output_tile(
    conv: &QuantizedWinogradConv,
    pass: &OutputPass,
    rb: usize,
    col: usize,
    acc: &mut [i32],
) -> () = output_tile_body);

impl CustomOp1 for QuantizedWinogradConv {
    fn name(&self) -> &'static str {
        "int8-winograd-conv3x3"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, (n, c, h, w)) = conv_input(self.name(), storage, layout, self.in_channels)?;
        let o = self.out_channels;
        let tiling = Tiling::new(c, h, w);
        let tiles = n * tiling.per_image();
        let columns = padded(tiles, NR);
        let steps = self.input_steps(x, &tiling, n);
        let packed = self.packed_inputs(x, &tiling, &steps, columns);
        let mut column_steps = vec![1f32; POINTS * columns];
        for (p, row) in column_steps.chunks_exact_mut(columns).enumerate() {
            for (tile, s) in row[..tiles].iter_mut().enumerate() {
                *s = steps[tile / tiling.per_image()][p];
            }
        }
        // SAFETY: every output pixel lies in one tile, and every tile's
        // block is written for every output channel.
        let out = unsafe {
            super::filled(n * o * h * w, |out| {
                let pass = OutputPass {
                    plane: h * w,
                    width: w,
                    spots: tiling.spots(n, columns),
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
                    || vec![0i32; POINTS * MR * NR],
                    |acc, rb, col| output_tile(self, &pass, rb, col, acc),
                );
            })
        };
        Ok((CpuStorage::F32(out), Shape::from((n, o, h, w))))
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
            for image in 0..n {
                let (ours, theirs) = (ours.get(image)?, theirs.get(image)?);
                let err = (&ours - &theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
                let range = theirs.abs()?.max_all()?.to_scalar::<f32>()?;
                // 0.028 the worst seen in 15 runs of every case (the 1x1
                // images: 8 products per output, little averaging); a wrong
                // transform is off by about the range itself.
                assert!(
                    err <= 0.05 * range,
                    "n{n} c{c} o{o} {h}x{w} image {image}: error {err} of range {range}"
                );
            }
        }
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
