//! Image to model input.

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
                let tl = top_row[left * 3 + c] as f32;
                let tr = top_row[right * 3 + c] as f32;
                let bl = bottom_row[left * 3 + c] as f32;
                let br = bottom_row[right * 3 + c] as f32;
                let t = tl + (tr - tl) * fx;
                let b = bl + (br - bl) * fx;
                let v = t + (b - t) * fy;
                dst[c * plane + oy * out_w + ox] = v * scale + offset;
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
