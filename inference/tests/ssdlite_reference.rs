//! The candle port of SSDLite-MobileNetV2 must find what TF.js itself finds
//! on the reference photos: same labels, box IoU >= 0.9, score within 0.03.

mod common;

use candle_core::Device;
use common::{assets, match_detections, JpegDecoder, Reference};
use vigil_inference::convert::{save_safetensors, ssdlite_tfjs};
use vigil_inference::models::Weights;
use vigil_inference::tfjs::TfjsGraph;
use vigil_inference::{BoundingBox, Detection, Detector, ImageView, Precision, SsdLiteDetector};

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

    let reference = Reference::load("ssdlite_mobilenet_v2_coco.tfjs.json");
    assert!(reference.images.len() >= 6, "reference lists the photos");
    // All photos in one batch: batching must not change any result.
    let photos = reference.photos(JpegDecoder::JpegJs);
    let views: Vec<ImageView> = photos.iter().map(|p| p.view()).collect();
    let results = detector.detect(&views).expect("detect");
    let failures = reference.mismatches(&photos, &results);
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));

    // A file whose anchors do not match its heads is refused at load,
    // rather than failing (or reading past the anchors) on every frame.
    let mut short = tensors;
    let anchors = short["anchors"].dim(0).unwrap();
    let fewer = short["anchors"].narrow(0, 0, anchors - 1).unwrap();
    short.insert("anchors".into(), fewer);
    let weights = Weights::from_map(short, "short.safetensors".into());
    let err = SsdLiteDetector::from_weights(&weights, "short", &Device::Cpu, Precision::F32)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains(&format!("{} anchors", anchors - 1)), "{err}");
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
