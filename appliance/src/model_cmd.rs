//! `vigil model import` and `vigil model list`: models users bring, put
//! where the registry finds them by name.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::Device;
use vigil_inference::convert::{save_safetensors, ssdlite_tfjs, ultralytics_pt};
use vigil_inference::tfjs::TfjsGraph;
use vigil_inference::{ModelFiles, ModelRegistry, Precision};

use crate::cli::{ModelCommand, ModelImportArgs};

pub fn run(command: ModelCommand) -> anyhow::Result<()> {
    match command {
        ModelCommand::Import(args) => import(args),
        ModelCommand::List => list(),
    }
}

fn import(args: ModelImportArgs) -> anyhow::Result<()> {
    let source = &args.source;
    let file_name = source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = source
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = args.name.clone().unwrap_or(stem);
    anyhow::ensure!(
        !name.is_empty() && !name.contains(['/', '\\']) && !name.starts_with('.'),
        "--name {name:?} is not a plain file name"
    );
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let installed = match source.extension().and_then(|e| e.to_str()) {
        Some("pt") | Some("pth") => import_ultralytics(source, &args.dir, &name)?,
        Some("cfg") => import_darknet(source, args.names.as_deref(), &args.dir, &name)?,
        Some("json") if file_name == "model.json" => import_tfjs(source, &args.dir, &name)?,
        _ => bail!(
            "{}: not a model format Vigil imports (an Ultralytics .pt, a darknet .cfg, or a TF.js model.json)",
            source.display()
        ),
    };
    // Prove it loads and runs before telling anyone it is ready.
    let detector = installed
        .load(&Device::Cpu, Precision::F32)
        .with_context(|| format!("the installed model {name} does not load"))?;
    println!(
        "installed {name} ({}); use `model = \"{name}\"` in the [detector] section",
        detector.name()
    );
    Ok(())
}

fn import_ultralytics(source: &Path, dir: &Path, name: &str) -> anyhow::Result<ModelFiles> {
    let checkpoint = ultralytics_pt::import(source)?;
    let out = dir.join(format!("{name}.safetensors"));
    save_safetensors(&checkpoint.tensors, &out)?;
    if !checkpoint.labels.is_empty() {
        write_atomically(
            &dir.join(format!("{name}.names")),
            &(checkpoint.labels.join("\n") + "\n"),
        )?;
    }
    println!(
        "{}: {:?}, {} classes -> {}",
        source.display(),
        checkpoint.family,
        checkpoint.labels.len(),
        out.display()
    );
    Ok(ModelFiles::Safetensors(out))
}

fn import_darknet(
    cfg: &Path,
    names: Option<&Path>,
    dir: &Path,
    name: &str,
) -> anyhow::Result<ModelFiles> {
    let weights = cfg.with_extension("weights");
    anyhow::ensure!(
        weights.is_file(),
        "{} not found: a darknet model needs its .weights beside the .cfg",
        weights.display()
    );
    let names = names
        .map(Path::to_path_buf)
        .or_else(|| Some(cfg.with_extension("names")).filter(|p| p.is_file()));
    let copy = |from: &Path, ext: &str| -> anyhow::Result<PathBuf> {
        let to = dir.join(format!("{name}.{ext}"));
        if from.canonicalize().ok() != to.canonicalize().ok() {
            std::fs::copy(from, &to)
                .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        }
        Ok(to)
    };
    let files = ModelFiles::Darknet {
        cfg: copy(cfg, "cfg")?,
        weights: copy(&weights, "weights")?,
        names: names.map(|n| copy(&n, "names")).transpose()?,
    };
    Ok(files)
}

fn import_tfjs(model_json: &Path, dir: &Path, name: &str) -> anyhow::Result<ModelFiles> {
    let graph = TfjsGraph::load(model_json)?;
    let tensors = ssdlite_tfjs::import(&graph).context("mapping the graph onto SSDLite")?;
    let out = dir.join(format!("{name}.safetensors"));
    save_safetensors(&tensors, &out)?;
    Ok(ModelFiles::Safetensors(out))
}

/// Writes through a temporary file and a rename, so no half file is ever read.
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

fn list() -> anyhow::Result<()> {
    let registry = ModelRegistry::from_env();
    for dir in registry.dirs() {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut found: Vec<(String, String)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| ModelFiles::from_path(&e.path()))
            .map(|files| {
                let kind = match &files {
                    ModelFiles::Safetensors(_) => "safetensors",
                    ModelFiles::Darknet { .. } => "darknet",
                };
                (files.name(), kind.to_string())
            })
            .collect();
        found.sort();
        if !found.is_empty() {
            println!("{}:", dir.display());
            for (name, kind) in found {
                println!("  {name:<32} {kind}");
            }
        }
    }
    Ok(())
}
