//! `vigil model import` and `vigil model list`: models users bring, put
//! where the registry finds them by name.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::Device;
use vigil_inference::convert::{save_safetensors, ssdlite_tfjs, ultralytics_pt};
use vigil_inference::tfjs::TfjsGraph;
use vigil_inference::{ImageView, ModelFiles, ModelRegistry, Precision, INSTALLED_MODEL_DIR};

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
    let dir = args.dir.clone().unwrap_or_else(default_import_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Built beside the models, not among them: a model that fails below
    // must not replace a working one of the same name.
    let staging = tempfile::Builder::new()
        .prefix(".import-")
        .tempdir_in(&dir)
        .with_context(|| format!("writing in {}", dir.display()))?;
    let staged = match source.extension().and_then(|e| e.to_str()) {
        Some("pt") | Some("pth") => import_ultralytics(source, staging.path(), &name)?,
        Some("cfg") => import_darknet(source, args.names.as_deref(), staging.path(), &name)?,
        Some("json") if file_name == "model.json" => import_tfjs(source, staging.path(), &name)?,
        _ => bail!(
            "{}: not a model format Vigil imports (an Ultralytics .pt, a darknet .cfg, or a TF.js model.json)",
            source.display()
        ),
    };
    // Prove it loads and runs before it takes the name.
    let detector = staged
        .load(&Device::Cpu, Precision::F32)
        .with_context(|| format!("the imported model {name} does not load"))?;
    let grey = vec![128u8; 64 * 64 * 3];
    detector
        .detect(&[ImageView::new(64, 64, &grey)?])
        .with_context(|| format!("the imported model {name} does not run"))?;
    install(staging.path(), &dir, &name)?;
    println!(
        "installed {name} ({}) in {}; use `model = \"{name}\"` in the [detector] section",
        detector.name(),
        dir.display()
    );
    Ok(())
}

/// On a box the package installed (its state directory exists), where the
/// service looks; elsewhere (a build tree) `./models`.
fn default_import_dir() -> PathBuf {
    let state = Path::new(INSTALLED_MODEL_DIR)
        .parent()
        .expect("an absolute path");
    if state.is_dir() {
        PathBuf::from(INSTALLED_MODEL_DIR)
    } else {
        PathBuf::from("models")
    }
}

/// Every file a model named `name` may have; the registry reads them all.
const MODEL_FILE_KINDS: [&str; 4] = ["safetensors", "cfg", "weights", "names"];

/// Moves the staged files into `dir`, and removes the files an earlier
/// model of that name left that the new one lacks (its labels, say).
fn install(staging: &Path, dir: &Path, name: &str) -> anyhow::Result<()> {
    for kind in MODEL_FILE_KINDS {
        let file = format!("{name}.{kind}");
        let (from, to) = (staging.join(&file), dir.join(&file));
        if from.is_file() {
            std::fs::rename(&from, &to).with_context(|| format!("installing {}", to.display()))?;
        } else if to.is_file() {
            std::fs::remove_file(&to)
                .with_context(|| format!("removing the old {}", to.display()))?;
        }
    }
    Ok(())
}

fn import_ultralytics(source: &Path, dir: &Path, name: &str) -> anyhow::Result<ModelFiles> {
    let checkpoint = ultralytics_pt::import(source)?;
    let out = dir.join(format!("{name}.safetensors"));
    save_safetensors(&checkpoint.tensors, &out)?;
    if !checkpoint.labels.is_empty() {
        let names = dir.join(format!("{name}.names"));
        std::fs::write(&names, checkpoint.labels.join("\n") + "\n")
            .with_context(|| format!("writing {}", names.display()))?;
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
        std::fs::copy(from, &to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
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
