//! Detector architectures written in candle.

pub mod layers;
pub mod ssdlite;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::InferenceError;

/// Named tensors of one model file, handed out by name with clear errors.
pub struct Weights {
    tensors: HashMap<String, Tensor>,
    source: PathBuf,
}

impl Weights {
    /// Loads a safetensors file onto `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self, InferenceError> {
        if !path.is_file() {
            return Err(InferenceError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        let tensors = candle_core::safetensors::load(path, device).map_err(|e| {
            InferenceError::ModelFormat {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }
        })?;
        Ok(Self {
            tensors,
            source: path.to_path_buf(),
        })
    }

    /// The same weights with every floating-point tensor in `dtype`.
    pub fn to_dtype(&self, dtype: candle_core::DType) -> Result<Self, InferenceError> {
        let tensors = self
            .tensors
            .iter()
            .map(|(k, t)| {
                let t = if t.dtype().is_float() {
                    t.to_dtype(dtype)?
                } else {
                    t.clone()
                };
                Ok((k.clone(), t))
            })
            .collect::<Result<_, candle_core::Error>>()?;
        Ok(Self {
            tensors,
            source: self.source.clone(),
        })
    }

    pub fn from_map(tensors: HashMap<String, Tensor>, source: PathBuf) -> Self {
        Self { tensors, source }
    }

    /// The named tensors, to save elsewhere.
    pub fn into_map(self) -> HashMap<String, Tensor> {
        self.tensors
    }

    /// Whether the file holds a tensor called `name`.
    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// An error about this file.
    pub fn format_error(&self, reason: String) -> InferenceError {
        InferenceError::ModelFormat {
            path: self.source.clone(),
            reason,
        }
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Result<Tensor, InferenceError> {
        self.tensors
            .get(name)
            .cloned()
            .ok_or_else(|| InferenceError::ModelFormat {
                path: self.source.clone(),
                reason: format!("missing tensor {name}"),
            })
    }

    /// The tensor called `name` as a flat f32 vector (small constants).
    pub fn get_vec(&self, name: &str) -> Result<Vec<f32>, InferenceError> {
        Ok(self
            .get(name)?
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1()?)
    }
}
