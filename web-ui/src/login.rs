//! Logging in and out from the browser, with failed attempts rate limited
//! per client address and per user name.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::cookie::{time, Cookie, SameSite};
use actix_web::{http::header, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::api::{off_thread, ApiError};
use crate::auth::{Caller, SESSION_COOKIE};
use crate::AppState;

/// Failed logins allowed per key within [`WINDOW`]; then 429 until the
/// oldest failure leaves the window.
pub(crate) const MAX_FAILURES: usize = 5;
const WINDOW: Duration = Duration::from_secs(60);
/// Keys remembered at most, so a flood of addresses cannot grow memory.
const MAX_KEYS: usize = 10_000;
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Password checks running at once, at most. Each argon2 check holds about
/// 19 MiB for a tenth of a second: unbounded, a burst of logins could take
/// the memory the video pipeline beside it needs.
const MAX_CHECKS_AT_ONCE: usize = 4;

/// Kept for the life of the process (not per configuration), so a reload
/// does not forget who was failing.
#[derive(Default)]
pub struct LoginLimiter {
    failures: Mutex<Failures>,
    checking: AtomicUsize,
}

/// Why a login attempt may not even be checked.
enum Refused {
    /// These keys failed too often lately: wait this long.
    Locked(Duration),
    /// Too many password checks are running already.
    Busy,
}

/// A password check in progress. It was counted as a failure when it
/// began, so attempts racing each other cannot all pass the limit;
/// [`Attempt::succeeded`] takes that back.
struct Attempt<'a> {
    limiter: &'a LoginLimiter,
    keys: [String; 2],
}

impl Attempt<'_> {
    fn succeeded(self) {
        self.limiter.succeed(&self.keys);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        self.limiter.checking.fetch_sub(1, Ordering::AcqRel);
    }
}

impl LoginLimiter {
    /// Starts a check for `keys`, or says why not. The lockout check and
    /// the recording of this attempt happen under one lock, so two attempts
    /// cannot both pass the last free place.
    fn begin(&self, keys: [String; 2]) -> Result<Attempt<'_>, Refused> {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(wait) = locked_for(&failures, &keys, now) {
            return Err(Refused::Locked(wait));
        }
        let taken = self
            .checking
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_CHECKS_AT_ONCE).then_some(n + 1)
            });
        if taken.is_err() {
            return Err(Refused::Busy);
        }
        record_failure(&mut failures, &keys, now);
        // From here on, `Attempt`'s drop gives the slot back.
        Ok(Attempt {
            limiter: self,
            keys,
        })
    }

    /// How long `keys` must wait, if any of them failed too often lately.
    #[cfg(test)]
    fn wait(&self, keys: &[String]) -> Option<Duration> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        locked_for(&failures, keys, Instant::now())
    }

    #[cfg(test)]
    fn fail(&self, keys: &[String]) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        record_failure(&mut failures, keys, Instant::now());
    }

    fn succeed(&self, keys: &[String]) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            map.remove(k);
        }
    }
}

/// Recent failures per key (`ip:…`, `user:…`), the last [`MAX_FAILURES`].
type Failures = HashMap<String, VecDeque<Instant>>;

/// How long `keys` must wait at `now`, if any of them failed too often lately.
fn locked_for(failures: &Failures, keys: &[String], now: Instant) -> Option<Duration> {
    keys.iter()
        .filter_map(|k| failures.get(k))
        .filter_map(|f| {
            let recent: Vec<&Instant> = f
                .iter()
                .filter(|t| now.duration_since(**t) < WINDOW)
                .collect();
            (recent.len() >= MAX_FAILURES)
                .then(|| WINDOW.saturating_sub(now.duration_since(*recent[0])))
        })
        .max()
}

fn record_failure(failures: &mut Failures, keys: &[String], now: Instant) {
    if failures.len() >= MAX_KEYS {
        failures.retain(|_, f| f.back().is_some_and(|t| now.duration_since(*t) < WINDOW));
        if failures.len() >= MAX_KEYS {
            // Under a flood of fresh addresses, forget the oldest half
            // rather than grow: per-user keys still hold.
            failures.retain(|k, _| k.starts_with("user:"));
        }
    }
    for k in keys {
        let f = failures.entry(k.clone()).or_default();
        f.push_back(now);
        while f.len() > MAX_FAILURES {
            f.pop_front();
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginRequest {
    user: String,
    password: String,
}

/// Who is logged in; `csrf` goes back in `X-CSRF-Token` with every change.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SessionInfo {
    #[serde(flatten)]
    caller: Caller,
}

fn session_cookie(value: String, max_age: Duration, secure: bool) -> Cookie<'static> {
    Cookie::build(SESSION_COOKIE, value)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .max_age(time::Duration::seconds(max_age.as_secs() as i64))
        .finish()
}

/// Logs a person in: sets an HttpOnly session cookie.
#[utoipa::path(
    post, path = "/api/v1/login", tag = "session", security(()),
    request_body = LoginRequest,
    responses(
        (status = 200, body = SessionInfo, description = "Logged in; the session cookie is set"),
        (status = 400, body = crate::api::ErrorBody), (status = 401, body = crate::api::ErrorBody),
        (status = 429, body = crate::api::ErrorBody, description = "Too many failed attempts, or too many logins at once; see Retry-After"),
    )
)]
pub(crate) async fn login(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let LoginRequest { user, password } = body.into_inner();
    // The peer address, not X-Forwarded-For: a client could forge that.
    let ip = request
        .peer_addr()
        .map_or_else(|| "unknown".into(), |a| a.ip().to_string());
    if user.len() > 64 || password.len() > 1024 {
        return Err(ApiError::BadRequest("user or password too long".into()));
    }
    let keys = [format!("ip:{ip}"), format!("user:{user}")];
    let attempt = match state.limiter.begin(keys) {
        Ok(attempt) => attempt,
        Err(Refused::Locked(wait)) => return Err(ApiError::TooManyRequests(wait.as_secs().max(1))),
        Err(Refused::Busy) => return Err(ApiError::Busy(1)),
    };
    let auth = state.auth.clone();
    let (name, pw) = (user.clone(), password);
    let found = off_thread(move || auth.verify_password(&name, &pw)).await?;
    let Some(found) = found else {
        drop(attempt);
        tracing::warn!(user = %user, %ip, "failed login");
        return Err(ApiError::Unauthorized("wrong user name or password".into()));
    };
    attempt.succeeded();
    let auth = state.auth.clone();
    let new = off_thread(move || auth.create_session(&found, SESSION_TTL)).await?;
    tracing::info!(user = %user, %ip, "logged in");
    let info = SessionInfo {
        caller: Caller::User {
            name: new.session.user,
            scope: new.session.scope,
            csrf: new.session.csrf,
        },
    };
    Ok(HttpResponse::Ok()
        .cookie(session_cookie(
            new.cookie,
            SESSION_TTL,
            state.secure_cookies,
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(info))
}

/// Ends the browser's session.
#[utoipa::path(
    post, path = "/api/v1/logout", tag = "session",
    responses((status = 204, description = "Logged out"), (status = 401, body = crate::api::ErrorBody))
)]
pub(crate) async fn logout(
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    if let Some(cookie) = request.cookie(SESSION_COOKIE) {
        let auth = state.auth.clone();
        let value = cookie.value().to_string();
        off_thread(move || auth.end_session(&value)).await?;
    }
    Ok(HttpResponse::NoContent()
        .cookie(session_cookie(
            String::new(),
            Duration::ZERO,
            state.secure_cookies,
        ))
        .finish())
}

/// Who the caller is: a logged-in person (with the CSRF token) or an API token.
#[utoipa::path(
    get, path = "/api/v1/session", tag = "session",
    responses((status = 200, body = SessionInfo), (status = 401, body = crate::api::ErrorBody))
)]
pub(crate) async fn session(caller: web::ReqData<Caller>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(SessionInfo {
            caller: caller.into_inner(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_lock_a_key_out_until_the_window_passes() {
        let limiter = LoginLimiter::default();
        let keys = ["ip:1.2.3.4".to_string(), "user:ana".to_string()];
        for _ in 0..MAX_FAILURES - 1 {
            limiter.fail(&keys);
        }
        assert!(limiter.wait(&keys).is_none());
        limiter.fail(&keys);
        let wait = limiter.wait(&keys).expect("locked out");
        assert!(wait <= WINDOW && wait > WINDOW - Duration::from_secs(5));
        // Another address guessing the same user is held back too.
        assert!(limiter
            .wait(&["ip:5.6.7.8".into(), "user:ana".into()])
            .is_some());
        assert!(limiter
            .wait(&["ip:5.6.7.8".into(), "user:bo".into()])
            .is_none());
    }

    fn keys(ip: u32) -> [String; 2] {
        [format!("ip:{ip}"), "user:ana".to_string()]
    }

    #[test]
    fn racing_attempts_count_before_their_check_ends() {
        let limiter = LoginLimiter::default();
        // Checks that have not finished already count as failures, so a
        // burst cannot slip past the limit while argon2 runs.
        let running: Vec<Attempt> = (0..MAX_CHECKS_AT_ONCE as u32)
            .map(|i| limiter.begin(keys(i)).ok().expect("a free slot"))
            .collect();
        assert!(matches!(limiter.begin(keys(99)), Err(Refused::Busy)));
        drop(running);
        drop(limiter.begin(keys(98)).ok().expect("the fifth attempt"));
        assert!(matches!(limiter.begin(keys(99)), Err(Refused::Locked(_))));
        // A right password takes its own count back.
        let other = ["ip:7".to_string(), "user:bo".to_string()];
        limiter.begin(other.clone()).ok().unwrap().succeeded();
        assert!(limiter.wait(&other).is_none());
        assert_eq!(limiter.checking.load(Ordering::Acquire), 0);
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_addresses() {
        let limiter = LoginLimiter::default();
        for i in 0..MAX_KEYS + 10 {
            limiter.fail(&[format!("ip:{i}")]);
        }
        assert!(limiter.failures.lock().unwrap().len() <= MAX_KEYS);
    }
}
