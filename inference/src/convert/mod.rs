//! Importers from other model formats into Vigil's safetensors files.

pub mod ssdlite_tfjs;
pub mod ultralytics_pt;

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;

use crate::InferenceError;

/// Writes named tensors as a safetensors file, atomically (temp file + rename),
/// so a crash never leaves a half-written model behind.
pub fn save_safetensors(
    tensors: &HashMap<String, Tensor>,
    path: &Path,
) -> Result<(), InferenceError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| InferenceError::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
    }
    let tmp = path.with_extension("safetensors.tmp");
    candle_core::safetensors::save(tensors, &tmp)?;
    let io_err = |e| InferenceError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    // Readable by the service user, whoever converted it.
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .map_err(io_err)?;
    std::fs::rename(&tmp, path).map_err(io_err)
}
