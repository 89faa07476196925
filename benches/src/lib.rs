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

/// A synthetic history for storage and API benchmarks.
pub mod history {
    use vigil_storage::EventRecord;

    pub const CAMERAS: u64 = 16;
    pub const LABELS: [&str; 8] = [
        "person",
        "car",
        "bicycle",
        "truck",
        "bus",
        "dog",
        "motorbike",
        "cat",
    ];
    /// A history spans 30 days.
    pub const SPAN_MS: i64 = 30 * 86_400_000;
    pub const START_MS: i64 = 1_780_000_000_000;

    /// Event `i` of `total`, spread evenly over the span, cameras, labels
    /// and four zones.
    pub fn synthetic_event(i: u64, total: u64) -> EventRecord {
        let start_ms = START_MS + (i as i64 * SPAN_MS) / total.max(1) as i64;
        EventRecord {
            uid: format!("e{i}"),
            camera: format!("cam{}", i % CAMERAS),
            track_id: i,
            label: LABELS[(i % LABELS.len() as u64) as usize].to_string(),
            start_ms,
            end_ms: Some(start_ms + 30_000),
            max_score: 0.9,
            best_box: [1.0, 2.0, 3.0, 4.0],
            zones: vec![format!("zone{}", i % 4)],
            snapshot: None,
        }
    }
}

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

/// A YOLOv8/YOLO11 model (`yolov8n`, `yolo11s`, ...) with synthetic weights,
/// laid out as the state dict the tests recorded from `ultralytics`
/// (inference/tests/data/ultralytics), written to a temporary safetensors
/// file. Same computation as trained weights; class biases are set low so
/// that, as with a trained model, few boxes reach NMS.
pub fn synthetic_ultralytics(model: &str) -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../inference/tests/data/ultralytics/{model}.json"));
    let text = std::fs::read_to_string(&manifest).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (models: yolov8n, yolov8s, yolo11n, yolo11s)",
            manifest.display()
        )
    });
    let json: serde_json::Value = serde_json::from_str(&text).expect("manifest");
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut uniform = move || {
        // xorshift64*: enough for weights nobody reads.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        ((state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u32 << 24) as f32) * 2.0 - 1.0
    };
    let mut tensors = std::collections::HashMap::new();
    for entry in json["tensors"].as_array().expect("tensors") {
        let name = entry[0].as_str().expect("name").to_string();
        let shape: Vec<usize> = entry[1]
            .as_array()
            .expect("shape")
            .iter()
            .map(|d| d.as_u64().expect("dim") as usize)
            .collect();
        let count: usize = shape.iter().product();
        let values: Vec<f32> = if name.ends_with("running_var") || name.ends_with("bn.weight") {
            vec![1.0; count]
        } else if shape.len() == 4 {
            let fan_in = (shape[1] * shape[2] * shape[3]) as f32;
            (0..count)
                .map(|_| uniform() * 1.7 / fan_in.sqrt())
                .collect()
        } else if name.contains(".cv3.") && name.ends_with(".2.bias") {
            vec![-8.0; count]
        } else {
            vec![0.0; count]
        };
        let t = candle_core::Tensor::from_vec(values, shape, &Device::Cpu).expect("tensor");
        tensors.insert(name, t);
    }
    let path = std::env::temp_dir().join(format!(
        "vigil-bench-{model}-{}.safetensors",
        std::process::id()
    ));
    save_safetensors(&tensors, &path).expect("save");
    path
}
