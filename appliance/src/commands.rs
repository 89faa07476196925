//! The one-shot subcommands: check-config, detect, import-tfjs, version.

use std::path::Path;

use anyhow::Context;
use candle_core::Device;
use serde::Serialize;
use vigil_inference::convert::{save_safetensors, ssdlite_tfjs};
use vigil_inference::tfjs::TfjsGraph;
use vigil_inference::{Detection, ImageView, ModelRegistry, SsdLiteDetector};

use crate::cli::{DetectArgs, ImportArgs};
use crate::config::Config;

/// Images per model call in `vigil detect`.
const DETECT_BATCH: usize = 8;

pub fn run(config: &Path) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    crate::pipeline::run(config)
}

pub fn check_config(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    println!(
        "{}: valid ({} camera{}, model {}, listening on {})",
        path.display(),
        config.cameras.len(),
        if config.cameras.len() == 1 { "" } else { "s" },
        config.detector.model,
        config.server.listen.get_ref()
    );
    Ok(())
}

#[derive(Serialize)]
struct ImageResult {
    image: String,
    width: usize,
    height: usize,
    detections: Vec<Detection>,
}

pub fn detect(args: DetectArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.min_score),
        "--min-score must be between 0 and 1"
    );
    vigil_ingest::init().context("initialising ffmpeg")?;
    if args.precision == vigil_inference::Precision::Int8
        && !vigil_inference::ops::int8::int8_kernel().is_fast()
    {
        tracing::warn!("this CPU lacks AVX2: int8 runs a portable kernel, far slower than f32");
    }
    let mut detector = ModelRegistry::from_env()
        .load_as(&args.model, &Device::Cpu, args.precision)
        .context("loading the model (run `make models` to fetch the default one)")?;
    detector.set_score_threshold(args.min_score);
    let mut results = Vec::new();
    for chunk in args.images.chunks(DETECT_BATCH) {
        let decoded = chunk
            .iter()
            .map(|p| {
                let (w, h, rgb) = vigil_ingest::decode_still(p)
                    .with_context(|| format!("cannot read image {}", p.display()))?;
                Ok((p, w as usize, h as usize, rgb))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let views = decoded
            .iter()
            .map(|(_, w, h, rgb)| ImageView::new(*w, *h, rgb))
            .collect::<Result<Vec<_>, _>>()?;
        let found = detector.detect(&views)?;
        for ((path, width, height, _), detections) in decoded.iter().zip(found) {
            results.push(ImageResult {
                image: path.display().to_string(),
                width: *width,
                height: *height,
                detections: detections.into_iter().map(round_detection).collect(),
            });
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        for r in &results {
            println!(
                "{} ({}x{}): {} found",
                r.image,
                r.width,
                r.height,
                r.detections.len()
            );
            for d in &r.detections {
                let b = d.bbox;
                println!(
                    "  {:<14} {:>5.1}%  [{:.0}, {:.0}, {:.0}, {:.0}]",
                    d.label,
                    d.score * 100.0,
                    b.x0,
                    b.y0,
                    b.x1,
                    b.y1
                );
            }
        }
    }
    Ok(())
}

/// Scores to 4 decimals, boxes to 0.1 px: what the model's precision supports.
fn round_detection(mut d: Detection) -> Detection {
    d.score = (d.score * 1e4).round() / 1e4;
    let b = &mut d.bbox;
    for v in [&mut b.x0, &mut b.y0, &mut b.x1, &mut b.y1] {
        *v = (*v * 10.0).round() / 10.0;
    }
    d
}

pub fn import_tfjs(args: ImportArgs) -> anyhow::Result<()> {
    let graph = TfjsGraph::load(&args.model_json)?;
    let tensors = ssdlite_tfjs::import(&graph).context("mapping the graph onto SSDLite")?;
    save_safetensors(&tensors, &args.out)?;
    // Prove the file loads before telling anyone it is ready.
    SsdLiteDetector::load(&args.out, "check", &Device::Cpu)
        .context("the converted model does not load")?;
    let params: usize = tensors.values().map(|t| t.elem_count()).sum();
    println!(
        "wrote {} ({} tensors, {:.2}M values)",
        args.out.display(),
        tensors.len(),
        params as f64 / 1e6
    );
    Ok(())
}

pub fn version() {
    println!("vigil {}", env!("CARGO_PKG_VERSION"));
    if vigil_ingest::init().is_ok() {
        println!("ffmpeg libavcodec {}", vigil_ingest::libavcodec_version());
    }
    match vigil_inference::cuda_built_for() {
        Some((major, minor)) => {
            println!(
            "inference devices: cpu, cuda (GPUs of compute capability {major}.{minor} and newer{})",
            if vigil_inference::bf16_on_gpu() { "" } else { "; no bf16" }
        )
        }
        None => println!("inference devices: cpu"),
    }
    match vigil_web_ui::gpu::sample_now() {
        Ok(gpu) => {
            let cuda = gpu.cuda_version.as_deref().unwrap_or("?");
            println!("NVIDIA driver {} (CUDA {cuda})", gpu.driver_version);
            for d in &gpu.devices {
                let memory = d
                    .memory_total_bytes
                    .map_or(String::new(), |b| format!(", {} MiB", b >> 20));
                println!("  gpu {}: {}{memory}", d.index, d.name);
            }
        }
        Err(e) => println!("gpus: none ({e})"),
    }
    println!("model search path:");
    for d in ModelRegistry::from_env().dirs() {
        println!("  {}", d.display());
    }
}
