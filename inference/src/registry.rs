//! Finding and loading models by name.

use std::path::{Path, PathBuf};

use candle_core::Device;

use crate::models::Weights;
use crate::{Detector, InferenceError, Precision, SsdLiteDetector};

/// The model Vigil runs when none is named.
pub const DEFAULT_MODEL: &str = "ssdlite_mobilenet_v2_coco";

/// Directories searched for `NAME.safetensors`, in order.
#[derive(Debug, Clone)]
pub struct ModelRegistry {
    dirs: Vec<PathBuf>,
}

impl ModelRegistry {
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        Self { dirs }
    }

    /// `$VIGIL_MODEL_DIR` (colon-separated), `./models`, the package's
    /// `share/vigil/models` beside the executable, `/usr/share/vigil/models`.
    pub fn from_env() -> Self {
        let mut dirs: Vec<PathBuf> = std::env::var_os("VIGIL_MODEL_DIR")
            .map(|v| std::env::split_paths(&v).collect())
            .unwrap_or_default();
        dirs.push(PathBuf::from("models"));
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

    /// The file for `name`: a path to an existing file, or the first
    /// `NAME.safetensors` in the search directories.
    pub fn find(&self, name: &str) -> Result<PathBuf, InferenceError> {
        let direct = Path::new(name);
        if direct.extension().is_some_and(|e| e == "safetensors") && direct.is_file() {
            return Ok(direct.to_path_buf());
        }
        self.dirs
            .iter()
            .map(|d| d.join(format!("{name}.safetensors")))
            .find(|p| p.is_file())
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

    /// Finds `name` and builds the detector its tensors describe.
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
        let path = self.find(name)?;
        let weights = Weights::load(&path, device)?.to_dtype(precision.dtype())?;
        let short = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| name.to_string());
        tracing::info!(model = %short, path = %path.display(), ?precision, "loading model");
        Ok(Box::new(SsdLiteDetector::from_weights(
            &weights, &short, device,
        )?))
    }
}
