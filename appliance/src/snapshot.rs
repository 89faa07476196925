//! Event snapshots: a JPEG of the object with some surroundings and its box
//! drawn, small enough to keep thousands.

use image::{ImageBuffer, Rgb, RgbImage};

const JPEG_QUALITY: u8 = 80;
/// Context kept around the object, as a fraction of its box on each side.
const MARGIN: f32 = 0.5;
/// A crop is never smaller than this, so tiny far-away objects stay legible.
const MIN_SIDE: f32 = 96.0;
const BOX_COLOUR: Rgb<u8> = Rgb([255, 64, 32]);

/// Crops `rgb` (`width` x `height`, packed RGB) around `bbox` (source
/// pixels), draws the box, encodes a JPEG. `None` if the frame is malformed.
pub fn event_snapshot(rgb: &[u8], width: u32, height: u32, bbox: [f32; 4]) -> Option<Vec<u8>> {
    let frame: RgbImage = ImageBuffer::from_raw(width, height, rgb.to_vec())?;
    let (w, h) = (width as f32, height as f32);
    let [x0, y0, x1, y1] = bbox;
    let (cx, cy) = ((x0 + x1) / 2.0, (y0 + y1) / 2.0);
    let side_w = ((x1 - x0) * (1.0 + 2.0 * MARGIN)).max(MIN_SIDE).min(w);
    let side_h = ((y1 - y0) * (1.0 + 2.0 * MARGIN)).max(MIN_SIDE).min(h);
    let left = (cx - side_w / 2.0).clamp(0.0, w - side_w);
    let top = (cy - side_h / 2.0).clamp(0.0, h - side_h);
    let (cw, ch) = (side_w as u32, side_h as u32);
    if cw == 0 || ch == 0 {
        return None;
    }
    let mut crop = image::imageops::crop_imm(&frame, left as u32, top as u32, cw, ch).to_image();
    draw_box(&mut crop, [x0 - left, y0 - top, x1 - left, y1 - top]);
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY)
        .encode_image(&crop)
        .ok()?;
    Some(out)
}

/// A 2-pixel rectangle, clipped to the image.
fn draw_box(img: &mut RgbImage, [x0, y0, x1, y1]: [f32; 4]) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let clamp_x = |v: f32| (v.round() as i64).clamp(0, w - 1);
    let clamp_y = |v: f32| (v.round() as i64).clamp(0, h - 1);
    let (x0, x1, y0, y1) = (clamp_x(x0), clamp_x(x1), clamp_y(y0), clamp_y(y1));
    for t in 0..2 {
        for x in x0..=x1 {
            for y in [(y0 + t).min(h - 1), (y1 - t).max(0)] {
                img.put_pixel(x as u32, y as u32, BOX_COLOUR);
            }
        }
        for y in y0..=y1 {
            for x in [(x0 + t).min(w - 1), (x1 - t).max(0)] {
                img.put_pixel(x as u32, y as u32, BOX_COLOUR);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crops_around_the_box_with_context_and_draws_it() {
        let (w, h) = (320u32, 240u32);
        let rgb = vec![100u8; (w * h * 3) as usize];
        let jpeg = event_snapshot(&rgb, w, h, [150.0, 100.0, 190.0, 200.0]).unwrap();
        let img = image::load_from_memory(&jpeg).unwrap().to_rgb8();
        // 40x100 box with half a box of context each side: 96 (minimum) x 200.
        assert_eq!((img.width(), img.height()), (96, 200));
        // The crop stays inside the 240-high frame (top at 40), so the box's
        // top edge (y = 100) lands at y = 60, drawn in the box colour
        // (allowing for JPEG loss).
        let edge = img.get_pixel(img.width() / 2, 60);
        assert!(edge[0] > 200 && edge[2] < 100, "{edge:?}");
        // A box at the frame's corner still gives a full-size crop.
        let jpeg = event_snapshot(&rgb, w, h, [0.0, 0.0, 30.0, 30.0]).unwrap();
        let img = image::load_from_memory(&jpeg).unwrap();
        assert_eq!((img.width(), img.height()), (96, 96));
        // A frame whose buffer does not match its size gives nothing.
        assert!(event_snapshot(&rgb[..10], w, h, [0.0, 0.0, 30.0, 30.0]).is_none());
    }
}
