//! What the reference-run tests share: the assets, the photos decoded the
//! way the reference runs saw them, and the rule for "same detections";
//! and what the CUDA kernel tests share.

#![allow(dead_code)] // each test binary uses its own part

use std::path::PathBuf;

use serde::Deserialize;
use vigil_inference::ops::Activation;
use vigil_inference::preprocess::{Fit, ResizePlan};
use vigil_inference::{CudaNv12, Detection, ImageView, YuvColor};

pub const IOU_MIN: f32 = 0.9;
pub const SCORE_TOLERANCE: f32 = 0.03;

#[derive(Deserialize)]
pub struct Reference {
    pub images: std::collections::BTreeMap<String, RefImage>,
}

#[derive(Deserialize)]
pub struct RefImage {
    pub width: usize,
    pub height: usize,
    pub detections: Vec<Detection>,
}

pub fn assets() -> PathBuf {
    std::env::var_os("VIGIL_TEST_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/assets"))
}

/// The JPEG decoder a reference run used. Decoders differ in IDCT and
/// chroma upsampling by a few levels per pixel, enough to move the score of a
/// small object by 0.05; decoding as the reference did makes the test a check
/// of the model port alone.
#[derive(Debug, Clone, Copy)]
pub enum JpegDecoder {
    /// jpeg-js, as TF.js in Node uses (`make test` installs it; see tests/support).
    JpegJs,
    /// libjpeg-turbo's `djpeg`, pixel-identical to OpenCV's `imread`
    /// (Debian's libjpeg-turbo-progs, installed by `make test`).
    LibjpegTurbo,
}

/// Decodes `path` to packed RGB with `decoder`.
pub fn load_rgb(path: &std::path::Path, decoder: JpegDecoder) -> Photo {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/jpeg-decode/decode.js");
    let mut command = match decoder {
        JpegDecoder::JpegJs => std::process::Command::new("node"),
        JpegDecoder::LibjpegTurbo => std::process::Command::new("djpeg"),
    };
    match decoder {
        JpegDecoder::JpegJs => command.arg(&script).arg(path),
        JpegDecoder::LibjpegTurbo => command.arg("-pnm").arg(path),
    };
    let out = command.output().unwrap_or_else(|e| {
        panic!("{decoder:?} decoder not installed (make test installs it): {e}")
    });
    assert!(
        out.status.success(),
        "{decoder:?} failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let (w, h, rgb) = match decoder {
        JpegDecoder::JpegJs => {
            // "W H\n" then the pixels.
            let end = out.stdout.iter().position(|&b| b == b'\n').expect("header");
            let header = std::str::from_utf8(&out.stdout[..end]).unwrap();
            let (w, h) = header.split_once(' ').unwrap();
            (
                w.parse().unwrap(),
                h.parse().unwrap(),
                out.stdout[end + 1..].to_vec(),
            )
        }
        JpegDecoder::LibjpegTurbo => parse_ppm(&out.stdout),
    };
    assert_eq!(rgb.len(), w * h * 3, "{}", path.display());
    Photo {
        name: path.file_name().unwrap().to_string_lossy().into_owned(),
        width: w,
        height: h,
        rgb,
    }
}

/// A binary PPM (`P6`, maxval 255) as djpeg writes it.
fn parse_ppm(bytes: &[u8]) -> (usize, usize, Vec<u8>) {
    let mut fields = Vec::new();
    let mut pos = 0;
    while fields.len() < 4 {
        while bytes[pos].is_ascii_whitespace() {
            pos += 1;
        }
        let start = pos;
        while !bytes[pos].is_ascii_whitespace() {
            pos += 1;
        }
        fields.push(std::str::from_utf8(&bytes[start..pos]).unwrap().to_string());
    }
    assert_eq!(
        (fields[0].as_str(), fields[3].as_str()),
        ("P6", "255"),
        "8-bit RGB PPM"
    );
    (
        fields[1].parse().unwrap(),
        fields[2].parse().unwrap(),
        bytes[pos + 1..].to_vec(),
    )
}

/// A decoded reference photo.
pub struct Photo {
    pub name: String,
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

/// Pairs each reference detection with an unused one of ours that has the
/// same label and the highest IoU.
pub fn match_detections(ours: &[Detection], reference: &[Detection]) -> Vec<String> {
    let mut used = vec![false; ours.len()];
    let mut problems = Vec::new();
    for r in reference {
        let best = ours
            .iter()
            .enumerate()
            .filter(|(i, o)| !used[*i] && o.label == r.label)
            .map(|(i, o)| (i, o.bbox.iou(&r.bbox)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        match best {
            Some((i, iou)) if iou >= IOU_MIN => {
                used[i] = true;
                let diff = (ours[i].score - r.score).abs();
                if diff > SCORE_TOLERANCE {
                    problems.push(format!(
                        "{} at {:?}: score {} vs reference {}",
                        r.label, r.bbox, ours[i].score, r.score
                    ));
                }
            }
            other => problems.push(format!(
                "{} {:.3} at {:?} not found (best IoU {:?})",
                r.label,
                r.score,
                r.bbox,
                other.map(|o| o.1)
            )),
        }
    }
    // An extra detection is only acceptable where the reference could have
    // dropped it at its own threshold, within the score tolerance.
    for (o, _) in ours.iter().zip(&used).filter(|(_, u)| !**u) {
        if o.score > 0.3 + SCORE_TOLERANCE {
            problems.push(format!("extra {} {:.3} at {:?}", o.label, o.score, o.bbox));
        }
    }
    problems
}

impl Photo {
    pub fn view(&self) -> ImageView<'_> {
        ImageView::new(self.width, self.height, &self.rgb).unwrap()
    }
}

impl Reference {
    /// A reference from the shared assets.
    pub fn load(name: &str) -> Self {
        Self::load_from(&assets().join("reference").join(name))
    }

    pub fn load_from(path: &std::path::Path) -> Self {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// Every reference photo, decoded as the reference run did.
    pub fn photos(&self, decoder: JpegDecoder) -> Vec<Photo> {
        self.images
            .keys()
            .map(|name| load_rgb(&assets().join("images").join(name), decoder))
            .collect()
    }

    /// One line per mismatch between `results` (in `photos` order) and the reference.
    pub fn mismatches(&self, photos: &[Photo], results: &[Vec<Detection>]) -> Vec<String> {
        let mut failures = Vec::new();
        let (mut matched, mut worst_iou, mut worst_score) = (0, 1f32, 0f32);
        for (photo, ours) in photos.iter().zip(results) {
            let r = &self.images[&photo.name];
            assert_eq!(
                (photo.width, photo.height),
                (r.width, r.height),
                "{} size",
                photo.name
            );
            for p in match_detections(ours, &r.detections) {
                failures.push(format!("{}: {p}", photo.name));
            }
            for d in &r.detections {
                if let Some(o) = ours
                    .iter()
                    .filter(|o| o.label == d.label)
                    .max_by(|a, b| a.bbox.iou(&d.bbox).total_cmp(&b.bbox.iou(&d.bbox)))
                {
                    worst_iou = worst_iou.min(o.bbox.iou(&d.bbox));
                    worst_score = worst_score.max((o.score - d.score).abs());
                }
            }
            matched += r.detections.len();
        }
        // The margins, for the record (cargo test -- --nocapture).
        eprintln!("{matched} reference detections: worst IoU {worst_iou:.4}, worst score difference {worst_score:.4}");
        failures
    }
}

/// Every activation, in the order of their numbers in `cuda/ops.cu`.
pub const ACTIVATIONS: [Activation; 7] = [
    Activation::None,
    Activation::Relu6,
    Activation::Relu,
    Activation::Leaky,
    Activation::Silu,
    Activation::Sigmoid,
    Activation::Mish,
];

/// Plans one image's resize into a model input.
pub type Planner = fn(&ImageView<'_>) -> ResizePlan;

/// The three ways the detectors resize, with their input sizes: SSDLite's
/// TensorFlow rule, darknet's stretch and Ultralytics' letterbox.
pub fn resize_rules() -> [(&'static str, (usize, usize), Planner); 3] {
    [
        ("tensorflow", (300, 300), |i| {
            ResizePlan::tensorflow(i, 300, 300, 2.0 / 255.0, -1.0)
        }),
        ("stretch", (416, 416), |i| {
            ResizePlan::fit(i, 416, 416, Fit::Stretch, 1.0 / 255.0).0
        }),
        ("letterbox", (640, 480), |i| {
            ResizePlan::fit(i, 640, 480, Fit::Letterbox, 1.0 / 255.0).0
        }),
    ]
}

/// An NV12 frame in host memory, as a decoder leaves it: a luma plane and
/// an interleaved chroma plane, rows padded past the width.
pub struct Nv12 {
    pub width: usize,
    pub height: usize,
    pub pitch: usize,
    pub luma: Vec<u8>,
    pub chroma: Vec<u8>,
}

impl Nv12 {
    /// `value(plane, x, y)` for plane 0 (luma), 1 (U) and 2 (V).
    pub fn new(
        width: usize,
        height: usize,
        mut value: impl FnMut(usize, usize, usize) -> u8,
    ) -> Self {
        let pitch = width.next_multiple_of(64) + 64;
        let chroma_rows = height.div_ceil(2);
        let mut luma = vec![0u8; pitch * height];
        let mut chroma = vec![0u8; pitch * chroma_rows];
        for y in 0..height {
            for x in 0..width {
                luma[y * pitch + x] = value(0, x, y);
            }
        }
        for y in 0..chroma_rows {
            for x in 0..width.div_ceil(2) {
                chroma[y * pitch + 2 * x] = value(1, x, y);
                chroma[y * pitch + 2 * x + 1] = value(2, x, y);
            }
        }
        Self {
            width,
            height,
            pitch,
            luma,
            chroma,
        }
    }

    /// Random planes of `width` x `height` (a fixed sequence per `seed`).
    pub fn noise(width: usize, height: usize, seed: u64) -> Self {
        let mut state = seed | 1;
        Self::new(width, height, |_, _, _| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 56) as u8
        })
    }

    /// This frame's planes at `luma` and `chroma` (host or GPU addresses).
    pub fn planes(&self, context: usize, luma: u64, chroma: u64, color: YuvColor) -> CudaNv12 {
        CudaNv12 {
            context,
            width: self.width,
            height: self.height,
            luma,
            luma_pitch: self.pitch,
            chroma,
            chroma_pitch: self.pitch,
            color,
        }
    }

    /// Packed RGB by the textbook formulas (coefficients to 3-4 digits):
    /// within one level of any correct conversion.
    pub fn to_rgb(&self, color: YuvColor) -> Vec<u8> {
        let (ys, cs, black) = if color.full_range {
            (1.0, 1.0, 0.0)
        } else {
            (255.0 / 219.0, 255.0 / 224.0, 16.0)
        };
        let [rv, gu, gv, bu] = if color.bt709 {
            [1.5748, 0.1873, 0.4681, 1.8556]
        } else {
            [1.402, 0.3441, 0.7141, 1.772]
        };
        let mut rgb = Vec::with_capacity(self.width * self.height * 3);
        for y in 0..self.height {
            for x in 0..self.width {
                let l = (self.luma[y * self.pitch + x] as f32 - black) * ys;
                let c = (y / 2) * self.pitch + x / 2 * 2;
                let u = (self.chroma[c] as f32 - 128.0) * cs;
                let v = (self.chroma[c + 1] as f32 - 128.0) * cs;
                for value in [l + rv * v, l - gu * u - gv * v, l + bu * u] {
                    rgb.push(value.round().clamp(0.0, 255.0) as u8);
                }
            }
        }
        rgb
    }
}

/// Every matrix and range a frame can say it has.
pub const COLORS: [YuvColor; 4] = [
    YuvColor {
        bt709: false,
        full_range: false,
    },
    YuvColor {
        bt709: true,
        full_range: false,
    },
    YuvColor {
        bt709: false,
        full_range: true,
    },
    YuvColor {
        bt709: true,
        full_range: true,
    },
];

/// The largest difference between `ours` and `expected` in 8-bit levels,
/// for model input that is `level * scale + offset`.
pub fn level_diff(ours: &[f32], expected: &[f32], scale: f32) -> f32 {
    assert_eq!(ours.len(), expected.len());
    ours.iter()
        .zip(expected)
        .fold(0f32, |m, (a, e)| m.max((a - e).abs() / scale))
}
