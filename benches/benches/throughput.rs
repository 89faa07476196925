//! Detector throughput per model, device, precision and batch size, with
//! each reduced precision's agreement with f32 on the shared photos, and
//! OpenCV DNN running YOLOv3-tiny on the same photos in the same run as the
//! anchor. On the CPU, each model's int8 is also timed against its f32 in
//! turns, f32 and int8 alternating, for a ratio this machine's drift does
//! not skew.
//!
//! `cargo bench -p vigil-benches --bench throughput` runs on the CPU in
//! f32 and int8 at batch 1 and 4, models `ssdlite,yolov3-tiny,yolov8n,yolo11n`.
//! On a GPU build (`--features cuda`): `VIGIL_BENCH_DEVICE=cuda`
//! (precisions f32,f16,bf16; batches 1..64). Override with
//! `VIGIL_BENCH_MODELS`, `VIGIL_BENCH_PRECISIONS=f32,f16` and
//! `VIGIL_BENCH_BATCHES=1,8`; `VIGIL_INT8_KERNEL=avx2` times int8 as a CPU
//! without AVX-512 VNNI runs it. The YOLOv8/11 models carry synthetic weights
//! (no pretrained ones can be fetched): same computation, no agreement check.
//! The anchor needs a Python with `opencv-python-headless==4.10.0.84`
//! (`VIGIL_OPENCV_PYTHON`, default `python3`); without it the ratio is skipped.

use std::path::PathBuf;
use std::time::Instant;

use vigil_inference::convert::{save_safetensors, ssdlite_tfjs};
use vigil_inference::tfjs::TfjsGraph;
use vigil_inference::{select_device, Detection, Detector, ImageView, ModelFiles, Precision};

const WARMUP: usize = 3;
const MIN_FRAMES: usize = 64;
const PHOTOS: [&str; 6] = [
    "bike.jpg",
    "bikes_mid.jpg",
    "dog.jpg",
    "messi5.jpg",
    "person.jpg",
    "vtest_mid.jpg",
];

fn ssdlite_file() -> PathBuf {
    let graph = TfjsGraph::load(
        &vigil_benches::assets().join("models/ssdlite_mobilenet_v2_coco_tfjs/model.json"),
    )
    .expect("TF.js model in the test assets");
    let path = std::env::temp_dir().join(format!(
        "vigil-throughput-{}.safetensors",
        std::process::id()
    ));
    save_safetensors(&ssdlite_tfjs::import(&graph).expect("import"), &path).expect("save");
    path
}

/// The files for a benchmark model name.
fn model_files(name: &str) -> ModelFiles {
    match name {
        "ssdlite" => ModelFiles::Safetensors(ssdlite_file()),
        "yolov3-tiny" => {
            let dir = vigil_benches::assets().join("models/yolov3_tiny_darknet");
            ModelFiles::Darknet {
                cfg: dir.join("yolov3-tiny.cfg"),
                weights: dir.join("yolov3-tiny.weights"),
                names: Some(dir.join("coco.names")),
            }
        }
        other => ModelFiles::Safetensors(vigil_benches::synthetic_ultralytics(other)),
    }
}

/// Whether the model's weights were trained (so its detections mean something).
fn trained(name: &str) -> bool {
    matches!(name, "ssdlite" | "yolov3-tiny")
}

fn photos() -> Vec<(usize, usize, Vec<u8>)> {
    PHOTOS
        .iter()
        .map(|name| {
            let img = image::open(vigil_benches::assets().join("images").join(name))
                .expect("photo")
                .to_rgb8();
            (img.width() as usize, img.height() as usize, img.into_raw())
        })
        .collect()
}

fn list<T: std::str::FromStr>(var: &str, default: &str) -> Vec<T> {
    std::env::var(var)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

fn iou(a: &Detection, b: &Detection) -> f32 {
    let (a, b) = (&a.bbox, &b.bbox);
    let iw = (a.x1.min(b.x1) - a.x0.max(b.x0)).max(0.0);
    let ih = (a.y1.min(b.y1) - a.y0.max(b.y0)).max(0.0);
    let inter = iw * ih;
    inter / ((a.x1 - a.x0) * (a.y1 - a.y0) + (b.x1 - b.x0) * (b.y1 - b.y0) - inter)
}

/// Of f32's detections, how many this precision finds (same label, IoU at
/// least 0.5), and how many it adds.
fn agreement(reference: &[Vec<Detection>], ours: &[Vec<Detection>]) -> (usize, usize, usize) {
    let (mut found, mut total, mut extra) = (0, 0, 0);
    for (r, o) in reference.iter().zip(ours) {
        let mut used = vec![false; o.len()];
        for d in r {
            total += 1;
            let hit = o
                .iter()
                .enumerate()
                .position(|(i, x)| !used[i] && x.label == d.label && iou(x, d) >= 0.5);
            if let Some(i) = hit {
                used[i] = true;
                found += 1;
            }
        }
        extra += used.iter().filter(|u| !**u).count();
    }
    (found, total, extra)
}

fn main() {
    // As the appliance does (`vigil` main).
    vigil_inference::memory::reuse_large_buffers();
    let device_spec = std::env::var("VIGIL_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into());
    let device = select_device(&device_spec).expect("device");
    let on_gpu = !device.is_cpu();
    let models: Vec<String> = list("VIGIL_BENCH_MODELS", "ssdlite,yolov3-tiny,yolov8n,yolo11n");
    let precisions: Vec<String> = list(
        "VIGIL_BENCH_PRECISIONS",
        if on_gpu { "f32,f16,bf16" } else { "f32,int8" },
    );
    let batches: Vec<usize> = list(
        "VIGIL_BENCH_BATCHES",
        if on_gpu { "1,2,4,8,16,32,64" } else { "1,4" },
    );
    let photos = photos();
    let views: Vec<ImageView> = photos
        .iter()
        .map(|(w, h, rgb)| ImageView::new(*w, *h, rgb).unwrap())
        .collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "# Detector throughput on {device_spec} ({threads} CPU threads, int8 kernel: {})\n",
        vigil_inference::ops::int8::int8_kernel().name()
    );
    println!("| model | precision | batch | ms per batch (median) | ms per frame | frames/s |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut notes = Vec::new();
    for model in &models {
        let files = model_files(model);
        let mut reference: Option<Vec<Vec<Detection>>> = None;
        for name in &precisions {
            let precision: Precision = serde_plain(name);
            let mut detector = match files.load(&device, precision) {
                Ok(d) => d,
                Err(e) => {
                    notes.push(format!("{model} {name}: not run ({e})"));
                    continue;
                }
            };
            detector.set_score_threshold(0.5);
            if trained(model) {
                let found: Vec<Vec<Detection>> = views
                    .iter()
                    .map(|v| detector.detect(&[*v]).expect("detect").remove(0))
                    .collect();
                match &reference {
                    None => reference = Some(found),
                    Some(r) => {
                        let (hit, total, extra) = agreement(r, &found);
                        notes.push(format!(
                            "{model} {name}: finds {hit}/{total} of f32's detections (score >= 0.5), {extra} extra"
                        ));
                    }
                }
            }
            for &batch in &batches {
                // The median run: shared machines stall now and then, and a
                // mean would charge the stalls to whichever row met them.
                let per_frame = median_ms_per_frame(detector.as_ref(), &views, batch);
                let per_batch = per_frame * batch as f64;
                println!(
                    "| {model} | {name} | {batch} | {per_batch:.2} | {per_frame:.2} | {:.1} |",
                    1e3 / per_frame
                );
            }
        }
    }
    println!();
    for n in notes {
        println!("{n}");
    }
    let yolov3_f32 =
        models.iter().any(|m| m == "yolov3-tiny") && precisions.iter().any(|p| p == "f32");
    if yolov3_f32 && !on_gpu {
        opencv_anchor(&views, &batches);
    }
    let int8_and_f32 = ["f32", "int8"]
        .iter()
        .all(|p| precisions.iter().any(|q| q == p));
    if !on_gpu && int8_and_f32 {
        println!("\n| in turns | batch | f32 ms/frame | int8 ms/frame | int8 speed-up |");
        println!("| --- | --- | --- | --- | --- |");
        for model in &models {
            int8_against_f32(model, &views, &batches);
        }
    }
}

/// `model` in int8 against f32, run in turns (f32, int8, f32, ...) so that
/// both meet the same moments of this machine's drifting speed; the
/// speed-up is the median of each turn's ratio. Models without int8 are
/// left out.
fn int8_against_f32(model: &str, views: &[ImageView], batches: &[usize]) {
    let device = select_device("cpu").expect("cpu");
    let files = model_files(model);
    let (Ok(f32), Ok(int8)) = (
        files.load(&device, Precision::F32),
        files.load(&device, Precision::Int8),
    ) else {
        return;
    };
    for &batch in batches {
        let input: Vec<ImageView> = (0..batch).map(|i| views[i % views.len()]).collect();
        let time = |detector: &dyn Detector| {
            let started = Instant::now();
            std::hint::black_box(detector.detect(&input).expect("detect"));
            started.elapsed().as_secs_f64() * 1e3 / batch as f64
        };
        for _ in 0..WARMUP {
            time(f32.as_ref());
            time(int8.as_ref());
        }
        let turns = MIN_FRAMES.div_ceil(batch).max(9);
        let (mut a, mut b, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..turns {
            let (x, y) = (time(f32.as_ref()), time(int8.as_ref()));
            a.push(x);
            b.push(y);
            ratios.push(x / y);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "| {model} | {batch} | {:.2} | {:.2} | {:.2}x |",
            median(&mut a),
            median(&mut b),
            median(&mut ratios)
        );
    }
}

/// Rounds of the OpenCV anchor against our f32.
const ANCHOR_ROUNDS: usize = 3;

/// Times OpenCV DNN on YOLOv3-tiny against our f32 at the same batch
/// sizes, in rounds (ours, then OpenCV's, then ours, ...) so that both
/// meet the same moments of this machine's drifting speed, and prints each
/// round and the median of the rounds' ratios.
fn opencv_anchor(views: &[ImageView], batches: &[usize]) {
    let python = std::env::var("VIGIL_OPENCV_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/bench/opencv_dnn.py");
    let device = select_device("cpu").expect("cpu");
    let ours = model_files("yolov3-tiny")
        .load(&device, Precision::F32)
        .expect("YOLOv3-tiny f32");
    let batch_list: Vec<String> = batches.iter().map(|b| b.to_string()).collect();
    // [batch] -> (OpenCV, ours) per round.
    let mut rounds: Vec<Vec<(f64, f64)>> = vec![Vec::new(); batches.len()];
    let mut label = String::from("OpenCV");
    for _ in 0..ANCHOR_ROUNDS {
        let mine: Vec<f64> = batches
            .iter()
            .map(|&batch| median_ms_per_frame(ours.as_ref(), views, batch))
            .collect();
        let out = std::process::Command::new(&python)
            .arg(&script)
            .arg(vigil_benches::assets())
            .arg(batch_list.join(","))
            .output();
        let out = match out {
            Ok(o) if o.status.success() => o,
            Ok(o) => {
                let stderr = String::from_utf8_lossy(&o.stderr);
                println!(
                    "\nOpenCV anchor skipped: {}",
                    stderr.lines().last().unwrap_or("")
                );
                return;
            }
            Err(e) => {
                println!("\nOpenCV anchor skipped: {python}: {e}");
                return;
            }
        };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let batch = v["batch"].as_u64().unwrap_or(0) as usize;
            let theirs = v["ms_per_frame"].as_f64().unwrap_or(f64::NAN);
            label = format!(
                "{} ({} threads)",
                v["runtime"].as_str().unwrap_or("OpenCV"),
                v["threads"]
            );
            if let Some(i) = batches.iter().position(|&b| b == batch) {
                rounds[i].push((theirs, mine[i]));
            }
        }
    }
    println!("\n| YOLOv3-tiny f32 against {label} | batch | OpenCV ms/frame, each round | candle ms/frame, each round | candle speed-up, median of rounds |");
    println!("| --- | --- | --- | --- | --- |");
    for (batch, pairs) in batches.iter().zip(&rounds) {
        let list = |f: fn(&(f64, f64)) -> f64| {
            pairs
                .iter()
                .map(|p| format!("{:.2}", f(p)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut ratios: Vec<f64> = pairs.iter().map(|(t, m)| t / m).collect();
        ratios.sort_by(f64::total_cmp);
        let median = ratios.get(ratios.len() / 2).copied().unwrap_or(f64::NAN);
        println!(
            "| | {batch} | {} | {} | {median:.2}x |",
            list(|p| p.0),
            list(|p| p.1)
        );
    }
}

/// `detector`'s median ms per frame at `batch`, after a warm-up, over
/// enough runs for `MIN_FRAMES` frames.
fn median_ms_per_frame(detector: &dyn Detector, views: &[ImageView], batch: usize) -> f64 {
    let input: Vec<ImageView> = (0..batch).map(|i| views[i % views.len()]).collect();
    for _ in 0..WARMUP {
        detector.detect(&input).expect("detect");
    }
    let mut times: Vec<f64> = (0..MIN_FRAMES.div_ceil(batch).max(5))
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(detector.detect(&input).expect("detect"));
            started.elapsed().as_secs_f64() * 1e3 / batch as f64
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn serde_plain(name: &str) -> Precision {
    serde_json::from_str(&format!("\"{name}\"")).expect("precision is f32, f16 or bf16")
}
