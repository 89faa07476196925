//! Image to model input.
//!
//! Each image's resize is worked out first as a [`ResizePlan`] (which source
//! pixels each input pixel blends, and how the blend becomes an input
//! value); the plan then runs on the CPU here, or on the GPU
//! (`cuda/ops.cu`) when the model runs there: then the frames' bytes cross
//! the bus instead of the model input (about as many), and the host does
//! none of the per-pixel work. NV12 frames a hardware decoder left in GPU
//! memory do not cross it at all.

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use crate::ops::kernel_u32;
use crate::{ImageView, Pixels};

/// The bilinear blend of the bytes at `left` and `right` of the `top` and
/// `bottom` rows: along the rows by `fx`, then between them by `fy`.
#[inline(always)]
fn bilinear((top, bottom): (&[u8], &[u8]), (left, right): (usize, usize), fx: f32, fy: f32) -> f32 {
    let (tl, tr) = (top[left] as f32, top[right] as f32);
    let (bl, br) = (bottom[left] as f32, bottom[right] as f32);
    let upper = tl + (tr - tl) * fx;
    let lower = bl + (br - bl) * fx;
    upper + (lower - upper) * fy
}

/// For each output index: the two source indices and the weight of the second.
/// Positions are computed in f64, as TensorFlow.js does, so the fractions
/// match the original runtime to the last bit that matters.
fn taps(input: usize, output: usize) -> Vec<(usize, usize, f32)> {
    let scale = input as f64 / output as f64;
    (0..output)
        .map(|o| {
            let src = o as f64 * scale;
            let lo = (src.floor() as usize).min(input - 1);
            let hi = (src.ceil() as usize).min(input - 1);
            (lo, hi, (src - src.floor()) as f32)
        })
        .collect()
}

/// How an image is fitted into a model input of another shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Scaled to fill the input, aspect ratio not kept (darknet, OpenCV DNN).
    Stretch,
    /// Scaled to fit inside, aspect kept, centred, the rest grey 114
    /// (Ultralytics' letterbox).
    Letterbox,
}

/// Where the image landed inside the model input: input pixel
/// `(x, y)` is image pixel `((x - left) / scale_x, (y - top) / scale_y)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    pub left: f32,
    pub top: f32,
    pub scale_x: f32,
    pub scale_y: f32,
}

impl Placement {
    /// Maps a point from model-input pixels back to image pixels.
    pub fn to_image(&self, x: f32, y: f32) -> (f32, f32) {
        (
            (x - self.left) / self.scale_x,
            (y - self.top) / self.scale_y,
        )
    }
}

/// Ultralytics fills letterbox borders with this grey level.
const LETTERBOX_FILL: u8 = 114;

/// One image's bilinear resize into planar model input: input pixel
/// `(x, y)` inside the resized image blends the source pixels of column tap
/// `x - left` and row tap `y - top`; the blend, rounded to 8 bits if
/// `round`, becomes `value * scale + offset`. The bands around the resized
/// image hold `fill`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResizePlan {
    /// Per resized column (row): the two source columns (rows) and the
    /// weight of the second.
    pub(crate) x_taps: Vec<(usize, usize, f32)>,
    pub(crate) y_taps: Vec<(usize, usize, f32)>,
    pub(crate) left: usize,
    pub(crate) top: usize,
    pub(crate) round: bool,
    pub(crate) scale: f32,
    pub(crate) offset: f32,
    pub(crate) fill: f32,
}

impl ResizePlan {
    /// The whole input, with TensorFlow's original bilinear rule
    /// (`align_corners = false`, no half-pixel centres: source coordinate =
    /// destination coordinate x scale), as `pixel * scale + offset`.
    ///
    /// The SSD graphs exported by the TF Object Detection API resize this
    /// way; matching it exactly keeps our scores within a hair of the
    /// original runtime.
    pub fn tensorflow(
        image: &ImageView<'_>,
        out_w: usize,
        out_h: usize,
        scale: f32,
        offset: f32,
    ) -> Self {
        Self {
            x_taps: taps(image.width, out_w),
            y_taps: taps(image.height, out_h),
            left: 0,
            top: 0,
            round: false,
            scale,
            offset,
            fill: offset,
        }
    }

    /// Fitted as `fit` says, with OpenCV's `INTER_LINEAR` rule (half-pixel
    /// centres, results rounded to 8 bits, as `cv2.resize` on uint8 images
    /// gives), as `pixel * scale`. The runtimes these models come from
    /// resize this way, so matching it keeps scores where they were trained.
    pub fn fit(
        image: &ImageView<'_>,
        out_w: usize,
        out_h: usize,
        fit: Fit,
        scale: f32,
    ) -> (Self, Placement) {
        let placement = match fit {
            Fit::Stretch => Placement {
                left: 0.0,
                top: 0.0,
                scale_x: out_w as f32 / image.width as f32,
                scale_y: out_h as f32 / image.height as f32,
            },
            Fit::Letterbox => {
                let r = (out_w as f32 / image.width as f32).min(out_h as f32 / image.height as f32);
                // At least a pixel: a 1x2000 strip must not scale to
                // nothing (and its boxes to NaN).
                let (w, h) = (
                    (image.width as f32 * r).round().max(1.0),
                    (image.height as f32 * r).round().max(1.0),
                );
                // Ultralytics rounds the split of the padding this way.
                let left = ((out_w as f32 - w) / 2.0 - 0.1).round().max(0.0);
                let top = ((out_h as f32 - h) / 2.0 - 0.1).round().max(0.0);
                Placement {
                    left,
                    top,
                    scale_x: w / image.width as f32,
                    scale_y: h / image.height as f32,
                }
            }
        };
        let (left, top) = (placement.left as usize, placement.top as usize);
        let inner_w = ((image.width as f32 * placement.scale_x).round() as usize).min(out_w - left);
        let inner_h = ((image.height as f32 * placement.scale_y).round() as usize).min(out_h - top);
        let plan = Self {
            x_taps: half_pixel_taps(image.width, inner_w),
            y_taps: half_pixel_taps(image.height, inner_h),
            left,
            top,
            round: true,
            scale,
            offset: 0.0,
            fill: LETTERBOX_FILL as f32 * scale,
        };
        (plan, placement)
    }

    /// The factor from an 8-bit level to a model input value.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// Writes planar `[3, out_h, out_w]` into `dst` on the CPU, rows in
    /// parallel: one image (batch 1) is otherwise one thread's work, about
    /// 2 ms of a YOLOv3-tiny frame on this project's CPU.
    pub fn run(
        &self,
        image: &ImageView<'_>,
        (out_w, out_h): (usize, usize),
        dst: &mut [f32],
    ) -> candle_core::Result<()> {
        let Some(rgb) = image.rgb() else {
            candle_core::bail!("{ON_GPU}")
        };
        let image = RgbImage {
            width: image.width,
            rgb,
        };
        let plane = out_w * out_h;
        assert_eq!(dst.len(), 3 * plane, "destination size");
        #[cfg(target_arch = "x86_64")]
        let avx2 = std::arch::is_x86_feature_detected!("avx2");
        let (red, rest) = dst.split_at_mut(plane);
        let (green, blue) = rest.split_at_mut(plane);
        red.par_chunks_mut(out_w)
            .zip(green.par_chunks_mut(out_w))
            .zip(blue.par_chunks_mut(out_w))
            .enumerate()
            .for_each(|(y, ((r, g), b))| {
                let rows = [r, g, b];
                #[cfg(target_arch = "x86_64")]
                if avx2 {
                    // SAFETY: the CPU has the features the function was compiled for.
                    return unsafe { resize_row_avx2(&image, self, y, rows) };
                }
                resize_row(&image, self, y, rows)
            });
        Ok(())
    }
}

/// What the CPU path says of a frame that is in GPU memory.
const ON_GPU: &str = "a frame in GPU memory reached a model on the CPU";

/// The CPU resize's view of an image: its width and its packed RGB rows.
struct RgbImage<'a> {
    width: usize,
    rgb: &'a [u8],
}

/// Output row `y` of the three planes; a separate function so it can be
/// compiled twice. Baseline x86-64 has no instruction for `round`, so each
/// of the three per pixel was a call into libm (5 % of YOLOv3-tiny's
/// frame); with AVX2 it is inlined, with the same result.
#[inline(always)]
fn resize_row(image: &RgbImage<'_>, r: &ResizePlan, y: usize, rows: [&mut [f32]; 3]) {
    if r.round {
        blend_row::<true>(image, r, y, rows)
    } else {
        blend_row::<false>(image, r, y, rows)
    }
}

/// [`resize_row`] for one rounding rule, so the loop does not branch on it.
#[inline(always)]
fn blend_row<const ROUND: bool>(
    image: &RgbImage<'_>,
    r: &ResizePlan,
    y: usize,
    rows: [&mut [f32]; 3],
) {
    let inside = y.checked_sub(r.top).and_then(|iy| r.y_taps.get(iy));
    let Some(&(t, b, fy)) = inside else {
        for row in rows {
            row.fill(r.fill);
        }
        return;
    };
    let stride = image.width * 3;
    let top_row = &image.rgb[t * stride..(t + 1) * stride];
    let bottom_row = &image.rgb[b * stride..(b + 1) * stride];
    for (c, row) in rows.into_iter().enumerate() {
        let (band, rest) = row.split_at_mut(r.left);
        band.fill(r.fill);
        let (pixels, band) = rest.split_at_mut(r.x_taps.len());
        band.fill(r.fill);
        for (d, &(l, rt, fx)) in pixels.iter_mut().zip(&r.x_taps) {
            let v = bilinear((top_row, bottom_row), (l * 3 + c, rt * 3 + c), fx, fy);
            let v = if ROUND { v.round() } else { v };
            *d = v * r.scale + r.offset;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn resize_row_avx2(image: &RgbImage<'_>, r: &ResizePlan, y: usize, rows: [&mut [f32]; 3]) {
    resize_row(image, r, y, rows)
}

/// Runs each image's plan into one `[N, 3, out_h, out_w]` batch of `dtype`
/// on `device`: on the CPU, then copied over; on CUDA, on the GPU from the
/// images' bytes, or from their NV12 frames where they are in GPU memory.
pub fn planar_batch(
    images: &[ImageView<'_>],
    plans: &[ResizePlan],
    (out_w, out_h): (usize, usize),
    device: &Device,
    dtype: DType,
) -> candle_core::Result<Tensor> {
    assert_eq!(images.len(), plans.len(), "one plan per image");
    #[cfg(feature = "cuda")]
    if let Device::Cuda(gpu) = device {
        return cuda::planar_batch(gpu, images, plans, (out_w, out_h), dtype);
    }
    if images.iter().any(|i| i.rgb().is_none()) {
        candle_core::bail!("{ON_GPU}")
    }
    let per_image = 3 * out_w * out_h;
    let mut batch = vec![0f32; images.len() * per_image];
    batch
        .par_chunks_mut(per_image)
        .zip(images.par_iter().zip(plans))
        .try_for_each(|(dst, (image, plan))| plan.run(image, (out_w, out_h), dst))?;
    Tensor::from_vec(batch, (images.len(), 3, out_h, out_w), device)?.to_dtype(dtype)
}

/// What the resize kernels of `cuda/ops.cu` share: every plan's taps,
/// columns then rows, as index pairs and weights, and the batch's one rule
/// for rounding, scale, offset and fill.
#[doc(hidden)]
#[derive(Debug)]
pub struct TapTables {
    pub tap_index: Vec<u32>,
    pub tap_frac: Vec<f32>,
    pub images: u32,
    pub out_w: u32,
    pub out_h: u32,
    pub scale: f32,
    pub offset: f32,
    pub fill: f32,
    pub round: i32,
}

/// Where one plan sits in [`TapTables`]: its left and top bands, its
/// resized width and height, where its column and row taps start.
type PlanWords = [u32; 6];

impl TapTables {
    fn new(
        plans: &[ResizePlan],
        (out_w, out_h): (usize, usize),
    ) -> candle_core::Result<(Self, Vec<PlanWords>)> {
        let Some(first) = plans.first() else {
            candle_core::bail!("resize: an empty batch")
        };
        let rule = |p: &ResizePlan| (p.round, p.scale, p.offset, p.fill);
        if plans.iter().any(|p| rule(p) != rule(first)) {
            candle_core::bail!("resize: one batch takes one rounding, scale, offset and fill")
        }
        let mut tables = Self {
            tap_index: Vec::new(),
            tap_frac: Vec::new(),
            images: kernel_u32("resize", plans.len())?,
            out_w: kernel_u32("resize", out_w)?,
            out_h: kernel_u32("resize", out_h)?,
            scale: first.scale,
            offset: first.offset,
            fill: first.fill,
            round: i32::from(first.round),
        };
        let mut words = Vec::with_capacity(plans.len());
        for plan in plans {
            let taps_at = tables.tap_frac.len();
            for &(lo, hi, frac) in plan.x_taps.iter().chain(&plan.y_taps) {
                tables
                    .tap_index
                    .extend([kernel_u32("resize", lo)?, kernel_u32("resize", hi)?]);
                tables.tap_frac.push(frac);
            }
            words.push([
                kernel_u32("resize", plan.left)?,
                kernel_u32("resize", plan.top)?,
                kernel_u32("resize", plan.x_taps.len())?,
                kernel_u32("resize", plan.y_taps.len())?,
                kernel_u32("resize", taps_at)?,
                kernel_u32("resize", taps_at + plan.x_taps.len())?,
            ]);
        }
        Ok((tables, words))
    }

    /// Values the kernel writes: three planes per image.
    pub fn outputs(&self) -> usize {
        3 * self.images as usize * self.out_w as usize * self.out_h as usize
    }
}

/// A batch's arguments for `resize_planar` in `cuda/ops.cu`: every image's
/// bytes one after another and per image [`Self::GEOMETRY_WORDS`] words of
/// `geometry` (width, left and top bands, resized width and height, where
/// its column and row taps start, where its bytes start). Public for the
/// test that runs the kernel's source on the host (`cuda-emulation`).
#[doc(hidden)]
#[derive(Debug)]
pub struct GpuResizeBatch {
    pub rgb: Vec<u8>,
    pub geometry: Vec<u32>,
    pub tables: TapTables,
}

impl GpuResizeBatch {
    /// `GEOMETRY_WORDS` in `cuda/ops.cu`.
    pub const GEOMETRY_WORDS: usize = 8;

    pub fn new(
        images: &[ImageView<'_>],
        plans: &[ResizePlan],
        size: (usize, usize),
    ) -> candle_core::Result<Self> {
        let (tables, words) = TapTables::new(plans, size)?;
        let mut rgb = Vec::with_capacity(images.iter().map(|i| 3 * i.width * i.height).sum());
        let mut geometry = Vec::with_capacity(images.len() * Self::GEOMETRY_WORDS);
        for (image, [left, top, inner_w, inner_h, columns_at, rows_at]) in images.iter().zip(words)
        {
            let Some(bytes) = image.rgb() else {
                candle_core::bail!("resize: an NV12 frame in a batch of RGB images")
            };
            geometry.extend([
                kernel_u32("resize", image.width)?,
                left,
                top,
                inner_w,
                inner_h,
            ]);
            geometry.extend([columns_at, rows_at, kernel_u32("resize", rgb.len())?]);
            rgb.extend_from_slice(bytes);
        }
        Ok(Self {
            rgb,
            geometry,
            tables,
        })
    }
}

/// A batch's arguments for `resize_nv12_planar` in `cuda/ops.cu`: per frame
/// its two planes' addresses in `planes` and [`Self::GEOMETRY_WORDS`] words
/// of `geometry` (the plan's bands, size and taps as for RGB; the size the
/// plan was made for; the frame's size; its two pitches; its colour code).
/// Public for the test that runs the kernel's source on the host.
#[doc(hidden)]
#[derive(Debug)]
pub struct Nv12ResizeBatch {
    pub planes: Vec<u64>,
    pub geometry: Vec<u32>,
    pub tables: TapTables,
    /// The CUDA context every frame belongs to.
    pub context: usize,
}

impl Nv12ResizeBatch {
    /// `NV12_GEOMETRY_WORDS` in `cuda/ops.cu`.
    pub const GEOMETRY_WORDS: usize = 13;

    pub fn new(
        images: &[ImageView<'_>],
        plans: &[ResizePlan],
        size: (usize, usize),
    ) -> candle_core::Result<Self> {
        let (tables, words) = TapTables::new(plans, size)?;
        let mut planes = Vec::with_capacity(2 * images.len());
        let mut geometry = Vec::with_capacity(images.len() * Self::GEOMETRY_WORDS);
        let mut context = None;
        for (image, plan_words) in images.iter().zip(words) {
            let Pixels::CudaNv12(frame) = image.pixels else {
                candle_core::bail!("resize: an RGB image in a batch of NV12 frames")
            };
            if *context.get_or_insert(frame.context) != frame.context {
                candle_core::bail!("resize: frames of two CUDA contexts in one batch")
            }
            let color = u32::from(frame.color.bt709) | u32::from(frame.color.full_range) << 1;
            geometry.extend(plan_words);
            for word in [
                image.width,
                image.height,
                frame.width,
                frame.height,
                frame.luma_pitch,
                frame.chroma_pitch,
            ] {
                geometry.push(kernel_u32("resize", word)?);
            }
            geometry.push(color);
            planes.extend([frame.luma, frame.chroma]);
        }
        Ok(Self {
            planes,
            geometry,
            tables,
            context: context.unwrap_or(0),
        })
    }
}

/// The GPU's side of [`planar_batch`]: `resize_planar_<type>` and
/// `resize_nv12_planar_<type>` in `cuda/ops.cu`.
#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DeviceRepr, PushKernelArg};
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::op::BackpropOp;
    use candle_core::{CudaDevice, CudaStorage, DType, Storage, Tensor};

    use super::{GpuResizeBatch, Nv12ResizeBatch, ResizePlan, TapTables};
    use crate::ops::cuda::{function, grid};
    use crate::ImageView;

    pub(super) fn planar_batch(
        gpu: &CudaDevice,
        images: &[ImageView<'_>],
        plans: &[ResizePlan],
        size: (usize, usize),
        dtype: DType,
    ) -> candle_core::Result<Tensor> {
        if images.is_empty() {
            let device = candle_core::Device::Cuda(gpu.clone());
            return Tensor::zeros((0, 3, size.1, size.0), dtype, &device);
        }
        let (on_host, on_gpu): (Vec<usize>, Vec<usize>) =
            (0..images.len()).partition(|&i| images[i].rgb().is_some());
        if on_gpu.is_empty() {
            return resize(gpu, images, plans, Kind::Rgb, size, dtype);
        }
        if on_host.is_empty() {
            return resize(gpu, images, plans, Kind::Nv12, size, dtype);
        }
        let part = |which: &[usize], kind| {
            let (images, plans): (Vec<ImageView<'_>>, Vec<ResizePlan>) =
                which.iter().map(|&i| (images[i], plans[i].clone())).unzip();
            resize(gpu, &images, &plans, kind, size, dtype)
        };
        // Cameras decoded in software and on the GPU in one batch: each
        // kind through its kernel, then back in the callers' order.
        let joined = Tensor::cat(&[part(&on_host, Kind::Rgb)?, part(&on_gpu, Kind::Nv12)?], 0)?;
        let mut at = vec![0u32; images.len()];
        for (position, &image) in on_host.iter().chain(&on_gpu).enumerate() {
            at[image] = position as u32;
        }
        let at = Tensor::new(at, joined.device())?;
        joined.index_select(&at, 0)
    }

    /// Where a batch's pixels are: every image's, one kind per kernel.
    #[derive(Clone, Copy)]
    enum Kind {
        Rgb,
        Nv12,
    }

    /// One kind of image through its kernel.
    fn resize(
        gpu: &CudaDevice,
        images: &[ImageView<'_>],
        plans: &[ResizePlan],
        kind: Kind,
        size: (usize, usize),
        dtype: DType,
    ) -> candle_core::Result<Tensor> {
        match kind {
            Kind::Nv12 => {
                let batch = Nv12ResizeBatch::new(images, plans, size)?;
                let ours = gpu.cuda_stream().context().cu_ctx() as usize;
                if batch.context != ours {
                    candle_core::bail!(
                        "an NV12 frame of another CUDA context than the model's; \
                         its memory cannot be read here"
                    )
                }
                let planes = gpu.clone_htod(&batch.planes[..])?;
                let (geometry, tables) = (&batch.geometry, &batch.tables);
                run(gpu, "resize_nv12_planar", &planes, geometry, tables, dtype)
            }
            Kind::Rgb => {
                let batch = GpuResizeBatch::new(images, plans, size)?;
                let rgb = gpu.clone_htod(&batch.rgb[..])?;
                run(
                    gpu,
                    "resize_planar",
                    &rgb,
                    &batch.geometry,
                    &batch.tables,
                    dtype,
                )
            }
        }
    }

    /// Runs `<kernel>_<dtype>` on `pixels` (RGB bytes or planes' addresses).
    fn run<P: DeviceRepr>(
        gpu: &CudaDevice,
        kernel: &str,
        pixels: &CudaSlice<P>,
        geometry: &[u32],
        tables: &TapTables,
        dtype: DType,
    ) -> candle_core::Result<Tensor> {
        let storage = match dtype {
            DType::F32 => {
                launch::<f32, P>(gpu, &format!("{kernel}_f32"), pixels, geometry, tables)?
            }
            DType::F16 => {
                launch::<half::f16, P>(gpu, &format!("{kernel}_f16"), pixels, geometry, tables)?
            }
            DType::BF16 => {
                launch::<half::bf16, P>(gpu, &format!("{kernel}_bf16"), pixels, geometry, tables)?
            }
            other => candle_core::bail!("{kernel}: no CUDA kernel for {other:?}"),
        };
        let shape = (
            tables.images as usize,
            3,
            tables.out_h as usize,
            tables.out_w as usize,
        );
        Ok(Tensor::from_storage(
            Storage::Cuda(storage),
            shape,
            BackpropOp::none(),
            false,
        ))
    }

    fn launch<T: CudaDType + DeviceRepr, P: DeviceRepr>(
        gpu: &CudaDevice,
        name: &str,
        pixels: &CudaSlice<P>,
        geometry: &[u32],
        t: &TapTables,
    ) -> candle_core::Result<CudaStorage> {
        let geometry = gpu.clone_htod(geometry)?;
        let tap_index = gpu.clone_htod(&t.tap_index[..])?;
        let tap_frac = gpu.clone_htod(&t.tap_frac[..])?;
        let func = function(gpu, name)?;
        // SAFETY: the kernel writes all three planes of every pixel.
        let mut out = unsafe { gpu.alloc::<T>(t.outputs())? };
        let stream = gpu.cuda_stream();
        let mut args = stream.launch_builder(&func);
        args.arg(pixels)
            .arg(&geometry)
            .arg(&tap_index)
            .arg(&tap_frac)
            .arg(&mut out)
            .arg(&t.images)
            .arg(&t.out_w)
            .arg(&t.out_h)
            .arg(&t.scale)
            .arg(&t.offset)
            .arg(&t.fill)
            .arg(&t.round);
        // SAFETY: the arguments match the resize kernels' parameters.
        unsafe { args.launch(grid(t.outputs() / 3)) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(out, gpu.clone()))
    }
}

/// OpenCV's bilinear taps: source = (destination + 0.5) x ratio - 0.5,
/// clamped to the image.
fn half_pixel_taps(input: usize, output: usize) -> Vec<(usize, usize, f32)> {
    let ratio = input as f64 / output as f64;
    (0..output)
        .map(|o| {
            let src = ((o as f64 + 0.5) * ratio - 0.5).max(0.0);
            let lo = (src.floor() as usize).min(input - 1);
            let hi = (lo + 1).min(input - 1);
            (lo, hi, (src - src.floor()) as f32)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fits `img` into an input `out_w` wide (as high as `out` holds) at scale 1.
    fn fit(img: &ImageView<'_>, out_w: usize, how: Fit, out: &mut [f32]) -> Placement {
        let out_h = out.len() / 3 / out_w;
        let (plan, placement) = ResizePlan::fit(img, out_w, out_h, how, 1.0);
        plan.run(img, (out_w, out_h), out).unwrap();
        placement
    }

    #[test]
    fn letterbox_centres_the_image_and_maps_points_back() {
        // 4x2 white image into 8x8: scaled 2x to 8x4, 2 grey rows above and below.
        let rgb = vec![255u8; 4 * 2 * 3];
        let img = ImageView::new(4, 2, &rgb).unwrap();
        let mut out = vec![0.0; 3 * 8 * 8];
        let p = fit(&img, 8, Fit::Letterbox, &mut out);
        assert_eq!((p.left, p.top, p.scale_x, p.scale_y), (0.0, 2.0, 2.0, 2.0));
        let column: Vec<f32> = (0..8).map(|y| out[y * 8]).collect();
        assert_eq!(
            column,
            vec![114.0, 114.0, 255.0, 255.0, 255.0, 255.0, 114.0, 114.0]
        );
        assert_eq!(p.to_image(8.0, 6.0), (4.0, 2.0));
    }

    #[test]
    fn a_thin_strip_letterboxes_to_at_least_a_pixel() {
        // 1x200 into 8x8 scales to 0.04 pixels wide: kept at one, so
        // points map back to finite image coordinates.
        let rgb = vec![200u8; 200 * 3];
        let img = ImageView::new(1, 200, &rgb).unwrap();
        let mut out = vec![0.0; 3 * 8 * 8];
        let p = fit(&img, 8, Fit::Letterbox, &mut out);
        let (x, y) = p.to_image(4.0, 4.0);
        assert!(x.is_finite() && y.is_finite(), "({x}, {y})");
    }

    #[test]
    fn stretch_uses_half_pixel_centres() {
        // 4x1 ramp 0, 10, 20, 30 halved: OpenCV averages pairs -> 5, 25.
        let rgb: Vec<u8> = [0u8, 10, 20, 30].iter().flat_map(|&v| [v, v, v]).collect();
        let img = ImageView::new(4, 1, &rgb).unwrap();
        let mut out = vec![0.0; 3 * 2];
        let p = fit(&img, 2, Fit::Stretch, &mut out);
        assert_eq!(&out[..2], &[5.0, 25.0]);
        assert_eq!(p.to_image(2.0, 1.0), (4.0, 1.0));
    }

    #[test]
    fn halving_takes_every_other_pixel() {
        // 4x1 grey ramp 0, 10, 20, 30 -> 2x1 takes source x = 0 and 2.
        let rgb: Vec<u8> = [0u8, 10, 20, 30].iter().flat_map(|&v| [v, v, v]).collect();
        let img = ImageView::new(4, 1, &rgb).unwrap();
        let mut out = vec![0.0; 3 * 2];
        ResizePlan::tensorflow(&img, 2, 1, 1.0, 0.0)
            .run(&img, (2, 1), &mut out)
            .unwrap();
        assert_eq!(out, vec![0.0, 20.0, 0.0, 20.0, 0.0, 20.0]);
    }

    #[test]
    fn upscaling_interpolates_and_clamps_at_the_edge() {
        let rgb = [0u8, 0, 0, 100, 100, 100];
        let img = ImageView::new(2, 1, &rgb).unwrap();
        let mut out = vec![0.0; 3 * 4];
        ResizePlan::tensorflow(&img, 4, 1, 2.0 / 255.0, -1.0)
            .run(&img, (4, 1), &mut out)
            .unwrap();
        let red: Vec<f32> = out[..4].iter().map(|v| (v + 1.0) * 127.5).collect();
        let expect = [0.0, 50.0, 100.0, 100.0];
        for (got, want) in red.iter().zip(expect) {
            assert!((got - want).abs() < 1e-3, "{red:?}");
        }
    }
}
