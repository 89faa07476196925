//! Liveness, readiness and the stats of every part of the box.

use actix_web::{http::header, web, HttpResponse};
use serde::Serialize;
use vigil_storage::writer::WriterHealth;
use vigil_storage::StorageUsage;

use crate::api::{now_ms, off_thread, rfc3339_ms, ApiError, ErrorBody};
use crate::{AppState, CameraStatus, InferenceStats};

/// Answers while the process serves requests; says nothing else (it is the
/// one route open to anyone).
#[utoipa::path(get, path = "/healthz", tag = "health", security(()),
    responses((status = 200, description = "The process is up")))]
pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({ "status": "ok" }))
}

/// Ready when the model is loaded (it is before the server starts) and
/// storage can write; 503 while commits fail (a full disk, say).
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "Ready"), (status = 503, description = "Storage cannot write"),
        (status = 401, body = ErrorBody)))]
pub(crate) async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let storage = state.storage_health.health();
    let ready = !state.storage_health.is_failing();
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "degraded" },
        "time": rfc3339_ms(now_ms()),
        "storage": storage,
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// This process's CPU time, memory and age, from `/proc/self`.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct ProcessStats {
    pub uptime_seconds: f64,
    /// User plus system CPU time since start; its rate is the CPU use.
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub peak_resident_bytes: u64,
    pub threads: u64,
}

/// Clock ticks per second of `/proc/*/stat` (USER_HZ): 100 on every Linux
/// architecture we ship for.
const USER_HZ: f64 = 100.0;

/// This process's figures now; `started` is when it started serving.
pub fn process_stats(started: std::time::Instant) -> ProcessStats {
    let mut p = ProcessStats {
        uptime_seconds: started.elapsed().as_secs_f64(),
        ..Default::default()
    };
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name, which is in parentheses and may hold spaces.
        if let Some((_, rest)) = stat.rsplit_once(')') {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            // utime and stime are fields 14 and 15 of the line: 11 and 12 here.
            p.cpu_seconds = (num(11) + num(12)) / USER_HZ;
            p.threads = num(17) as u64;
        }
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map_or(0, |k| k * 1024)
        };
        p.resident_bytes = kib("VmRSS:");
        p.peak_resident_bytes = kib("VmHWM:");
    }
    p
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct StorageStats {
    #[schema(value_type = Object)]
    pub writer: WriterHealth,
    #[schema(value_type = Object)]
    pub usage: StorageUsage,
}

/// Everything `/api/v1/stats` reports.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Stats {
    pub time: String,
    pub cameras: Vec<CameraStatus>,
    pub inference: InferenceStats,
    pub storage: StorageStats,
    pub process: ProcessStats,
    /// NVIDIA GPUs and their decoders; null on a box without the driver.
    pub gpu: Option<crate::gpu::GpuStats>,
}

pub(crate) async fn collect(state: &AppState) -> Result<Stats, ApiError> {
    let reader = state.reader.clone();
    let usage = off_thread(move || reader.usage()).await?;
    Ok(Stats {
        time: rfc3339_ms(now_ms()),
        cameras: state.pipeline.cameras(),
        inference: state.pipeline.inference(),
        storage: StorageStats {
            writer: state.storage_health.health(),
            usage,
        },
        process: process_stats(state.started),
        gpu: crate::gpu::latest(),
    })
}

/// Cameras, model, storage and process figures in one document. Counters
/// are totals since start; take differences between two reads for rates.
#[utoipa::path(get, path = "/api/v1/stats", tag = "system",
    responses((status = 200, body = Stats), (status = 401, body = ErrorBody)))]
pub(crate) async fn stats(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let stats = collect(&state).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(stats))
}

/// The running configuration (TOML), camera credentials removed.
#[utoipa::path(get, path = "/api/v1/config", tag = "system",
    responses((status = 200, content_type = "application/toml", body = String),
        (status = 401, body = ErrorBody)))]
pub(crate) async fn config(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/toml; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(state.pipeline.config_toml())
}

/// Replaces the configuration: validated, saved atomically, then the
/// pipeline restarts with it inside the process (a second or two without
/// frames; sessions and tokens stay). Credentials shown as `***` or
/// `<redacted>` and sent back unchanged keep their stored values.
#[utoipa::path(put, path = "/api/v1/config", tag = "system",
    request_body(content = String, content_type = "application/toml"),
    responses((status = 202, description = "Saved; the pipeline is restarting with it"),
        (status = 400, body = ErrorBody, description = "Invalid; names the line and field"),
        (status = 409, body = ErrorBody, description = "Cannot be changed now (e.g. the demo has no file)"),
        (status = 403, body = ErrorBody)))]
pub(crate) async fn update_config(
    state: web::Data<AppState>,
    caller: web::ReqData<crate::auth::Caller>,
    body: String,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let pipeline = state.pipeline.clone();
    web::block(move || pipeline.apply_config(&body))
        .await
        .map_err(|e| ApiError::Storage(e.to_string()))?
        .map_err(|e| match e {
            crate::ConfigRejected::Invalid(m) => ApiError::BadRequest(m),
            crate::ConfigRejected::Unavailable(m) => ApiError::Conflict(m),
        })?;
    Ok(HttpResponse::Accepted().json(serde_json::json!({ "status": "restarting" })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_stats_read_this_process() {
        let p = process_stats(std::time::Instant::now());
        assert!(p.resident_bytes > 0);
        assert!(p.peak_resident_bytes >= p.resident_bytes);
        assert!(p.threads >= 1);
    }
}
