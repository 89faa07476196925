//! Who is calling: every request but `/healthz`, the login call and the
//! static UI shell (no data in it) must carry an API token (`Authorization:
//! Bearer vigil_…`) or a browser session cookie. A browser's changes must
//! also carry the session's CSRF token in `X-CSRF-Token`; only admins change
//! anything.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::middleware::Next;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, HttpMessage, HttpResponse};
use serde::Serialize;
use vigil_storage::{AuthStore, Scope};

use crate::api::ApiError;
use crate::AppState;

pub(crate) const SESSION_COOKIE: &str = "vigil_session";
pub(crate) const CSRF_HEADER: &str = "X-CSRF-Token";

/// The authenticated caller, put in the request's extensions.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(crate) enum Caller {
    /// A person logged in from a browser.
    User {
        name: String,
        #[schema(value_type = String, example = "admin")]
        scope: Scope,
        /// Send back in `X-CSRF-Token` with every POST, PUT or DELETE.
        csrf: String,
    },
    /// A central server or script with an API token.
    Token {
        id: String,
        name: String,
        #[schema(value_type = String, example = "read")]
        scope: Scope,
    },
}

impl Caller {
    pub(crate) fn scope(&self) -> Scope {
        match self {
            Caller::User { scope, .. } | Caller::Token { scope, .. } => *scope,
        }
    }

    pub(crate) fn require_admin(&self) -> Result<(), ApiError> {
        if self.scope() == Scope::Admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden("this needs the admin scope".into()))
        }
    }
}

/// What the caller proved who they are with, kept in the request so that a
/// stream (the live event feed, MJPEG) can end once it stops being good: a
/// revoked token, a logout, an expired session or a deleted user.
#[derive(Clone)]
pub(crate) enum Credential {
    Token(String),
    Session(String),
}

/// How often a stream checks its caller's credential again.
const RECHECK_EVERY: Duration = Duration::from_secs(2);

/// A stream's caller, checked again at most every [`RECHECK_EVERY`].
pub(crate) struct StillAllowed {
    credential: Credential,
    auth: Arc<AuthStore>,
    checked: Instant,
}

impl StillAllowed {
    pub(crate) fn new(credential: Credential, auth: Arc<AuthStore>) -> Self {
        Self {
            credential,
            auth,
            checked: Instant::now(),
        }
    }

    /// False once the credential no longer lets its owner in.
    pub(crate) fn check(&mut self) -> bool {
        if self.checked.elapsed() < RECHECK_EVERY {
            return true;
        }
        self.checked = Instant::now();
        match &self.credential {
            Credential::Token(secret) => self.auth.verify_token(secret).is_some(),
            Credential::Session(cookie) => self.auth.session(cookie).is_some(),
        }
    }
}

/// Reachable without credentials: liveness, logging in, and the UI's static
/// files (the page asks for a login before it shows anything).
pub(crate) fn is_public(method: &Method, path: &str) -> bool {
    match *method {
        Method::GET | Method::HEAD => path == "/healthz" || path == "/" || path.starts_with("/ui/"),
        Method::POST => path == "/api/v1/login",
        _ => false,
    }
}

fn changes_something(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn bearer(req: &ServiceRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Finds the caller or answers 401/403 itself.
fn identify(req: &ServiceRequest, state: &AppState) -> Result<(Caller, Credential), ApiError> {
    if let Some(token) = bearer(req) {
        let info = state
            .auth
            .verify_token(token)
            .ok_or_else(|| ApiError::Unauthorized("invalid or revoked API token".into()))?;
        let caller = Caller::Token {
            id: info.id,
            name: info.name,
            scope: info.scope,
        };
        return Ok((caller, Credential::Token(token.to_string())));
    }
    let cookie = req.cookie(SESSION_COOKIE).ok_or_else(|| {
        ApiError::Unauthorized(
            "log in, or send an API token as `Authorization: Bearer vigil_…`".into(),
        )
    })?;
    let session = state
        .auth
        .session(cookie.value())
        .ok_or_else(|| ApiError::Unauthorized("session expired; log in again".into()))?;
    if changes_something(req.method()) {
        let sent = req
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if sent.is_empty() || !vigil_storage::auth::same_secret(sent, &session.csrf) {
            return Err(ApiError::Forbidden(format!(
                "missing or wrong {CSRF_HEADER} header"
            )));
        }
    }
    let caller = Caller::User {
        name: session.user,
        scope: session.scope,
        csrf: session.csrf,
    };
    Ok((caller, Credential::Session(cookie.value().to_string())))
}

/// Changes need the admin scope; anyone may log out.
pub(crate) fn needs_admin(method: &Method, path: &str) -> bool {
    changes_something(method) && path != "/api/v1/logout"
}

/// The middleware: authenticates, then lets only admins change things
/// (anyone may log out).
pub(crate) async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    if is_public(req.method(), req.path()) {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Err(actix_web::error::ErrorInternalServerError("no state"));
    };
    let checked = identify(&req, &state).and_then(|(caller, credential)| {
        if needs_admin(req.method(), req.path()) {
            caller.require_admin()?;
        }
        Ok((caller, credential))
    });
    match checked {
        Ok((caller, credential)) => {
            req.extensions_mut().insert(caller);
            req.extensions_mut().insert(credential);
            next.call(req)
                .await
                .map(ServiceResponse::map_into_left_body)
        }
        Err(e) => {
            let mut response = HttpResponse::from_error(e);
            if response.status() == actix_web::http::StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer realm=\"vigil\""),
                );
            }
            Ok(req.into_response(response).map_into_right_body())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_liveness_login_and_static_files_are_public() {
        assert!(is_public(&Method::GET, "/healthz"));
        assert!(is_public(&Method::GET, "/"));
        assert!(is_public(&Method::GET, "/ui/app.js"));
        assert!(is_public(&Method::POST, "/api/v1/login"));
        assert!(!is_public(&Method::GET, "/readyz"));
        assert!(!is_public(&Method::GET, "/metrics"));
        assert!(!is_public(&Method::GET, "/api/v1/events"));
        assert!(!is_public(&Method::POST, "/healthz"));
        assert!(!is_public(&Method::DELETE, "/ui/app.js"));
    }
}
