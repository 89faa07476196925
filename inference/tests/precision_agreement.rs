//! Reduced precisions must find what f32 finds: mAP@0.5 of their
//! detections, f32's taken as ground truth, >= 0.95 for f16 and >= 0.90
//! for INT8, on the shared photos and on frames of both shared clips. (bf16 has no matrix product
//! on the CPU; its agreement is checked on a GPU, in `tests/cuda.rs`.)

mod common;

use candle_core::Device;
use common::{assets, JpegDecoder, Reference};
use vigil_inference::convert::{save_safetensors, ssdlite_tfjs};
use vigil_inference::metrics::mean_average_precision;
use vigil_inference::ops::int8::{int8_kernel, Int8Kernel};
use vigil_inference::tfjs::TfjsGraph;
use vigil_inference::{Detection, Detector, ImageView, ModelFiles, Precision};

const MIN_MAP: f32 = 0.95;
const MIN_MAP_INT8: f32 = 0.90;
/// What counts as an object in f32's output.
const TRUTH_SCORE: f32 = 0.3;
/// Reduced-precision detections down to this score are ranked for mAP.
const RANKED_SCORE: f32 = 0.1;

struct Image {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

/// Every `step`-th frame of a clip, decoded by the ffmpeg CLI (`make test`
/// installs it).
fn clip_frames(name: &str, width: usize, height: usize, step: usize) -> Vec<Image> {
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(assets().join("video").join(name))
        .args([
            "-vf",
            &format!("select=not(mod(n\\,{step}))"),
            "-fps_mode",
            "passthrough",
        ])
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .expect("ffmpeg must be installed (make test installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
        .chunks_exact(width * height * 3)
        .map(|f| Image {
            width,
            height,
            rgb: f.to_vec(),
        })
        .collect()
}

/// The shared photos, decoded as OpenCV would.
fn photos() -> Vec<Image> {
    Reference::load("yolov3_tiny.opencv.json")
        .photos(JpegDecoder::LibjpegTurbo)
        .into_iter()
        .map(|p| Image {
            width: p.width,
            height: p.height,
            rgb: p.rgb,
        })
        .collect()
}

fn images() -> Vec<Image> {
    let mut all = photos();
    all.extend(clip_frames("vtest.avi", 768, 576, 50));
    all.extend(clip_frames("bikes.mp4", 640, 272, 25));
    assert!(all.len() >= 6 + 16 + 10, "{} images", all.len());
    all
}

fn detect_all(detector: &dyn Detector, images: &[Image]) -> Vec<Vec<Detection>> {
    images
        .chunks(4)
        .flat_map(|chunk| {
            let views: Vec<ImageView> = chunk
                .iter()
                .map(|i| ImageView::new(i.width, i.height, &i.rgb).unwrap())
                .collect();
            detector.detect(&views).expect("detect")
        })
        .collect()
}

fn check(files: &ModelFiles, name: &str, precisions: &[(Precision, f32)]) {
    let images = images();
    let load = |p: Precision, score: f32| {
        let mut d = files.load(&Device::Cpu, p).expect("load");
        d.set_score_threshold(score);
        d
    };
    let truth = detect_all(load(Precision::F32, TRUTH_SCORE).as_ref(), &images);
    let objects: usize = truth.iter().map(Vec::len).sum();
    assert!(
        objects >= 50,
        "{name}: only {objects} objects in f32's output"
    );
    for &(precision, min) in precisions {
        let ranked = detect_all(load(precision, RANKED_SCORE).as_ref(), &images);
        let map = mean_average_precision(&truth, &ranked, 0.5);
        eprintln!(
            "{name} {precision:?}: mAP@0.5 vs f32 = {map:.4} ({objects} f32 objects, {} images)",
            images.len()
        );
        assert!(map >= min, "{name} {precision:?}: mAP {map}");
    }
}

fn yolov3_tiny() -> ModelFiles {
    let dir = assets().join("models/yolov3_tiny_darknet");
    ModelFiles::Darknet {
        cfg: dir.join("yolov3-tiny.cfg"),
        weights: dir.join("yolov3-tiny.weights"),
        names: Some(dir.join("coco.names")),
    }
}

#[test]
fn yolov3_tiny_f16_agrees_with_f32() {
    check(&yolov3_tiny(), "yolov3-tiny", &[(Precision::F16, MIN_MAP)]);
}

/// With the int8 kernel this process runs (the CPU's best, or the one
/// `VIGIL_INT8_KERNEL` names).
#[test]
fn yolov3_tiny_int8_agrees_with_f32() {
    let name = format!("yolov3-tiny ({} kernel)", int8_kernel().name());
    check(&yolov3_tiny(), &name, &[(Precision::Int8, MIN_MAP_INT8)]);
}

/// The other fast kernels this CPU runs (AVX2 on a VNNI machine, whose
/// weights have 7 bits, not 8), each in a process of its own: the kernel
/// is picked once per process.
#[test]
fn yolov3_tiny_int8_agrees_with_f32_on_every_kernel() {
    let others = Int8Kernel::supported()
        .into_iter()
        .filter(|k| k.is_fast() && *k != int8_kernel());
    for kernel in others {
        let name = kernel.name();
        // Its output captured, so that its test count is not added to ours.
        let run = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "yolov3_tiny_int8_agrees_with_f32", "--nocapture"])
            .env("VIGIL_INT8_KERNEL", name)
            .output()
            .expect("run the int8 test again");
        eprint!("{}", String::from_utf8_lossy(&run.stderr));
        assert!(
            run.status.success(),
            "int8 on the {name} kernel: {}",
            String::from_utf8_lossy(&run.stdout)
        );
    }
}

/// The default model imported from its TF.js graph into `dir`.
fn ssdlite(dir: &tempfile::TempDir) -> ModelFiles {
    let graph = TfjsGraph::load(&assets().join("models/ssdlite_mobilenet_v2_coco_tfjs/model.json"))
        .expect("TF.js graph");
    let path = dir.path().join("ssdlite.safetensors");
    save_safetensors(&ssdlite_tfjs::import(&graph).expect("import"), &path).unwrap();
    ModelFiles::Safetensors(path)
}

#[test]
fn ssdlite_f16_agrees_with_f32() {
    let dir = tempfile::tempdir().unwrap();
    check(&ssdlite(&dir), "ssdlite", &[(Precision::F16, MIN_MAP)]);
}

/// Its 1x1 layers from 256 input channels run in int8 (the predictors stay
/// f32).
#[test]
fn ssdlite_int8_agrees_with_f32() {
    let dir = tempfile::tempdir().unwrap();
    let files = ssdlite(&dir);
    let name = format!("ssdlite ({} kernel)", int8_kernel().name());
    check(&files, &name, &[(Precision::Int8, MIN_MAP_INT8)]);
    // Proof that int8 ran at all: its scores are not f32's.
    let stills = photos();
    let scores = |p: Precision| -> Vec<f32> {
        let d = files.load(&Device::Cpu, p).expect("load");
        detect_all(d.as_ref(), &stills)
            .iter()
            .flatten()
            .map(|d| d.score)
            .collect()
    };
    assert_ne!(scores(Precision::Int8), scores(Precision::F32));
}
