//! Finding and loading models by name.

use std::path::{Path, PathBuf};

use candle_core::Device;

use crate::darknet::DarknetNet;
use crate::models::Weights;
use crate::postprocess::Suppression;
use crate::preprocess::Fit;
use crate::ultralytics::{Family, UltralyticsNet};
use crate::yolo::{YoloDetector, YoloSpec};
use crate::{Detector, InferenceError, Precision, SsdLiteDetector};

/// The model Vigil runs when none is named.
pub const DEFAULT_MODEL: &str = "ssdlite_mobilenet_v2_coco";

/// Where models people bring live on an installed box: in the service's
/// state directory, which it reads and `vigil model import` (as root)
/// writes; the packaged models stay in `/usr/share`.
pub const INSTALLED_MODEL_DIR: &str = "/var/lib/vigil/models";

/// Directories searched for `NAME.safetensors` or `NAME.cfg`, in order.
#[derive(Debug, Clone)]
pub struct ModelRegistry {
    dirs: Vec<PathBuf>,
}

impl ModelRegistry {
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        Self { dirs }
    }

    /// `$VIGIL_MODEL_DIR` (colon-separated), `./models`,
    /// [`INSTALLED_MODEL_DIR`], the package's `share/vigil/models` beside
    /// the executable, `/usr/share/vigil/models`.
    pub fn from_env() -> Self {
        let mut dirs: Vec<PathBuf> = std::env::var_os("VIGIL_MODEL_DIR")
            .map(|v| std::env::split_paths(&v).collect())
            .unwrap_or_default();
        dirs.push(PathBuf::from("models"));
        dirs.push(PathBuf::from(INSTALLED_MODEL_DIR));
        if let Some(prefix) = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent()?.parent().map(Path::to_path_buf))
        {
            dirs.push(prefix.join("share/vigil/models"));
        }
        dirs.push(PathBuf::from("/usr/share/vigil/models"));
        dirs.dedup();
        Self { dirs }
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The files for `name`: a path to a `.safetensors` or darknet `.cfg`
    /// file, or the first `NAME.safetensors` / `NAME.cfg` in the search
    /// directories.
    pub fn find(&self, name: &str) -> Result<ModelFiles, InferenceError> {
        let direct = Path::new(name);
        if direct.is_file() {
            if let Some(files) = ModelFiles::from_path(direct) {
                return Ok(files);
            }
        }
        self.dirs
            .iter()
            .flat_map(|d| {
                [
                    d.join(format!("{name}.safetensors")),
                    d.join(format!("{name}.cfg")),
                ]
            })
            .find(|p| p.is_file())
            .and_then(|p| ModelFiles::from_path(&p))
            .ok_or_else(|| InferenceError::ModelNotFound {
                name: name.to_string(),
                searched: self
                    .dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Finds `name` and builds the detector its files describe.
    pub fn load(&self, name: &str, device: &Device) -> Result<Box<dyn Detector>, InferenceError> {
        self.load_as(name, device, Precision::F32)
    }

    /// Loads `name` onto `device` in `precision`.
    pub fn load_as(
        &self,
        name: &str,
        device: &Device,
        precision: Precision,
    ) -> Result<Box<dyn Detector>, InferenceError> {
        let files = self.find(name)?;
        tracing::info!(model = %files.name(), files = ?files, ?precision, "loading model");
        files.load(device, precision)
    }
}

/// The files one model is made of.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelFiles {
    /// Written by `vigil import-*`: the architecture is told by the tensors.
    /// Class names may sit beside it as `NAME.names`.
    Safetensors(PathBuf),
    /// A darknet network: `.cfg`, `.weights` beside it, and optionally
    /// `.names` (one class per line; COCO's 80 when absent).
    Darknet {
        cfg: PathBuf,
        weights: PathBuf,
        names: Option<PathBuf>,
    },
}

impl ModelFiles {
    /// Recognises a model file by its extension.
    pub fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()? {
            "safetensors" => Some(Self::Safetensors(path.to_path_buf())),
            "cfg" => {
                let names = path.with_extension("names");
                Some(Self::Darknet {
                    cfg: path.to_path_buf(),
                    weights: path.with_extension("weights"),
                    names: names.is_file().then_some(names),
                })
            }
            _ => None,
        }
    }

    /// The model's short name: its file stem.
    pub fn name(&self) -> String {
        let path = match self {
            Self::Safetensors(p) => p,
            Self::Darknet { cfg, .. } => cfg,
        };
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Builds the detector on `device` in `precision`.
    pub fn load(
        &self,
        device: &Device,
        precision: Precision,
    ) -> Result<Box<dyn Detector>, InferenceError> {
        let name = self.name();
        if let Some(reason) = (!device.is_cpu())
            .then(|| crate::device::gpu_precision_unsupported(precision))
            .flatten()
        {
            return Err(InferenceError::Device {
                spec: format!("{device:?}"),
                reason,
            });
        }
        match self {
            Self::Safetensors(path) => {
                let weights = Weights::load(path, device)?;
                if Family::detect(&weights).is_some() {
                    return load_ultralytics(&weights, path, &name, device, precision);
                }
                let weights = weights.to_dtype(precision.dtype())?;
                Ok(Box::new(SsdLiteDetector::from_weights(
                    &weights, &name, device, precision,
                )?))
            }
            Self::Darknet {
                cfg,
                weights,
                names,
            } => {
                let net = DarknetNet::load(cfg, weights, device, precision)?;
                let labels = labels(names.as_deref(), net.classes)?;
                let spec = YoloSpec {
                    input: (net.width, net.height),
                    fit: Fit::Stretch,
                    labels,
                    dtype: precision.dtype(),
                    // OpenCV's darknet reference suppresses across classes.
                    suppression: Suppression::AcrossClasses,
                };
                Ok(Box::new(YoloDetector::new(
                    &name,
                    Box::new(net),
                    spec,
                    device,
                )))
            }
        }
    }
}

/// The tensor an importer adds to Ultralytics weights: the training input
/// size `[width, height]`.
pub const INPUT_SIZE_TENSOR: &str = "vigil.input_size";

/// The largest model input side accepted from a file.
const MAX_INPUT: usize = 8192;

/// Ultralytics' default input size when the file does not say.
const ULTRALYTICS_DEFAULT_INPUT: usize = 640;

fn load_ultralytics(
    weights: &Weights,
    path: &Path,
    name: &str,
    device: &Device,
    precision: Precision,
) -> Result<Box<dyn Detector>, InferenceError> {
    let net = UltralyticsNet::load(weights, precision)?;
    let input = if weights.has(INPUT_SIZE_TENSOR) {
        match weights.get_vec(INPUT_SIZE_TENSOR)?[..] {
            // Negative or NaN sizes become 0 here and are refused below.
            [w, h] => (w as usize, h as usize),
            _ => {
                return Err(
                    weights.format_error(format!("{INPUT_SIZE_TENSOR} must hold [width, height]"))
                )
            }
        }
    } else {
        (ULTRALYTICS_DEFAULT_INPUT, ULTRALYTICS_DEFAULT_INPUT)
    };
    let valid = |side: usize| (32..=MAX_INPUT).contains(&side) && side.is_multiple_of(32);
    if !valid(input.0) || !valid(input.1) {
        return Err(weights.format_error(format!(
            "input size {}x{} must be multiples of 32 between 32 and {MAX_INPUT}",
            input.0, input.1
        )));
    }
    let names = path.with_extension("names");
    let labels = labels(names.is_file().then_some(names.as_path()), net.classes)?;
    let spec = YoloSpec {
        input,
        fit: Fit::Letterbox,
        labels,
        dtype: precision.dtype(),
        suppression: Suppression::PerClass,
    };
    Ok(Box::new(YoloDetector::new(
        name,
        Box::new(net),
        spec,
        device,
    )))
}

/// Class names from `names` (one per non-empty line), or the defaults
/// for a model with `classes` classes.
fn labels(names: Option<&Path>, classes: usize) -> Result<Vec<String>, InferenceError> {
    let Some(path) = names else {
        return Ok(default_labels(classes));
    };
    let text = std::fs::read_to_string(path).map_err(|source| InferenceError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    // A names file of another model would label every box wrongly.
    if names.len() != classes {
        return Err(InferenceError::ModelFormat {
            path: path.to_path_buf(),
            reason: format!(
                "{} names for a model of {classes} classes: write one name per line, in class order",
                names.len()
            ),
        });
    }
    Ok(names)
}

/// COCO's names for an 80-class model; `class N` otherwise.
pub fn default_labels(classes: usize) -> Vec<String> {
    if classes == 80 {
        crate::labels::coco80().map(String::from).collect()
    } else {
        (0..classes).map(|c| format!("class {c}")).collect()
    }
}
