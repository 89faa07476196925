//! Shared set-up for Vigil's benchmarks: real model, real frames.
//!
//! Benchmarks read the test assets (`../shared/assets`, or
//! `$VIGIL_TEST_ASSETS`) and import the model from its TF.js files, so they
//! measure exactly what the product runs.

use std::path::PathBuf;

use candle_core::Device;
use vigil_inference::convert::{save_safetensors, ssdlite_tfjs};
use vigil_inference::tfjs::TfjsGraph;
use vigil_inference::SsdLiteDetector;

pub fn assets() -> PathBuf {
    std::env::var_os("VIGIL_TEST_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/assets"))
}

/// The default detector, imported into a temporary file and loaded on the CPU.
pub fn ssdlite() -> SsdLiteDetector {
    let graph = TfjsGraph::load(&assets().join("models/ssdlite_mobilenet_v2_coco_tfjs/model.json"))
        .expect("TF.js model in the test assets");
    let tensors = ssdlite_tfjs::import(&graph).expect("import");
    let dir = std::env::temp_dir().join(format!("vigil-bench-{}", std::process::id()));
    let path = dir.join("ssdlite.safetensors");
    save_safetensors(&tensors, &path).expect("save");
    let detector = SsdLiteDetector::load(&path, "ssdlite", &Device::Cpu).expect("load");
    let _ = std::fs::remove_dir_all(dir);
    detector
}

/// A real street frame (the middle of the vtest clip) as `(w, h, rgb)`.
pub fn street_frame() -> (usize, usize, Vec<u8>) {
    vigil_ingest::init().expect("ffmpeg");
    let (w, h, rgb) =
        vigil_ingest::decode_still(&assets().join("images/vtest_mid.jpg")).expect("decode");
    (w as usize, h as usize, rgb)
}
