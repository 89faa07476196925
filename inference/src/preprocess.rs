//! Image to model input.
//!
//! Each image's resize is worked out first as a [`ResizePlan`] (which source
//! pixels each input pixel blends, and how the blend becomes an input
//! value); the plan then runs on the CPU here, or on the GPU
//! (`cuda/ops.cu`) when the model runs there: then the frames' bytes cross
//! the bus instead of the model input (about as many), and the host does
//! none of the per-pixel work.

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use crate::ops::kernel_u32;
use crate::ImageView;

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
                let (w, h) = (
                    (image.width as f32 * r).round(),
                    (image.height as f32 * r).round(),
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

    /// Writes planar `[3, out_h, out_w]` into `dst` on the CPU, rows in
    /// parallel: one image (batch 1) is otherwise one thread's work, about
    /// 2 ms of a YOLOv3-tiny frame on this project's CPU.
    pub fn run(&self, image: &ImageView<'_>, (out_w, out_h): (usize, usize), dst: &mut [f32]) {
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
                    return unsafe { resize_row_avx2(image, self, y, rows) };
                }
                resize_row(image, self, y, rows)
            });
    }
}

/// Output row `y` of the three planes; a separate function so it can be
/// compiled twice. Baseline x86-64 has no instruction for `round`, so each
/// of the three per pixel was a call into libm (5 % of YOLOv3-tiny's
/// frame); with AVX2 it is inlined, with the same result.
#[inline(always)]
fn resize_row(image: &ImageView<'_>, r: &ResizePlan, y: usize, rows: [&mut [f32]; 3]) {
    if r.round {
        blend_row::<true>(image, r, y, rows)
    } else {
        blend_row::<false>(image, r, y, rows)
    }
}

/// [`resize_row`] for one rounding rule, so the loop does not branch on it.
#[inline(always)]
fn blend_row<const ROUND: bool>(
    image: &ImageView<'_>,
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
unsafe fn resize_row_avx2(image: &ImageView<'_>, r: &ResizePlan, y: usize, rows: [&mut [f32]; 3]) {
    resize_row(image, r, y, rows)
}

/// Runs each image's plan into one `[N, 3, out_h, out_w]` batch of `dtype`
/// on `device`: on the CPU, then copied over; on CUDA, on the GPU from the
/// images' bytes.
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
    let per_image = 3 * out_w * out_h;
    let mut batch = vec![0f32; images.len() * per_image];
    batch
        .par_chunks_mut(per_image)
        .zip(images.par_iter().zip(plans))
        .for_each(|(dst, (image, plan))| plan.run(image, (out_w, out_h), dst));
    Tensor::from_vec(batch, (images.len(), 3, out_h, out_w), device)?.to_dtype(dtype)
}

/// A batch's arguments for `resize_planar` in `cuda/ops.cu`: every image's
/// bytes one after another, per image [`Self::GEOMETRY_WORDS`] words of
/// `geometry` (width, left and top bands, resized width and height, where
/// its column and row taps start, where its bytes start), and every plan's
/// taps, columns then rows, as index pairs and weights. Public for the test
/// that runs the kernel's source on the host (`cuda-emulation`).
#[doc(hidden)]
#[derive(Debug)]
pub struct GpuResizeBatch {
    pub rgb: Vec<u8>,
    pub geometry: Vec<u32>,
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

impl GpuResizeBatch {
    /// `GEOMETRY_WORDS` in `cuda/ops.cu`.
    pub const GEOMETRY_WORDS: usize = 8;

    pub fn new(
        images: &[ImageView<'_>],
        plans: &[ResizePlan],
        (out_w, out_h): (usize, usize),
    ) -> candle_core::Result<Self> {
        let Some(first) = plans.first() else {
            candle_core::bail!("resize: an empty batch")
        };
        let rule = |p: &ResizePlan| (p.round, p.scale, p.offset, p.fill);
        if plans.iter().any(|p| rule(p) != rule(first)) {
            candle_core::bail!("resize: one batch takes one rounding, scale, offset and fill")
        }
        let mut batch = Self {
            rgb: Vec::with_capacity(images.iter().map(|i| i.rgb.len()).sum()),
            geometry: Vec::with_capacity(images.len() * Self::GEOMETRY_WORDS),
            tap_index: Vec::new(),
            tap_frac: Vec::new(),
            images: kernel_u32("resize", images.len())?,
            out_w: kernel_u32("resize", out_w)?,
            out_h: kernel_u32("resize", out_h)?,
            scale: first.scale,
            offset: first.offset,
            fill: first.fill,
            round: i32::from(first.round),
        };
        for (image, plan) in images.iter().zip(plans) {
            let taps_at = batch.tap_frac.len();
            for &(lo, hi, frac) in plan.x_taps.iter().chain(&plan.y_taps) {
                batch
                    .tap_index
                    .extend([kernel_u32("resize", lo)?, kernel_u32("resize", hi)?]);
                batch.tap_frac.push(frac);
            }
            for word in [
                image.width,
                plan.left,
                plan.top,
                plan.x_taps.len(),
                plan.y_taps.len(),
                taps_at,
                taps_at + plan.x_taps.len(),
                batch.rgb.len(),
            ] {
                batch.geometry.push(kernel_u32("resize", word)?);
            }
            batch.rgb.extend_from_slice(image.rgb);
        }
        Ok(batch)
    }

    /// Values the kernel writes: three planes per image.
    pub fn outputs(&self) -> usize {
        3 * self.images as usize * self.out_w as usize * self.out_h as usize
    }
}

/// The GPU's side of [`planar_batch`]: `resize_planar_<type>` in `cuda/ops.cu`.
#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DeviceRepr, PushKernelArg};
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::op::BackpropOp;
    use candle_core::{CudaDevice, CudaStorage, DType, Storage, Tensor};

    use super::{GpuResizeBatch, ResizePlan};
    use crate::ops::cuda::{function, grid};
    use crate::ImageView;

    pub(super) fn planar_batch(
        gpu: &CudaDevice,
        images: &[ImageView<'_>],
        plans: &[ResizePlan],
        (out_w, out_h): (usize, usize),
        dtype: DType,
    ) -> candle_core::Result<Tensor> {
        if images.is_empty() {
            let device = candle_core::Device::Cuda(gpu.clone());
            return Tensor::zeros((0, 3, out_h, out_w), dtype, &device);
        }
        let batch = GpuResizeBatch::new(images, plans, (out_w, out_h))?;
        let storage = match dtype {
            DType::F32 => launch::<f32>(gpu, "f32", &batch)?,
            DType::F16 => launch::<half::f16>(gpu, "f16", &batch)?,
            DType::BF16 => launch::<half::bf16>(gpu, "bf16", &batch)?,
            other => candle_core::bail!("resize: no CUDA kernel for {other:?}"),
        };
        Ok(Tensor::from_storage(
            Storage::Cuda(storage),
            (images.len(), 3, out_h, out_w),
            BackpropOp::none(),
            false,
        ))
    }

    fn launch<T: CudaDType + DeviceRepr>(
        gpu: &CudaDevice,
        suffix: &str,
        b: &GpuResizeBatch,
    ) -> candle_core::Result<CudaStorage> {
        let rgb: CudaSlice<u8> = gpu.clone_htod(&b.rgb[..])?;
        let geometry = gpu.clone_htod(&b.geometry[..])?;
        let tap_index = gpu.clone_htod(&b.tap_index[..])?;
        let tap_frac = gpu.clone_htod(&b.tap_frac[..])?;
        let func = function(gpu, &format!("resize_planar_{suffix}"))?;
        // SAFETY: the kernel writes all three planes of every pixel.
        let mut out = unsafe { gpu.alloc::<T>(b.outputs())? };
        let stream = gpu.cuda_stream();
        let mut args = stream.launch_builder(&func);
        args.arg(&rgb)
            .arg(&geometry)
            .arg(&tap_index)
            .arg(&tap_frac)
            .arg(&mut out)
            .arg(&b.images)
            .arg(&b.out_w)
            .arg(&b.out_h)
            .arg(&b.scale)
            .arg(&b.offset)
            .arg(&b.fill)
            .arg(&b.round);
        // SAFETY: the arguments match `resize_planar`'s parameters.
        unsafe { args.launch(grid(b.outputs() / 3)) }.w()?;
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
        plan.run(img, (out_w, out_h), out);
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
        ResizePlan::tensorflow(&img, 2, 1, 1.0, 0.0).run(&img, (2, 1), &mut out);
        assert_eq!(out, vec![0.0, 20.0, 0.0, 20.0, 0.0, 20.0]);
    }

    #[test]
    fn upscaling_interpolates_and_clamps_at_the_edge() {
        let rgb = [0u8, 0, 0, 100, 100, 100];
        let img = ImageView::new(2, 1, &rgb).unwrap();
        let mut out = vec![0.0; 3 * 4];
        ResizePlan::tensorflow(&img, 4, 1, 2.0 / 255.0, -1.0).run(&img, (4, 1), &mut out);
        let red: Vec<f32> = out[..4].iter().map(|v| (v + 1.0) * 127.5).collect();
        let expect = [0.0, 50.0, 100.0, 100.0];
        for (got, want) in red.iter().zip(expect) {
            assert!((got - want).abs() < 1e-3, "{red:?}");
        }
    }
}
