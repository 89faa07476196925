//! NVIDIA GPU figures: how busy each GPU and its video decoder are, memory,
//! temperature and power, from NVML, the management library that comes with
//! the driver. NVML is opened at run time, so one binary serves boxes with
//! and without a GPU; the ones without report none.

use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::{Device, Nvml};
use serde::Serialize;

/// How often the background sampler reads the GPUs. NVML's utilisation
/// figures cover its own window of about a second; the UI polls every two.
const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// The driver and every GPU it shows this process.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct GpuStats {
    pub driver_version: String,
    /// Newest CUDA version the driver runs, e.g. "13.0".
    pub cuda_version: Option<String>,
    pub devices: Vec<GpuDevice>,
}

/// One GPU. A figure the board does not report (power on some boards, say)
/// is null.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct GpuDevice {
    /// NVML's index, which is CUDA's `cuda:N` unless `CUDA_VISIBLE_DEVICES`
    /// reorders them.
    pub index: u32,
    pub name: String,
    pub uuid: Option<String>,
    /// Share of the last sample window in which a kernel ran, 0-100.
    pub utilization_percent: Option<u32>,
    /// Share of the window in which NVDEC (the video decoder) was busy, 0-100.
    pub decoder_utilization_percent: Option<u32>,
    pub encoder_utilization_percent: Option<u32>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    /// What this process holds there: model weights, activations, frames.
    pub process_memory_bytes: Option<u64>,
    pub temperature_celsius: Option<u32>,
    pub power_watts: Option<f64>,
    pub power_limit_watts: Option<f64>,
}

/// Why there are no GPU figures.
#[derive(Debug, thiserror::Error)]
#[error("NVML: {0}")]
pub struct NoGpu(String);

/// Opens NVML and reads every GPU once (what `vigil version` prints).
pub fn sample_now() -> Result<GpuStats, NoGpu> {
    let nvml = open()?;
    Ok(sample(&nvml))
}

/// Starts the background sampler once per process (the server calls it);
/// on a box without the driver it only logs why there are no figures.
pub fn start_sampler() {
    sampler();
}

/// The newest sample; `None` without a GPU or before [`start_sampler`].
pub fn latest() -> Option<GpuStats> {
    let shared = SAMPLER.get()?.as_ref()?;
    shared.read().map(|s| s.clone()).ok()
}

type Shared = Arc<RwLock<GpuStats>>;

static SAMPLER: OnceLock<Option<Shared>> = OnceLock::new();

fn sampler() -> Option<&'static Shared> {
    SAMPLER
        .get_or_init(|| {
            let nvml = match open() {
                Ok(nvml) => nvml,
                Err(e) => {
                    tracing::info!("no NVIDIA GPU figures: {e}");
                    return None;
                }
            };
            let first = sample(&nvml);
            for d in &first.devices {
                tracing::info!(index = d.index, name = %d.name, driver = %first.driver_version, "GPU found");
            }
            let shared = Arc::new(RwLock::new(first));
            let writer = shared.clone();
            let spawned = std::thread::Builder::new()
                .name("gpu-stats".into())
                .spawn(move || loop {
                    std::thread::sleep(SAMPLE_EVERY);
                    let next = sample(&nvml);
                    if let Ok(mut s) = writer.write() {
                        *s = next;
                    }
                });
            if let Err(e) = spawned {
                // Figures frozen at the first sample would mislead: show none.
                tracing::warn!("GPU figures off: cannot start their thread: {e}");
                return None;
            }
            Some(shared)
        })
        .as_ref()
}

fn open() -> Result<Nvml, NoGpu> {
    Nvml::init().map_err(|e| NoGpu(e.to_string()))
}

fn sample(nvml: &Nvml) -> GpuStats {
    let count = nvml.device_count().unwrap_or(0);
    GpuStats {
        driver_version: nvml.sys_driver_version().unwrap_or_default(),
        cuda_version: nvml
            .sys_cuda_driver_version()
            .ok()
            .map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10)),
        // A GPU that fell off the bus drops out of the list rather than
        // hiding the others.
        devices: (0..count)
            .filter_map(|i| Some(device(i, &nvml.device_by_index(i).ok()?)))
            .collect(),
    }
}

fn device(index: u32, d: &Device) -> GpuDevice {
    let utilization = d.utilization_rates().ok();
    let memory = d.memory_info().ok();
    let me = std::process::id();
    let process_memory_bytes = d.running_compute_processes().ok().and_then(|ps| {
        ps.into_iter()
            .find(|p| p.pid == me)
            .and_then(|p| match p.used_gpu_memory {
                UsedGpuMemory::Used(b) => Some(b),
                UsedGpuMemory::Unavailable => None,
            })
    });
    let watts = |milliwatts: u32| f64::from(milliwatts) / 1000.0;
    GpuDevice {
        index,
        name: d.name().unwrap_or_else(|_| format!("GPU {index}")),
        uuid: d.uuid().ok(),
        utilization_percent: utilization.as_ref().map(|u| u.gpu),
        decoder_utilization_percent: d.decoder_utilization().ok().map(|u| u.utilization),
        encoder_utilization_percent: d.encoder_utilization().ok().map(|u| u.utilization),
        memory_used_bytes: memory.as_ref().map(|m| m.used),
        memory_total_bytes: memory.as_ref().map(|m| m.total),
        process_memory_bytes,
        temperature_celsius: d.temperature(TemperatureSensor::Gpu).ok(),
        power_watts: d.power_usage().ok().map(watts),
        power_limit_watts: d.enforced_power_limit().ok().map(watts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a GPU box (`VIGIL_EXPECT_GPU=1`, as the GPU bundle sets) the
    /// figures must be there and sane; elsewhere the reason must say that the
    /// driver's library is missing, and the sampler must report nothing.
    #[test]
    fn figures_on_this_machine() {
        match sample_now() {
            Ok(stats) => {
                assert!(!stats.driver_version.is_empty());
                assert!(!stats.devices.is_empty(), "NVML loaded but lists no GPU");
                for d in &stats.devices {
                    let total = d.memory_total_bytes.expect("every GPU reports its memory");
                    assert!(total >= 1 << 30, "{}: {total} bytes", d.name);
                    assert!(d.memory_used_bytes.unwrap() <= total);
                    assert!(d.utilization_percent.unwrap() <= 100);
                    assert!(d.decoder_utilization_percent.is_none_or(|u| u <= 100));
                    assert!(d.temperature_celsius.is_none_or(|t| (1..120).contains(&t)));
                }
                start_sampler();
                assert_eq!(latest().unwrap().devices.len(), stats.devices.len());
                eprintln!("{}", serde_json::to_string_pretty(&stats).unwrap());
            }
            Err(e) => {
                assert!(
                    std::env::var_os("VIGIL_EXPECT_GPU").is_none(),
                    "expected a GPU: {e}"
                );
                assert!(e.to_string().contains("libnvidia-ml.so.1"), "{e}");
                start_sampler();
                assert_eq!(latest(), None);
            }
        }
    }
}
