//! Image to model input.

use rayon::prelude::*;

use crate::ImageView;

/// Resizes `image` to `out_w` x `out_h` with TensorFlow's original bilinear
/// rule (`align_corners = false`, no half-pixel centres: source coordinate =
/// destination coordinate x scale) and writes planar `[3, out_h, out_w]`
/// floats `pixel * scale + offset` into `dst`.
///
/// The SSD graphs exported by the TF Object Detection API resize this way;
/// matching it exactly keeps our scores within a hair of the original runtime.
pub fn resize_bilinear_planar(
    image: &ImageView<'_>,
    out_w: usize,
    out_h: usize,
    scale: f32,
    offset: f32,
    dst: &mut [f32],
) {
    assert_eq!(dst.len(), 3 * out_w * out_h, "destination size");
    let x_taps = taps(image.width, out_w);
    let y_taps = taps(image.height, out_h);
    let stride = image.width * 3;
    let plane = out_w * out_h;
    for (oy, &(top, bottom, fy)) in y_taps.iter().enumerate() {
        let top_row = &image.rgb[top * stride..(top + 1) * stride];
        let bottom_row = &image.rgb[bottom * stride..(bottom + 1) * stride];
        for (ox, &(left, right, fx)) in x_taps.iter().enumerate() {
            for c in 0..3 {
                let rows = (top_row, bottom_row);
                let v = bilinear(rows, (left * 3 + c, right * 3 + c), fx, fy);
                dst[c * plane + oy * out_w + ox] = v * scale + offset;
            }
        }
    }
}

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

/// Fits `image` into an `out_w` x `out_h` input as `fit` says, with OpenCV's
/// `INTER_LINEAR` rule (half-pixel centres, results rounded to 8 bits, as
/// `cv2.resize` on uint8 images gives), and writes planar `[3, out_h, out_w]`
/// floats `pixel * scale` into `dst`. The runtimes these models come from
/// resize this way, so matching it keeps scores where they were trained.
pub fn fit_planar(
    image: &ImageView<'_>,
    out_w: usize,
    out_h: usize,
    fit: Fit,
    scale: f32,
    dst: &mut [f32],
) -> Placement {
    assert_eq!(dst.len(), 3 * out_w * out_h, "destination size");
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
    let resize = Resize {
        x_taps: half_pixel_taps(image.width, inner_w),
        y_taps: half_pixel_taps(image.height, inner_h),
        top,
        left,
        scale,
        fill: LETTERBOX_FILL as f32 * scale,
    };
    // Row by row in parallel: one image (batch 1) is otherwise one thread's
    // work, about 2 ms of a YOLOv3-tiny frame on this project's CPU.
    #[cfg(target_arch = "x86_64")]
    let avx2 = std::arch::is_x86_feature_detected!("avx2");
    let plane = out_w * out_h;
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
                return unsafe { resize_row_avx2(image, &resize, y, rows) };
            }
            resize_row(image, &resize, y, rows)
        });
    placement
}

/// One bilinear resize into planes, as `fit_planar` worked it out.
struct Resize {
    x_taps: Vec<(usize, usize, f32)>,
    y_taps: Vec<(usize, usize, f32)>,
    top: usize,
    left: usize,
    scale: f32,
    /// What the letterbox's bands hold.
    fill: f32,
}

/// Output row `y` of the three planes; a separate function so it can be
/// compiled twice. Baseline x86-64 has no instruction for `round`, so each
/// of the three per pixel was a call into libm (5 % of YOLOv3-tiny's
/// frame); with AVX2 it is inlined, with the same result.
#[inline(always)]
fn resize_row(image: &ImageView<'_>, r: &Resize, y: usize, rows: [&mut [f32]; 3]) {
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
            *d = v.round() * r.scale;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn resize_row_avx2(image: &ImageView<'_>, r: &Resize, y: usize, rows: [&mut [f32]; 3]) {
    resize_row(image, r, y, rows)
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

    #[test]
    fn letterbox_centres_the_image_and_maps_points_back() {
        // 4x2 white image into 8x8: scaled 2x to 8x4, 2 grey rows above and below.
        let rgb = vec![255u8; 4 * 2 * 3];
        let img = ImageView::new(4, 2, &rgb).unwrap();
        let mut out = vec![0.0; 3 * 8 * 8];
        let p = fit_planar(&img, 8, 8, Fit::Letterbox, 1.0, &mut out);
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
        let p = fit_planar(&img, 2, 1, Fit::Stretch, 1.0, &mut out);
        assert_eq!(&out[..2], &[5.0, 25.0]);
        assert_eq!(p.to_image(2.0, 1.0), (4.0, 1.0));
    }

    #[test]
    fn halving_takes_every_other_pixel() {
        // 4x1 grey ramp 0, 10, 20, 30 -> 2x1 takes source x = 0 and 2.
        let rgb: Vec<u8> = [0u8, 10, 20, 30].iter().flat_map(|&v| [v, v, v]).collect();
        let img = ImageView::new(4, 1, &rgb).unwrap();
        let mut out = vec![0.0; 3 * 2];
        resize_bilinear_planar(&img, 2, 1, 1.0, 0.0, &mut out);
        assert_eq!(out, vec![0.0, 20.0, 0.0, 20.0, 0.0, 20.0]);
    }

    #[test]
    fn upscaling_interpolates_and_clamps_at_the_edge() {
        let rgb = [0u8, 0, 0, 100, 100, 100];
        let img = ImageView::new(2, 1, &rgb).unwrap();
        let mut out = vec![0.0; 3 * 4];
        resize_bilinear_planar(&img, 4, 1, 2.0 / 255.0, -1.0, &mut out);
        let red: Vec<f32> = out[..4].iter().map(|v| (v + 1.0) * 127.5).collect();
        let expect = [0.0, 50.0, 100.0, 100.0];
        for (got, want) in red.iter().zip(expect) {
            assert!((got - want).abs() < 1e-3, "{red:?}");
        }
    }
}
