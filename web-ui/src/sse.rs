//! `GET /api/v1/events/live`: event changes pushed as server-sent events.
//!
//! The feed reads the same table and revision cursor as `GET /events`, so it
//! carries exactly what is stored, in order, each change once. Every message
//! has `id: <revision>`: a browser's `EventSource` reconnects by itself with
//! `Last-Event-ID` and resumes where it stopped, losing nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use vigil_storage::EventQuery;

use crate::api::{off_thread, ApiError, ApiEvent};
use crate::auth::{Credential, StillAllowed};
use crate::query::{event_query, EventParams};
use crate::AppState;

/// New rows are committed in groups a quarter second apart: polling twice
/// as often adds no latency worth having.
const POLL: Duration = Duration::from_millis(250);
/// A comment line now and then keeps proxies from closing an idle feed.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
const PAGE: usize = 200;

/// Set when the server stops, so open feeds end instead of holding the
/// shutdown up.
#[derive(Default)]
pub(crate) struct Closing(pub AtomicBool);

struct Feed {
    state: web::Data<AppState>,
    closing: web::Data<Closing>,
    caller: StillAllowed,
    query: EventQuery,
    last_sent: Instant,
    first: bool,
    /// `(cursor, deleted_up_to)` to announce before anything else.
    gap: Option<(i64, i64)>,
}

/// Event changes as server-sent events (`id:` is the revision; reconnect
/// with `Last-Event-ID` to resume). Same filters as `/events`.
#[utoipa::path(get, path = "/api/v1/events/live", tag = "history", params(EventParams),
    responses((status = 200, content_type = "text/event-stream", body = String),
        (status = 400, body = crate::api::ErrorBody), (status = 401, body = crate::api::ErrorBody)))]
pub(crate) async fn live_events(
    state: web::Data<AppState>,
    closing: web::Data<Closing>,
    params: web::Query<EventParams>,
    credential: web::ReqData<Credential>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let mut query = event_query(params.into_inner())?;
    let caller = StillAllowed::new(credential.into_inner(), state.auth.clone());
    let resume = request
        .headers()
        .get("Last-Event-ID")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim()
                .parse::<i64>()
                .ok()
                .filter(|r| *r >= 0)
                .ok_or_else(|| ApiError::BadRequest("Last-Event-ID must be a revision".into()))
        })
        .transpose()?;
    let start = match resume.or(query.after_revision) {
        Some(r) => r,
        // No cursor: from now on.
        None => {
            let reader = state.reader.clone();
            off_thread(move || reader.last_event_revision())
                .await?
                .unwrap_or(0)
        }
    };
    // A cursor below what retention deleted may have missed changes: say
    // so first (`event: gap`) rather than resume as if nothing happened.
    let gap = match resume.or(query.after_revision) {
        Some(after) => {
            let reader = state.reader.clone();
            let deleted = off_thread(move || reader.poll_state())
                .await?
                .deleted_event_revision;
            (after < deleted).then_some((after, deleted))
        }
        None => None,
    };
    query.after_revision = Some(start);
    query.limit = PAGE;
    let feed = Feed {
        state,
        closing,
        caller,
        query,
        last_sent: Instant::now(),
        first: true,
        gap,
    };
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        let chunk = feed.next_chunk().await?;
        Some((Ok::<_, actix_web::Error>(chunk), feed))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        // Reverse proxies must pass each message on at once.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(stream))
}

impl Feed {
    /// The next bytes to send; `None` ends the feed.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if std::mem::take(&mut self.first) {
            // Tell the browser how soon to reconnect, and open the stream at
            // once so the client knows it is connected.
            let mut hello = String::from("retry: 2000\n: connected\n\n");
            if let Some((after, deleted_up_to)) = self.gap.take() {
                hello.push_str(&format!(
                    "event: gap\ndata: {{\"after\":{after},\"deleted_up_to\":{deleted_up_to}}}\n\n"
                ));
            }
            return Some(Bytes::from(hello));
        }
        loop {
            if self.closing.0.load(Ordering::Relaxed) || !self.caller.check() {
                return None;
            }
            let reader = self.state.reader.clone();
            let query = self.query.clone();
            match web::block(move || reader.events(&query)).await {
                Ok(Ok(rows)) if !rows.is_empty() => {
                    self.query.after_revision = rows.last().map(|e| e.revision);
                    self.last_sent = Instant::now();
                    return Some(Bytes::from(messages(rows)));
                }
                Ok(Ok(_)) => {}
                // Storage trouble: say so and keep trying; the cursor stays.
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "live event feed cannot read storage");
                }
                Err(e) => tracing::warn!(error = %e, "live event feed worker failed"),
            }
            if self.last_sent.elapsed() >= KEEP_ALIVE {
                self.last_sent = Instant::now();
                return Some(Bytes::from_static(b": keep-alive\n\n"));
            }
            actix_web::rt::time::sleep(POLL).await;
        }
    }
}

fn messages(rows: Vec<vigil_storage::StoredEvent>) -> String {
    let mut out = String::new();
    for row in rows {
        let revision = row.revision;
        let json = serde_json::to_string(&ApiEvent::from(row)).unwrap_or_default();
        out.push_str(&format!("id: {revision}\nevent: event\ndata: {json}\n\n"));
    }
    out
}

/// What the server keeps to end the feeds when it stops.
pub(crate) fn closing() -> Arc<Closing> {
    Arc::new(Closing::default())
}
