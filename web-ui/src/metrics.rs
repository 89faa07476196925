//! `GET /metrics`: the stats in Prometheus' (OpenMetrics) text format, plus
//! a histogram of model time per batch, for fleet dashboards.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::api::{ApiError, ErrorBody};
use crate::gpu::{GpuDevice, GpuStats};
use crate::stats::{collect, Stats};
use crate::AppState;

/// Model time per batch, observed by the analyser: 1 ms to ~4 s buckets.
#[derive(Debug, Clone)]
pub struct BatchLatency(Histogram);

impl Default for BatchLatency {
    fn default() -> Self {
        Self(Histogram::new(exponential_buckets(0.001, 2.0, 13)))
    }
}

impl BatchLatency {
    pub fn observe(&self, d: Duration) {
        self.0.observe(d.as_secs_f64());
    }
}

/// One scrape's figures, encoded when the registry is.
#[derive(Debug)]
struct Snapshot(Stats);

type Encoder<'a> = DescriptorEncoder<'a>;

fn counter(e: &mut Encoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    ConstCounter::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn gauge(e: &mut Encoder, name: &str, help: &str, v: f64) -> std::fmt::Result {
    ConstGauge::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// A metric with one series per camera.
fn per_camera(
    e: &mut Encoder,
    s: &Stats,
    name: &str,
    help: &str,
    kind: MetricType,
    value: impl Fn(&serde_json::Value) -> f64,
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, kind)?;
    for cam in &s.cameras {
        let labels = [("camera", cam.id.as_str())];
        let v = value(&cam.ingest);
        let family = m.encode_family(&labels)?;
        if matches!(kind, MetricType::Counter) {
            ConstCounter::new(v as u64).encode(family)?;
        } else {
            ConstGauge::new(v).encode(family)?;
        }
    }
    Ok(())
}

/// A gauge with one series per GPU that reports the figure.
fn per_gpu(
    e: &mut Encoder,
    gpu: &GpuStats,
    name: &str,
    help: &str,
    value: impl Fn(&GpuDevice) -> Option<f64>,
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for d in &gpu.devices {
        if let Some(v) = value(d) {
            let index = d.index.to_string();
            let labels = [("gpu", index.as_str()), ("name", d.name.as_str())];
            ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

/// GPU series, in the units Prometheus' conventions ask for (ratios 0-1).
fn gpu_metrics(e: &mut Encoder, gpu: &GpuStats) -> std::fmt::Result {
    let ratio = |p: Option<u32>| p.map(|p| f64::from(p) / 100.0);
    let bytes = |b: Option<u64>| b.map(|b| b as f64);
    per_gpu(
        e,
        gpu,
        "gpu_utilization_ratio",
        "Share of time a kernel ran on the GPU",
        |d| ratio(d.utilization_percent),
    )?;
    per_gpu(
        e,
        gpu,
        "gpu_decoder_utilization_ratio",
        "Share of time the video decoder (NVDEC) was busy",
        |d| ratio(d.decoder_utilization_percent),
    )?;
    per_gpu(e, gpu, "gpu_memory_used_bytes", "GPU memory in use", |d| {
        bytes(d.memory_used_bytes)
    })?;
    per_gpu(e, gpu, "gpu_memory_total_bytes", "GPU memory", |d| {
        bytes(d.memory_total_bytes)
    })?;
    per_gpu(
        e,
        gpu,
        "gpu_process_memory_bytes",
        "GPU memory held by this process",
        |d| bytes(d.process_memory_bytes),
    )?;
    per_gpu(e, gpu, "gpu_temperature_celsius", "GPU temperature", |d| {
        d.temperature_celsius.map(f64::from)
    })?;
    per_gpu(e, gpu, "gpu_power_watts", "GPU power draw", |d| {
        d.power_watts
    })
}

impl prometheus_client::collector::Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let s = &self.0;
        let field = |key: &'static str| move |v: &serde_json::Value| v[key].as_f64().unwrap_or(0.0);
        use MetricType::{Counter, Gauge};
        per_camera(
            &mut e,
            s,
            "camera_input_fps",
            "Frames per second arriving from the camera",
            Gauge,
            field("input_fps"),
        )?;
        per_camera(
            &mut e,
            s,
            "camera_decoded_fps",
            "Frames per second out of the decoder",
            Gauge,
            field("decoded_fps"),
        )?;
        per_camera(
            &mut e,
            s,
            "camera_frames_decoded",
            "Frames decoded",
            Counter,
            field("frames_decoded"),
        )?;
        per_camera(
            &mut e,
            s,
            "camera_frames_skipped",
            "Coded frames not decoded (not needed, or damaged)",
            Counter,
            field("frames_skipped"),
        )?;
        per_camera(
            &mut e,
            s,
            "camera_frames_dropped",
            "Sampled frames dropped because the model was behind",
            Counter,
            field("frames_dropped"),
        )?;
        per_camera(
            &mut e,
            s,
            "camera_reconnects",
            "Reconnections to the camera",
            Counter,
            field("reconnects"),
        )?;
        per_camera(
            &mut e,
            s,
            "camera_up",
            "1 while the camera streams, 0 otherwise",
            Gauge,
            |v| f64::from(u8::from(v["state"] == "streaming")),
        )?;
        let i = &s.inference;
        counter(
            &mut e,
            "inference_frames",
            "Frames through the model",
            i.frames,
        )?;
        counter(&mut e, "inference_batches", "Model calls", i.batches)?;
        counter(
            &mut e,
            "inference_errors",
            "Model calls that failed",
            i.errors,
        )?;
        counter(
            &mut e,
            "events_opened",
            "Events opened (objects that began to be tracked)",
            i.events_opened,
        )?;
        let w = &s.storage.writer;
        counter(
            &mut e,
            "storage_rows_written",
            "Rows committed to SQLite",
            w.rows_written,
        )?;
        counter(
            &mut e,
            "storage_failed_commits",
            "Commits that failed (disk full, I/O error)",
            w.failed_commits,
        )?;
        counter(
            &mut e,
            "storage_rows_dropped",
            "Rows dropped because storage could not keep up or write",
            w.rows_dropped,
        )?;
        gauge(
            &mut e,
            "storage_pending_rows",
            "Rows waiting to be committed",
            w.pending_rows as f64,
        )?;
        let u = &s.storage.usage;
        gauge(
            &mut e,
            "storage_database_bytes",
            "SQLite file and WAL size",
            u.database_bytes as f64,
        )?;
        gauge(
            &mut e,
            "storage_hot_bytes",
            "Hot store (snapshots, latest detections) size",
            u.hot_bytes as f64,
        )?;
        gauge(&mut e, "storage_events", "Events stored", u.events as f64)?;
        gauge(
            &mut e,
            "storage_detections",
            "Detections stored",
            u.detections as f64,
        )?;
        let p = &s.process;
        ConstCounter::new(p.cpu_seconds).encode(e.encode_descriptor(
            "process_cpu_seconds",
            "CPU time used by the process",
            None,
            MetricType::Counter,
        )?)?;
        gauge(
            &mut e,
            "process_resident_bytes",
            "Resident memory",
            p.resident_bytes as f64,
        )?;
        gauge(
            &mut e,
            "process_uptime_seconds",
            "Seconds since start",
            p.uptime_seconds,
        )?;
        match &s.gpu {
            Some(gpu) => gpu_metrics(&mut e, gpu),
            None => Ok(()),
        }
    }
}

/// Prometheus scrape endpoint (needs a token like every other route).
#[utoipa::path(get, path = "/metrics", tag = "system",
    responses((status = 200, content_type = "application/openmetrics-text", body = String),
        (status = 401, body = ErrorBody)))]
pub(crate) async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let stats = collect(&state).await?;
    let mut registry = Registry::with_prefix("vigil");
    registry.register(
        "inference_batch_seconds",
        "Model time per batch",
        state.batch_latency.0.clone(),
    );
    registry.register_collector(Box::new(Snapshot(stats)));
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, &registry)
        .map_err(|e| ApiError::Storage(format!("encoding metrics: {e}")))?;
    Ok(HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Gpus(GpuStats);

    impl prometheus_client::collector::Collector for Gpus {
        fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
            gpu_metrics(&mut e, &self.0)
        }
    }

    fn device(index: u32, name: &str) -> GpuDevice {
        GpuDevice {
            index,
            name: name.into(),
            uuid: None,
            utilization_percent: Some(37),
            decoder_utilization_percent: Some(80),
            encoder_utilization_percent: None,
            memory_used_bytes: Some(3 << 30),
            memory_total_bytes: Some(16 << 30),
            process_memory_bytes: Some(1 << 30),
            temperature_celsius: Some(61),
            power_watts: Some(72.5),
            power_limit_watts: Some(300.0),
        }
    }

    #[test]
    fn gpu_series_per_device_in_prometheus_units() {
        let mut second = device(1, "NVIDIA L4");
        second.power_watts = None; // not every board reports it
        second.utilization_percent = Some(100);
        let stats = GpuStats {
            driver_version: "580.95".into(),
            cuda_version: Some("13.0".into()),
            devices: vec![device(0, "NVIDIA T4"), second],
        };
        let mut registry = Registry::with_prefix("vigil");
        registry.register_collector(Box::new(Gpus(stats)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            r#"vigil_gpu_utilization_ratio{gpu="0",name="NVIDIA T4"} 0.37"#,
            r#"vigil_gpu_utilization_ratio{gpu="1",name="NVIDIA L4"} 1.0"#,
            r#"vigil_gpu_decoder_utilization_ratio{gpu="0",name="NVIDIA T4"} 0.8"#,
            r#"vigil_gpu_memory_total_bytes{gpu="1",name="NVIDIA L4"} 17179869184.0"#,
            r#"vigil_gpu_process_memory_bytes{gpu="0",name="NVIDIA T4"} 1073741824.0"#,
            r#"vigil_gpu_temperature_celsius{gpu="0",name="NVIDIA T4"} 61.0"#,
            r#"vigil_gpu_power_watts{gpu="0",name="NVIDIA T4"} 72.5"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        assert!(!text.contains(r#"vigil_gpu_power_watts{gpu="1""#), "{text}");
    }
}
