//! Detector throughput per device, precision and batch size, with each
//! reduced precision's agreement with f32 on the shared photos.
//!
//! `cargo bench -p vigil-benches --bench throughput` runs on the CPU in
//! f32 at batch 1 and 4. On a GPU build (`--features cuda`):
//! `VIGIL_BENCH_DEVICE=cuda` (precisions f32,f16,bf16; batches 1..64).
//! Override with `VIGIL_BENCH_PRECISIONS=f32,f16` and
//! `VIGIL_BENCH_BATCHES=1,8`. `VIGIL_MODEL` names a safetensors file to use
//! instead of importing the TF.js model from the assets.

use std::path::PathBuf;
use std::time::Instant;

use vigil_inference::convert::{save_safetensors, ssdlite_tfjs};
use vigil_inference::tfjs::TfjsGraph;
use vigil_inference::{select_device, Detection, Detector, ImageView, Precision, SsdLiteDetector};

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

fn model_file() -> PathBuf {
    if let Some(p) = std::env::var_os("VIGIL_MODEL") {
        return PathBuf::from(p);
    }
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
    let device_spec = std::env::var("VIGIL_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into());
    let device = select_device(&device_spec).expect("device");
    let on_gpu = !device.is_cpu();
    let precisions: Vec<String> = list(
        "VIGIL_BENCH_PRECISIONS",
        if on_gpu { "f32,f16,bf16" } else { "f32" },
    );
    let batches: Vec<usize> = list(
        "VIGIL_BENCH_BATCHES",
        if on_gpu { "1,2,4,8,16,32,64" } else { "1,4" },
    );
    let path = model_file();
    let photos = photos();
    let views: Vec<ImageView> = photos
        .iter()
        .map(|(w, h, rgb)| ImageView::new(*w, *h, rgb).unwrap())
        .collect();

    println!("# SSDLite-MobileNetV2 throughput on {device_spec}\n");
    let mut reference: Option<Vec<Vec<Detection>>> = None;
    for name in &precisions {
        let precision: Precision = serde_plain(name);
        let mut detector =
            SsdLiteDetector::load_as(&path, "ssdlite", &device, precision).expect("load");
        detector.set_score_threshold(0.5);
        let found: Vec<Vec<Detection>> = views
            .iter()
            .map(|v| detector.detect(&[*v]).expect("detect").remove(0))
            .collect();
        match &reference {
            None => {
                println!(
                    "{name}: {} detections at score >= 0.5 on {} photos (the reference)",
                    found.iter().map(Vec::len).sum::<usize>(),
                    views.len()
                );
                reference = Some(found);
            }
            Some(r) => {
                let (hit, total, extra) = agreement(r, &found);
                println!(
                    "{name}: finds {hit}/{total} of f32's detections ({:.1} %), {extra} extra",
                    100.0 * hit as f64 / total.max(1) as f64
                );
            }
        }
        println!("\n| precision | batch | ms per batch | ms per frame | frames/s |");
        println!("| --- | --- | --- | --- | --- |");
        for &batch in &batches {
            let input: Vec<ImageView> = (0..batch).map(|i| views[i % views.len()]).collect();
            for _ in 0..WARMUP {
                detector.detect(&input).expect("detect");
            }
            let runs = MIN_FRAMES.div_ceil(batch).max(5);
            let started = Instant::now();
            for _ in 0..runs {
                std::hint::black_box(detector.detect(&input).expect("detect"));
            }
            let per_batch = started.elapsed().as_secs_f64() * 1e3 / runs as f64;
            println!(
                "| {name} | {batch} | {per_batch:.2} | {:.2} | {:.0} |",
                per_batch / batch as f64,
                1e3 * batch as f64 / per_batch
            );
        }
        println!();
    }
}

fn serde_plain(name: &str) -> Precision {
    serde_json::from_str(&format!("\"{name}\"")).expect("precision is f32, f16 or bf16")
}
