//! YOLOv3-tiny loaded natively from darknet's `.cfg` and `.weights` must
//! find what OpenCV DNN finds on the reference photos: same labels, box
//! IoU >= 0.9, score within 0.03.

mod common;

use std::path::PathBuf;

use candle_core::Device;
use common::{assets, JpegDecoder, Reference, IOU_MIN};
use vigil_inference::{Detection, ImageView, ModelFiles, Precision};

fn darknet_files() -> ModelFiles {
    let dir = assets().join("models/yolov3_tiny_darknet");
    ModelFiles::Darknet {
        cfg: dir.join("yolov3-tiny.cfg"),
        weights: dir.join("yolov3-tiny.weights"),
        names: Some(dir.join("coco.names")),
    }
}

fn detect_reference_photos(reference: &Reference) -> (Vec<common::Photo>, Vec<Vec<Detection>>) {
    let detector = darknet_files()
        .load(&Device::Cpu, Precision::F32)
        .expect("load darknet model");
    let photos = reference.photos(JpegDecoder::LibjpegTurbo);
    let views: Vec<ImageView> = photos.iter().map(|p| p.view()).collect();
    let results = detector.detect(&views).expect("detect");
    (photos, results)
}

/// Made by `scripts/reference/yolov3_tiny_opencv.py` with OpenCV DNN 4.10.
#[test]
fn yolov3_tiny_matches_opencv() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/yolov3_tiny.opencv.json");
    let reference = Reference::load_from(&path);
    assert!(reference.images.len() >= 6, "reference lists the photos");
    let (photos, results) = detect_reference_photos(&reference);
    let failures = reference.mismatches(&photos, &results);
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}

/// The shared reference multiplied OpenCV's class columns, which already
/// include objectness, by objectness once more: its scores are
/// `objectness^2 x class`, at most ours. Its labels and boxes must all be found.
#[test]
fn yolov3_tiny_finds_every_box_of_the_shared_reference() {
    let reference = Reference::load("yolov3_tiny.opencv.json");
    let (photos, results) = detect_reference_photos(&reference);
    let mut failures = Vec::new();
    for (photo, ours) in photos.iter().zip(&results) {
        for r in &reference.images[&photo.name].detections {
            let found = ours.iter().any(|o| {
                o.label == r.label && o.bbox.iou(&r.bbox) >= IOU_MIN && o.score + 0.03 >= r.score
            });
            if !found {
                failures.push(format!("{}: {} {:?}", photo.name, r.label, r.bbox));
            }
        }
    }
    assert!(failures.is_empty(), "not found:\n{}", failures.join("\n"));
}

#[test]
fn weights_of_another_network_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ModelFiles::Darknet { cfg, weights, .. } = darknet_files() else {
        unreachable!()
    };
    // The file cut short, and the same file under a cfg with one layer wider.
    let bytes = std::fs::read(&weights).unwrap();
    let short = dir.path().join("short.weights");
    std::fs::write(&short, &bytes[..bytes.len() / 2]).unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap();
    let wider = dir.path().join("wider.cfg");
    std::fs::write(&wider, text.replacen("filters=16", "filters=32", 1)).unwrap();
    for (cfg, weights) in [(cfg.clone(), short), (wider, weights.clone())] {
        let files = ModelFiles::Darknet {
            cfg,
            weights,
            names: None,
        };
        let err = files
            .load(&Device::Cpu, Precision::F32)
            .err()
            .expect("refused");
        assert!(err.to_string().contains("needs"), "{err}");
    }
    // classes= edited but not the filters= before it: the weights still
    // fit, so only the head's channel count can tell.
    let text = std::fs::read_to_string(&cfg).unwrap();
    let relabelled = dir.path().join("relabelled.cfg");
    std::fs::write(&relabelled, text.replace("classes=80", "classes=2")).unwrap();
    let files = ModelFiles::Darknet {
        cfg: relabelled,
        weights,
        names: None,
    };
    let err = files
        .load(&Device::Cpu, Precision::F32)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("relabelled.cfg"), "{err}");
    assert!(err.contains("set filters=21"), "{err}");
}
