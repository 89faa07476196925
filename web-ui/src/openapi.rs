//! The OpenAPI 3 document, generated from the handlers' annotations.

use actix_web::HttpResponse;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{admin, api, login, metrics, sse, stats, stream};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Vigil API",
        description = "Cameras, detections, events and counts of one Vigil box. \
            Authenticate with `Authorization: Bearer <token>` (tokens from `vigil token create` \
            or the UI) or a browser session; only `/healthz` is open.",
    ),
    paths(
        stats::healthz, stats::readyz, stats::stats, stats::config, stats::update_config,
        metrics::metrics,
        login::login, login::logout, login::session,
        api::cameras, api::camera, api::snapshot, api::snapshot_jpeg,
        stream::latest_jpeg, stream::mjpeg,
        api::detections, api::events, api::event, sse::live_events, api::counts,
        api::event_snapshot,
        admin::list_tokens, admin::create_token, admin::revoke_token,
        admin::list_users, admin::set_user, admin::delete_user,
    ),
    modifiers(&Security, &CommonErrors),
    security(("bearer" = []), ("session" = [])),
    tags(
        (name = "cameras", description = "Cameras and their live pictures"),
        (name = "history", description = "Stored detections, events and counts; cursors for pollers"),
        (name = "system", description = "Stats, metrics and configuration"),
        (name = "health", description = "Liveness and readiness"),
        (name = "session", description = "Logging in from a browser"),
        (name = "admin", description = "API tokens and users (admin scope)"),
    )
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("vigil_<id>_<secret>")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
                crate::auth::SESSION_COOKIE,
            ))),
        );
    }
}

/// Responses any operation can give, whatever its handler says: 401 on
/// every route that needs a token (a token can be revoked mid-use), 403 on
/// every change (the admin scope) and 400 on every route that takes
/// parameters or a body (they are checked before the handler runs). Found
/// missing by schemathesis.
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                (actix_web::http::Method::GET, &mut item.get),
                (actix_web::http::Method::PUT, &mut item.put),
                (actix_web::http::Method::POST, &mut item.post),
                (actix_web::http::Method::DELETE, &mut item.delete),
            ];
            for (method, operation) in operations {
                let Some(op) = operation else { continue };
                let responses = &mut op.responses.responses;
                if !crate::auth::is_public(&method, path) {
                    responses
                        .entry("401".into())
                        .or_insert_with(|| error("No valid token or session").into());
                }
                if crate::auth::needs_admin(&method, path) {
                    responses
                        .entry("403".into())
                        .or_insert_with(|| error("This needs the admin scope").into());
                }
                let takes_input = op.request_body.is_some()
                    || op.parameters.as_ref().is_some_and(|p| !p.is_empty());
                if takes_input {
                    responses
                        .entry("400".into())
                        .or_insert_with(|| error("A parameter or the body is invalid").into());
                }
            }
        }
    }
}

/// The document as JSON, e.g. for `vigil openapi` or a client generator.
pub fn openapi_json() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc.to_pretty_json().unwrap_or_default()
}

/// `GET /api/v1/openapi.json`
pub(crate) async fn serve() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(openapi_json())
}
