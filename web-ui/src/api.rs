//! REST handlers under `/api/v1`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::{http::header, web, HttpResponse, ResponseError};
use serde::{Deserialize, Serialize};
use vigil_storage::{MinuteCount, StoredDetection, StoredEvent};

use crate::query::{
    check_camera_id, count_query, detection_query, event_query, CountParams, DetectionParams,
    EventParams,
};
use crate::AppState;

/// Runs blocking work (SQLite, redb, argon2) off the async workers; its
/// failure is a 503 with the reason.
pub(crate) async fn off_thread<T, E>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    web::block(f)
        .await
        .map_err(|e| ApiError::Storage(e.to_string()))?
        .map_err(|e| ApiError::Storage(e.to_string()))
}

/// An API error: a status and a message a person can act on, as JSON.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("too many failed attempts; try again in {0} s")]
    TooManyRequests(u64),
    #[error("too many requests at once; try again in {0} s")]
    Busy(u64),
    #[error("storage unavailable: {0}")]
    Storage(String),
}

/// Every error the API returns has this shape.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    #[schema(example = "limit must be 1..=1000")]
    error: String,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> actix_web::http::StatusCode {
        use actix_web::http::StatusCode;
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooManyRequests(_) | ApiError::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let ApiError::TooManyRequests(secs) | ApiError::Busy(secs) = self {
            response.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        response.json(ErrorBody {
            error: self.to_string(),
        })
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `2026-11-22T10:00:00.123Z` for a Unix-millisecond wall time.
pub(crate) fn rfc3339_ms(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// A camera as the API lists it.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ApiCamera {
    #[serde(flatten)]
    status: crate::CameraStatus,
    /// When the latest analysed frame was decoded.
    last_frame_time: Option<String>,
    /// The newest stored detection of this camera.
    last_detection_id: Option<i64>,
}

async fn describe(
    state: &AppState,
    statuses: Vec<crate::CameraStatus>,
) -> Result<Vec<ApiCamera>, ApiError> {
    let reader = state.reader.clone();
    let ids: Vec<String> = statuses.iter().map(|s| s.id.clone()).collect();
    let last_ids = off_thread(move || {
        ids.iter()
            .map(|id| reader.last_detection_id(id))
            .collect::<Result<Vec<_>, _>>()
    })
    .await?;
    Ok(statuses
        .into_iter()
        .zip(last_ids)
        .map(|(status, last_detection_id)| ApiCamera {
            last_frame_time: state
                .live
                .latest(&status.id)
                .map(|s| rfc3339_ms(s.frame_wall_ms)),
            last_detection_id,
            status,
        })
        .collect())
}

/// Every camera with its state and ingest stats.
#[utoipa::path(get, path = "/api/v1/cameras", tag = "cameras",
    responses((status = 200, body = Vec<ApiCamera>), (status = 401, body = ErrorBody)))]
pub(crate) async fn cameras(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let list = describe(&state, state.pipeline.cameras()).await?;
    Ok(HttpResponse::Ok().json(list))
}

/// One camera.
#[utoipa::path(get, path = "/api/v1/cameras/{id}", tag = "cameras",
    params(("id" = String, Path, description = "Camera id")),
    responses((status = 200, body = ApiCamera), (status = 404, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub(crate) async fn camera(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    check_camera_id(&id)?;
    let found: Vec<_> = state
        .pipeline
        .cameras()
        .into_iter()
        .filter(|c| c.id == *id)
        .collect();
    if found.is_empty() {
        return Err(ApiError::NotFound(format!("no camera {id:?}")));
    }
    let mut list = describe(&state, found).await?;
    Ok(HttpResponse::Ok().json(list.remove(0)))
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ApiDetection {
    id: i64,
    camera: String,
    frame_seq: u64,
    /// Stream clock, seconds from the stream's start.
    frame_pts: f64,
    /// Wall clock of the box when the frame was decoded.
    frame_time: String,
    label: String,
    score: f32,
    #[serde(rename = "box")]
    bbox: [f32; 4],
}

/// One page of detections; pass `next_after` as `after` to get the next.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct DetectionPage {
    /// See the events page.
    #[serde(rename = "box")]
    box_id: String,
    detections: Vec<ApiDetection>,
    next_after: Option<i64>,
    /// Present when your cursor fell behind retention (ids up to
    /// `deleted_up_to` may be gone).
    gap: Option<Gap>,
}

impl From<StoredDetection> for ApiDetection {
    fn from(d: StoredDetection) -> Self {
        let r = d.record;
        Self {
            id: d.id,
            frame_time: rfc3339_ms(r.frame_wall_ms),
            frame_pts: r.frame_pts_us as f64 / 1e6,
            camera: r.camera,
            frame_seq: r.frame_seq,
            label: r.label,
            score: (r.score * 1e4).round() / 1e4,
            bbox: r.bbox.map(|v| (v * 10.0).round() / 10.0),
        }
    }
}

/// Detections, oldest first; without a cursor the newest `limit`.
#[utoipa::path(get, path = "/api/v1/detections", tag = "history", params(DetectionParams),
    responses((status = 200, body = DetectionPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub(crate) async fn detections(
    state: web::Data<AppState>,
    params: web::Query<DetectionParams>,
) -> Result<HttpResponse, ApiError> {
    let p = params.into_inner();
    let after = p.after;
    let query = detection_query(p)?;
    let reader = state.reader.clone();
    // The state first: a deletion after it can only make the gap look
    // smaller than it was for rows this page does not show.
    let (state, rows) = off_thread(move || {
        let state = reader.poll_state()?;
        Ok::<_, vigil_storage::StorageError>((state, reader.detections(&query)?))
    })
    .await?;
    let page = DetectionPage {
        box_id: state.box_id,
        next_after: rows.last().map(|d| d.id).or(after),
        detections: rows.into_iter().map(Into::into).collect(),
        gap: gap(after, state.deleted_detection_id),
    };
    Ok(HttpResponse::Ok().json(page))
}

#[derive(Debug, Deserialize)]
pub(crate) struct SeqParam {
    seq: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ApiEvent {
    id: i64,
    revision: i64,
    camera: String,
    track_id: u64,
    label: String,
    start_time: String,
    /// Absent while the object is still tracked.
    end_time: Option<String>,
    max_score: f32,
    #[serde(rename = "box")]
    bbox: [f32; 4],
    zones: Vec<String>,
    /// `/api/v1/snapshots/{key}.jpg` when a snapshot was kept.
    snapshot: Option<String>,
}

impl From<StoredEvent> for ApiEvent {
    fn from(e: StoredEvent) -> Self {
        let r = e.record;
        Self {
            id: e.id,
            revision: e.revision,
            start_time: rfc3339_ms(r.start_ms),
            end_time: r.end_ms.map(rfc3339_ms),
            camera: r.camera,
            track_id: r.track_id,
            label: r.label,
            max_score: r.max_score,
            bbox: r.best_box,
            zones: r.zones,
            snapshot: r.snapshot.map(|k| format!("/api/v1/snapshots/{k}.jpg")),
        }
    }
}

/// One page of events; pass `next_after` as `after` to get the next. Every
/// change of an event (opened, updated, closed) comes once, in order.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct EventPage {
    /// This box's database: a different id than last time means a new
    /// database, where your cursor means nothing (start from 0).
    #[serde(rename = "box")]
    box_id: String,
    events: Vec<ApiEvent>,
    next_after: Option<i64>,
    /// Present when your cursor fell behind retention: changes after it, up
    /// to `deleted_up_to`, may have been deleted before you read them.
    gap: Option<Gap>,
}

/// Rows retention deleted before a poller read them.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Gap {
    /// Your cursor.
    after: i64,
    /// The highest revision (events) or id (detections) retention deleted.
    deleted_up_to: i64,
}

/// A gap when `after` is below what retention deleted. Without a cursor a
/// client asked for the newest rows and cannot have missed any.
fn gap(after: Option<i64>, deleted_up_to: i64) -> Option<Gap> {
    after.filter(|a| *a < deleted_up_to).map(|after| Gap {
        after,
        deleted_up_to,
    })
}

/// Event changes in revision order: each opening, update and close once.
#[utoipa::path(get, path = "/api/v1/events", tag = "history", params(EventParams),
    responses((status = 200, body = EventPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub(crate) async fn events(
    state: web::Data<AppState>,
    params: web::Query<EventParams>,
) -> Result<HttpResponse, ApiError> {
    let p = params.into_inner();
    let after = p.after;
    let query = event_query(p)?;
    let reader = state.reader.clone();
    let (state, rows) = off_thread(move || {
        let state = reader.poll_state()?;
        Ok::<_, vigil_storage::StorageError>((state, reader.events(&query)?))
    })
    .await?;
    Ok(HttpResponse::Ok().json(EventPage {
        box_id: state.box_id,
        next_after: rows.last().map(|e| e.revision).or(after),
        events: rows.into_iter().map(Into::into).collect(),
        gap: gap(after, state.deleted_event_revision),
    }))
}

/// Per-minute counts of one camera, by label and zone; the last 24 hours
/// unless told otherwise. Counts of the current minute still grow: poll by
/// time range (from the last complete minute you have).
#[utoipa::path(get, path = "/api/v1/counts", tag = "history", params(CountParams),
    responses((status = 200, body = Object), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub(crate) async fn counts(
    state: web::Data<AppState>,
    params: web::Query<CountParams>,
) -> Result<HttpResponse, ApiError> {
    let query = count_query(params.into_inner(), now_ms())?;
    let camera = query.camera.clone();
    #[derive(Serialize)]
    struct ApiCount {
        minute: String,
        label: String,
        zone: String,
        count: i64,
    }
    let reader = state.reader.clone();
    let rows: Vec<MinuteCount> = off_thread(move || reader.counts(&query)).await?;
    let counts: Vec<ApiCount> = rows
        .into_iter()
        .map(|c| ApiCount {
            minute: rfc3339_ms(c.minute_ms),
            label: c.label,
            zone: c.zone,
            count: c.count,
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "camera": camera, "counts": counts })))
}

pub(crate) fn known_camera(state: &AppState, id: &str) -> Result<(), ApiError> {
    check_camera_id(id)?;
    if state.pipeline.cameras().iter().any(|c| c.id == id) {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!("no camera {id:?}")))
    }
}

/// The latest analysed frame's detections (after a restart: the last ones stored).
#[utoipa::path(get, path = "/api/v1/cameras/{id}/snapshot", tag = "cameras",
    params(("id" = String, Path, description = "Camera id")),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub(crate) async fn snapshot(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    known_camera(&state, &id)?;
    #[derive(Serialize)]
    struct SnapshotInfo<'a> {
        camera: &'a str,
        seq: u64,
        frame_time: String,
        width: u32,
        height: u32,
        detections: &'a [crate::LiveDetection],
        /// False when this comes from before a restart: no picture is kept.
        live: bool,
    }
    let info = |seq, wall_ms, width, height, detections, live| SnapshotInfo {
        camera: &id,
        seq,
        frame_time: rfc3339_ms(wall_ms),
        width,
        height,
        detections,
        live,
    };
    let response = |body: SnapshotInfo| {
        HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(body)
    };
    if let Some(s) = state.live.latest(&id) {
        return Ok(response(info(
            s.seq,
            s.frame_wall_ms,
            s.width,
            s.height,
            &s.detections,
            true,
        )));
    }
    // Nothing analysed since start: the last detections before the restart.
    let hot = state.hot.clone();
    let key = id.clone();
    let stored = off_thread(move || hot.latest(&key))
        .await?
        .and_then(|bytes| serde_json::from_slice::<crate::LatestDetections>(&bytes).ok())
        .ok_or_else(|| ApiError::NotFound(format!("camera {id:?} has no analysed frame yet")))?;
    let l = &stored;
    Ok(response(info(
        l.seq,
        l.frame_wall_ms,
        l.width,
        l.height,
        &l.detections,
        false,
    )))
}

/// The frame those detections came from (`seq` picks one of the last two), without boxes.
#[utoipa::path(get, path = "/api/v1/cameras/{id}/snapshot.jpg", tag = "cameras",
    params(("id" = String, Path, description = "Camera id"),
        ("seq" = Option<u64>, Query, description = "Frame number from /snapshot")),
    responses((status = 200, content_type = "image/jpeg", body = Vec<u8>),
        (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn snapshot_jpeg(
    state: web::Data<AppState>,
    id: web::Path<String>,
    q: web::Query<SeqParam>,
) -> Result<HttpResponse, ApiError> {
    known_camera(&state, &id)?;
    let snap = state
        .live
        .get(&id, q.seq)
        .ok_or_else(|| ApiError::NotFound(format!("camera {id:?}: frame no longer kept")))?;
    crate::stream::frame_response(snap, false).await
}

/// One event by id.
#[utoipa::path(get, path = "/api/v1/events/{id}", tag = "history",
    params(("id" = i64, Path, description = "Event id")),
    responses((status = 200, body = ApiEvent), (status = 404, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub(crate) async fn event(
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let reader = state.reader.clone();
    let found = off_thread(move || reader.event(id)).await?.ok_or_else(|| {
        ApiError::NotFound(format!("no event {id} (retention may have removed it)"))
    })?;
    Ok(HttpResponse::Ok().json(ApiEvent::from(found)))
}

/// An event's snapshot JPEG from the hot store.
#[utoipa::path(get, path = "/api/v1/snapshots/{key}.jpg", tag = "history",
    params(("key" = u64, Path, description = "From an event's `snapshot` link")),
    responses((status = 200, content_type = "image/jpeg", body = Vec<u8>),
        (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn event_snapshot(
    state: web::Data<AppState>,
    key: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let hot = state.hot.clone();
    let key = key.into_inner();
    let jpeg = off_thread(move || hot.snapshot(key))
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!("no snapshot {key} (it may have been evicted)"))
        })?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "image/jpeg"))
        .insert_header((header::CACHE_CONTROL, "max-age=86400, immutable"))
        .body(jpeg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_times_print_as_rfc3339_millis() {
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
