//! The candle port of SSDLite-MobileNetV2 must find what TF.js itself finds
//! on the reference photos: same labels, box IoU >= 0.9, score within 0.03.

use std::path::PathBuf;

use candle_core::Device;
use serde::Deserialize;
use vigil_inference::convert::{save_safetensors, ssdlite_tfjs};
use vigil_inference::tfjs::TfjsGraph;
use vigil_inference::{BoundingBox, Detection, Detector, ImageView, SsdLiteDetector};

const IOU_MIN: f32 = 0.9;
const SCORE_TOLERANCE: f32 = 0.03;

#[derive(Deserialize)]
struct Reference {
    images: std::collections::BTreeMap<String, RefImage>,
}

#[derive(Deserialize)]
struct RefImage {
    width: usize,
    height: usize,
    detections: Vec<Detection>,
}

fn assets() -> PathBuf {
    std::env::var_os("VIGIL_TEST_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/assets"))
}

/// Decodes with jpeg-js, the decoder the reference run used. JPEG decoders
/// differ in IDCT and chroma upsampling by a few levels per pixel, enough to
/// flip near-tied boxes in NMS; identical pixels make this a check of the
/// model port alone. (`make test` installs jpeg-js; see tests/support.)
fn load_rgb(path: &std::path::Path) -> Photo {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/jpeg-decode/decode.js");
    let out = std::process::Command::new("node")
        .arg(&script)
        .arg(path)
        .output()
        .expect("node must be installed to decode the reference photos (make test installs it)");
    assert!(
        out.status.success(),
        "jpeg-js failed on {} (run `npm ci` in tests/support/jpeg-decode): {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let header_end = out.stdout.iter().position(|&b| b == b'\n').expect("header");
    let header = std::str::from_utf8(&out.stdout[..header_end]).unwrap();
    let (w, h) = header.split_once(' ').unwrap();
    let (w, h): (usize, usize) = (w.parse().unwrap(), h.parse().unwrap());
    let rgb = out.stdout[header_end + 1..].to_vec();
    assert_eq!(rgb.len(), w * h * 3, "{}", path.display());
    Photo {
        name: path.file_name().unwrap().to_string_lossy().into_owned(),
        width: w,
        height: h,
        rgb,
    }
}

/// A decoded reference photo.
struct Photo {
    name: String,
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

/// Pairs each reference detection with an unused one of ours that has the
/// same label and the highest IoU.
fn match_detections(ours: &[Detection], reference: &[Detection]) -> Vec<String> {
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

#[test]
fn ssdlite_port_matches_tfjs_reference() {
    let assets = assets();
    let graph = TfjsGraph::load(&assets.join("models/ssdlite_mobilenet_v2_coco_tfjs/model.json"))
        .expect("load TF.js graph");
    let tensors = ssdlite_tfjs::import(&graph).expect("import");
    // Round-trip through a real safetensors file, as the product does.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ssdlite_mobilenet_v2_coco.safetensors");
    save_safetensors(&tensors, &path).expect("save");
    let detector = SsdLiteDetector::load(&path, "ssdlite", &Device::Cpu).expect("load");

    let reference: Reference = serde_json::from_str(
        &std::fs::read_to_string(assets.join("reference/ssdlite_mobilenet_v2_coco.tfjs.json"))
            .unwrap(),
    )
    .unwrap();
    assert!(reference.images.len() >= 6, "reference lists the photos");

    // All photos in one batch: batching must not change any result.
    let photos: Vec<Photo> = reference
        .images
        .keys()
        .map(|name| load_rgb(&assets.join("images").join(name)))
        .collect();
    let views: Vec<ImageView> = photos
        .iter()
        .map(|p| ImageView::new(p.width, p.height, &p.rgb).unwrap())
        .collect();
    let results = detector.detect(&views).expect("detect");

    let mut failures = Vec::new();
    for (photo, ours) in photos.iter().zip(&results) {
        let r = &reference.images[&photo.name];
        assert_eq!(
            (photo.width, photo.height),
            (r.width, r.height),
            "{} size",
            photo.name
        );
        for p in match_detections(ours, &r.detections) {
            failures.push(format!("{}: {p}", photo.name));
        }
    }
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}

#[test]
fn matcher_rejects_a_wrong_answer() {
    let r = vec![Detection {
        label: "person".into(),
        score: 0.9,
        bbox: BoundingBox::from([0.0, 0.0, 100.0, 100.0]),
    }];
    let mut shifted = r.clone();
    shifted[0].bbox = BoundingBox::from([20.0, 0.0, 120.0, 100.0]);
    assert!(!match_detections(&shifted, &r).is_empty());
    let mut relabelled = r.clone();
    relabelled[0].label = "dog".into();
    assert!(!match_detections(&relabelled, &r).is_empty());
    assert!(match_detections(&r, &r).is_empty());
}
