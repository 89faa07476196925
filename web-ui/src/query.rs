//! The history endpoints' query strings: what a request may ask for and the
//! storage query it becomes. Everything a client controls is checked here,
//! before any SQL runs; [`parse_history_query`] is the same path for fuzzing.

use std::time::UNIX_EPOCH;

use actix_web::web;
use serde::Deserialize;
use vigil_storage::{CountQuery, DetectionQuery, EventQuery};

use crate::api::{now_ms, ApiError};

pub(crate) const DEFAULT_LIMIT: usize = 100;
pub(crate) const MAX_LIMIT: usize = 1000;
const MAX_CAMERA_ID_LEN: usize = 64;
const MAX_NAME_LEN: usize = 64;
/// Counts cover the last day unless a request says otherwise.
const DEFAULT_COUNT_SPAN_MS: i64 = 86_400_000;
/// The longest range one counts request may span: a row per minute, label
/// and zone adds up (a month of a busy camera is already several MB).
const MAX_COUNT_SPAN_DAYS: i64 = 31;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DetectionParams {
    #[param(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    camera: Option<String>,
    #[param(min_length = 1, max_length = 64)]
    label: Option<String>,
    since: Option<String>,
    until: Option<String>,
    #[param(minimum = 0)]
    pub(crate) after: Option<i64>,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventParams {
    #[param(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    camera: Option<String>,
    #[param(min_length = 1, max_length = 64)]
    label: Option<String>,
    #[param(min_length = 1, max_length = 64)]
    zone: Option<String>,
    /// Events that started at or after this time.
    from: Option<String>,
    /// Events that started before this time.
    to: Option<String>,
    #[param(minimum = 0.0, maximum = 1.0)]
    min_score: Option<f32>,
    /// A revision cursor: only changes after it, oldest first (pollers).
    #[param(minimum = 0)]
    pub(crate) after: Option<i64>,
    /// Only changes before this revision: the newest `limit` of them (people
    /// scrolling back).
    #[param(minimum = 0)]
    before: Option<i64>,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct CountParams {
    #[param(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    camera: String,
    from: Option<String>,
    to: Option<String>,
    #[param(min_length = 1, max_length = 64)]
    label: Option<String>,
    /// A zone's name; `""` for first sightings; `LINE:in` / `LINE:out`.
    #[param(max_length = 64)]
    zone: Option<String>,
}

/// Checks a detection request's parameters and turns them into a query.
pub(crate) fn detection_query(p: DetectionParams) -> Result<DetectionQuery, ApiError> {
    if let Some(c) = &p.camera {
        check_camera_id(c)?;
    }
    check_cursor("after", p.after)?;
    check_name("label", &p.label)?;
    Ok(DetectionQuery {
        camera: p.camera,
        label: p.label,
        since_ms: p.since.as_deref().map(parse_time_ms).transpose()?,
        until_ms: p.until.as_deref().map(parse_time_ms).transpose()?,
        after_id: p.after,
        limit: check_limit(p.limit)?,
    })
}

/// Checks an event request's parameters and turns them into a query.
pub(crate) fn event_query(p: EventParams) -> Result<EventQuery, ApiError> {
    if let Some(c) = &p.camera {
        check_camera_id(c)?;
    }
    check_name("label", &p.label)?;
    check_name("zone", &p.zone)?;
    if p.min_score.is_some_and(|s| !(0.0..=1.0).contains(&s)) {
        return Err(ApiError::BadRequest(
            "min_score must be between 0 and 1".into(),
        ));
    }
    check_cursor("after", p.after)?;
    check_cursor("before", p.before)?;
    Ok(EventQuery {
        camera: p.camera,
        label: p.label,
        zone: p.zone,
        start_from_ms: p.from.as_deref().map(parse_time_ms).transpose()?,
        start_to_ms: p.to.as_deref().map(parse_time_ms).transpose()?,
        min_score: p.min_score,
        after_revision: p.after,
        before_revision: p.before,
        limit: check_limit(p.limit)?,
    })
}

/// Checks a count request's parameters and turns them into a query; `now_ms`
/// ends the range when the request gives no `to`.
pub(crate) fn count_query(p: CountParams, now_ms: i64) -> Result<CountQuery, ApiError> {
    check_camera_id(&p.camera)?;
    let to = p.to.as_deref().map(parse_time_ms).transpose()?;
    let to = to.unwrap_or(now_ms);
    let from = p.from.as_deref().map(parse_time_ms).transpose()?;
    let from = from.unwrap_or(to.saturating_sub(DEFAULT_COUNT_SPAN_MS));
    if from >= to {
        return Err(ApiError::BadRequest("from must be before to".into()));
    }
    if to.saturating_sub(from) > MAX_COUNT_SPAN_DAYS * 86_400_000 {
        return Err(ApiError::BadRequest(format!(
            "from and to may be at most {MAX_COUNT_SPAN_DAYS} days apart; ask in parts"
        )));
    }
    check_name("label", &p.label)?;
    // An empty zone is meaningful here (first sightings).
    if p.zone
        .as_ref()
        .is_some_and(|z| z.chars().count() > MAX_NAME_LEN)
    {
        return Err(ApiError::BadRequest(format!(
            "zone must be at most {MAX_NAME_LEN} characters"
        )));
    }
    Ok(CountQuery {
        camera: p.camera,
        from_ms: from,
        to_ms: to,
        label: p.label,
        zone: p.zone,
    })
}

/// A history endpoint's query, checked, as storage will run it.
#[derive(Debug)]
pub enum HistoryQuery {
    Detections(DetectionQuery),
    Events(EventQuery),
    Counts(CountQuery),
}

/// The history endpoints whose query strings [`parse_history_query`] reads.
#[derive(Debug, Clone, Copy)]
pub enum HistoryEndpoint {
    Detections,
    Events,
    Counts,
}

/// Parses a raw query string exactly as the server does for `endpoint`
/// (actix's query extractor, then the same checks): `Err` is what the client
/// would get as a 400.
pub fn parse_history_query(endpoint: HistoryEndpoint, raw: &str) -> Result<HistoryQuery, String> {
    fn extract<T: serde::de::DeserializeOwned>(raw: &str) -> Result<T, String> {
        web::Query::<T>::from_query(raw)
            .map(web::Query::into_inner)
            .map_err(|e| e.to_string())
    }
    let checked = match endpoint {
        HistoryEndpoint::Detections => detection_query(extract(raw)?).map(HistoryQuery::Detections),
        HistoryEndpoint::Events => event_query(extract(raw)?).map(HistoryQuery::Events),
        HistoryEndpoint::Counts => count_query(extract(raw)?, now_ms()).map(HistoryQuery::Counts),
    };
    checked.map_err(|e| e.to_string())
}

/// Accepts Unix milliseconds or an RFC 3339 time.
pub(crate) fn parse_time_ms(s: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let t = humantime::parse_rfc3339_weak(s).map_err(|_| {
        ApiError::BadRequest(format!(
            "time {s:?}: expected Unix milliseconds or an RFC 3339 time such as 2026-01-31T12:00:00Z"
        ))
    })?;
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| ApiError::BadRequest(format!("time {s:?} is before 1970")))?
        .as_millis();
    i64::try_from(ms).map_err(|_| ApiError::BadRequest(format!("time {s:?} is too far ahead")))
}

pub(crate) fn check_camera_id(id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_CAMERA_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "camera id {id:?}: use 1-{MAX_CAMERA_ID_LEN} letters, digits, '-' or '_'"
        )))
    }
}

fn check_name(what: &str, v: &Option<String>) -> Result<(), ApiError> {
    match v {
        // Characters, as the OpenAPI document's maxLength counts them.
        Some(s) if s.is_empty() || s.chars().count() > MAX_NAME_LEN => Err(ApiError::BadRequest(
            format!("{what} must be 1-{MAX_NAME_LEN} characters"),
        )),
        _ => Ok(()),
    }
}

fn check_cursor(what: &str, cursor: Option<i64>) -> Result<(), ApiError> {
    if cursor.is_some_and(|c| c < 0) {
        return Err(ApiError::BadRequest(format!("{what} must be >= 0")));
    }
    Ok(())
}

fn check_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1..={MAX_LIMIT}"
        )));
    }
    Ok(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_unix_millis_or_rfc3339() {
        assert_eq!(parse_time_ms("1700000000000").unwrap(), 1_700_000_000_000);
        assert_eq!(
            parse_time_ms("2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000_000
        );
        assert!(parse_time_ms("yesterday").is_err());
    }

    #[test]
    fn camera_ids_are_restricted() {
        assert!(check_camera_id("gate-1_a").is_ok());
        assert!(check_camera_id("").is_err());
        assert!(check_camera_id("../etc").is_err());
        assert!(check_camera_id(&"x".repeat(65)).is_err());
    }

    #[test]
    fn raw_query_strings_are_checked_as_the_server_checks_them() {
        use HistoryEndpoint::*;
        assert!(matches!(
            parse_history_query(Events, "camera=gate&after=5&limit=10"),
            Ok(HistoryQuery::Events(q)) if q.after_revision == Some(5) && q.limit == 10
        ));
        let refused = [
            (Events, "after=-1"),
            (Events, "min_score=2"),
            (Events, "colour=red"),
            (Detections, "limit=0"),
            (Detections, "camera=..%2Fetc"),
            (Counts, ""),
            (Counts, "camera=gate&from=10&to=10"),
        ];
        for (endpoint, raw) in refused {
            assert!(
                parse_history_query(endpoint, raw).is_err(),
                "{endpoint:?} accepted {raw:?}"
            );
        }
    }

    #[test]
    fn a_count_range_at_the_edge_of_time_is_refused_not_overflowed() {
        // The default `from` is a day before `to`: at i64::MIN that would
        // overflow without the saturating subtraction.
        let q = parse_history_query(
            HistoryEndpoint::Counts,
            &format!("camera=a&to={}", i64::MIN),
        );
        assert_eq!(
            q.unwrap_err(),
            "from must be before to",
            "a range with nothing before its end"
        );
    }
}
