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

/// The oldest GPU generation this build's CUDA code runs on, as a compute
/// capability `(major, minor)`: PTX compiled for it is compiled again by the
/// driver for any newer GPU, never for an older one. `None` without `cuda`.
pub fn cuda_built_for() -> Option<(u32, u32)> {
    // "90a" (an architecture-specific target) is still 9.0.
    let cap =
        option_env!("VIGIL_CUDA_COMPUTE_CAP")?.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let digits: u32 = cap.parse().ok()?;
    Some((digits / 10, digits % 10))
}

/// candle compiles its bf16 kernels only for this compute capability
/// (Ampere) and newer.
const BF16_FROM: (u32, u32) = (8, 0);

/// Whether this build can run bf16 on a GPU.
pub fn bf16_on_gpu() -> bool {
    cuda_built_for().is_some_and(|cap| cap >= BF16_FROM)
}

/// Why `precision` cannot run on the GPU in this build, if it cannot: the
/// one rule the configuration check and model loading both apply.
pub fn gpu_precision_unsupported(precision: Precision) -> Option<String> {
    match (precision, cuda_built_for()) {
        (Precision::Int8, _) => Some("int8 runs on the CPU only; use f16 with a GPU".into()),
        (Precision::Bf16, Some((major, minor))) if (major, minor) < BF16_FROM => Some(format!(
            "bf16 needs a build for GPUs of compute capability {}.{} or newer; this one is \
             built for {major}.{minor} and later, where f16 is as fast: use f16",
            BF16_FROM.0, BF16_FROM.1
        )),
        _ => None,
    }
}

/// The CUDA context a model on `device` computes in: frames a hardware
/// decoder writes into the same context reach the model without a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuContext {
    /// The GPU's number (`cuda:N`).
    pub ordinal: usize,
    /// Its primary context (`CUcontext`), as an address.
    pub context: usize,
}

/// [`GpuContext`] of `device`; `None` on the CPU.
pub fn gpu_context(device: &Device) -> Option<GpuContext> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(gpu) = device {
        let stream = gpu.cuda_stream();
        let context = stream.context();
        return Some(GpuContext {
            ordinal: context.ordinal(),
            context: context.cu_ctx() as usize,
        });
    }
    let _ = device;
    None
}

/// Gives GPU `ordinal`'s primary context the scheduling ffmpeg's CUDA
/// device insists on when it shares that context (blocking sync: a waiting
/// thread sleeps rather than spins, which also leaves the CPU to the rest
/// of the box). Set before candle first makes the context current, so
/// that NVDEC can decode into the model's context; if it fails, decoders
/// get contexts of their own and frames are copied through the host.
#[cfg(feature = "cuda")]
fn schedule_like_ffmpeg(ordinal: usize) {
    use candle_core::cuda_backend::cudarc::driver::{result, sys};
    let set = || -> Result<(), result::DriverError> {
        result::init()?;
        let device = result::device::get(ordinal as i32)?;
        // SAFETY: a device handle the driver just returned.
        unsafe {
            sys::cuDevicePrimaryCtxSetFlags_v2(
                device,
                sys::CUctx_flags::CU_CTX_SCHED_BLOCKING_SYNC as u32,
            )
        }
        .result()
    };
    if let Err(e) = set() {
        tracing::warn!(gpu = ordinal, error = %e, "cannot set the GPU context's scheduling; \
            NVDEC frames will be copied through the host");
    }
}

#[cfg(feature = "cuda")]
fn cuda(ordinal: usize) -> Result<Device, String> {
    schedule_like_ffmpeg(ordinal);
    let device = Device::new_cuda(ordinal).map_err(|e| e.to_string())?;
    if let (Device::Cuda(gpu), Some(built)) = (&device, cuda_built_for()) {
        let (major, minor) = gpu
            .cuda_stream()
            .context()
            .compute_capability()
            .map_err(|e| e.to_string())?;
        let has = (major as u32, minor as u32);
        // Caught here, rather than as a failed module load at the first
        // kernel, with the way out.
        if has < built {
            return Err(format!(
                "GPU {ordinal} has compute capability {major}.{minor}; this build's GPU code \
                 needs {}.{} or newer (build with CUDA_COMPUTE_CAP={major}{minor})",
                built.0, built.1
            ));
        }
    }
    Ok(device)
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
        assert_eq!(gpu_context(&Device::Cpu), None);
        assert!(gpu_precision_unsupported(Precision::Int8).is_some());
        assert_eq!(gpu_precision_unsupported(Precision::F16), None);
        #[cfg(not(feature = "cuda"))]
        assert_eq!(cuda_built_for(), None);
        #[cfg(not(feature = "cuda"))]
        assert!(select_device("cuda")
            .unwrap_err()
            .to_string()
            .contains("--features cuda"));
    }
}
