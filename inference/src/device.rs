//! Where a model runs and in which floating-point precision.

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

use crate::InferenceError;

/// Weights and activations are kept in this type; boxes and scores always
/// come back as f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    F16,
    Bf16,
    /// Dense convolutions in int8 (weights per output channel, activations
    /// per image), everything else in f32. CPU only; fast where the CPU has
    /// AVX-512 VNNI.
    Int8,
}

impl Precision {
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::F16 => DType::F16,
            Precision::Bf16 => DType::BF16,
            Precision::Int8 => DType::F32,
        }
    }

    /// With `Int8`: the CPU kernel its products run on, for the stats and
    /// reports.
    pub fn int8_kernel(self) -> Option<crate::ops::int8::Int8Kernel> {
        (self == Precision::Int8).then(crate::ops::int8::int8_kernel)
    }
}

/// `cpu`, `cuda` (GPU 0) or `cuda:N`.
pub fn select_device(spec: &str) -> Result<Device, InferenceError> {
    let bad = |reason: String| InferenceError::Device {
        spec: spec.to_string(),
        reason,
    };
    match spec {
        "cpu" => Ok(Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal = match s.strip_prefix("cuda:") {
                Some(n) => n
                    .parse::<usize>()
                    .map_err(|_| bad("cuda:N takes a GPU number".into()))?,
                None => 0,
            };
            cuda(ordinal).map_err(bad)
        }
        _ => Err(bad("use cpu, cuda or cuda:N".into())),
    }
}

#[cfg(feature = "cuda")]
fn cuda(ordinal: usize) -> Result<Device, String> {
    Device::new_cuda(ordinal).map_err(|e| e.to_string())
}

#[cfg(not(feature = "cuda"))]
fn cuda(_ordinal: usize) -> Result<Device, String> {
    Err("this build has no CUDA support (build with --features cuda)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_specs() {
        assert!(select_device("cpu").unwrap().is_cpu());
        assert!(select_device("tpu").is_err());
        assert!(select_device("cuda:x").is_err());
        #[cfg(not(feature = "cuda"))]
        assert!(select_device("cuda")
            .unwrap_err()
            .to_string()
            .contains("--features cuda"));
    }
}
