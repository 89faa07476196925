//! The actix-web server on its own thread and runtime.

use std::sync::Arc;
use std::thread::JoinHandle;

use actix_web::body::MessageBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::header;
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{middleware, web, App, HttpResponse, HttpServer};

use crate::sse::{self, Closing};
use crate::{admin, api, assets, auth, login, metrics, openapi, stats, stream, AppState, WebError};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `host:port`
    pub listen: String,
    pub workers: usize,
    /// HTTPS instead of HTTP.
    pub tls: Option<crate::TlsFiles>,
}

/// A running server; [`ServerHandle::stop`] shuts it down gracefully.
pub struct ServerHandle {
    handle: actix_web::dev::ServerHandle,
    thread: JoinHandle<()>,
    closing: Arc<Closing>,
    pub local_addr: std::net::SocketAddr,
}

impl ServerHandle {
    /// Stops accepting connections, lets requests in flight finish, and waits.
    pub fn stop(self) {
        // Live feeds never finish on their own: end them first.
        self.closing
            .0
            .store(true, std::sync::atomic::Ordering::Relaxed);
        actix_web::rt::System::new().block_on(self.handle.stop(true));
        if self.thread.join().is_err() {
            tracing::error!("http server thread panicked");
        }
    }
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1")
            .route("/login", web::post().to(login::login))
            .route("/logout", web::post().to(login::logout))
            .route("/session", web::get().to(login::session))
            .route("/openapi.json", web::get().to(openapi::serve))
            .route("/stats", web::get().to(stats::stats))
            .service(
                web::resource("/config")
                    // A configuration with many cameras and zones outgrows
                    // the small-JSON limit.
                    .app_data(web::PayloadConfig::new(MAX_CONFIG_BODY))
                    .route(web::get().to(stats::config))
                    .route(web::put().to(stats::update_config)),
            )
            .route("/cameras", web::get().to(api::cameras))
            .route("/cameras/{id}", web::get().to(api::camera))
            .route("/cameras/{id}/snapshot", web::get().to(api::snapshot))
            .route(
                "/cameras/{id}/snapshot.jpg",
                web::get().to(api::snapshot_jpeg),
            )
            .route(
                "/cameras/{id}/latest.jpg",
                web::get().to(stream::latest_jpeg),
            )
            .route("/cameras/{id}/stream.mjpeg", web::get().to(stream::mjpeg))
            .route("/detections", web::get().to(api::detections))
            .route("/events", web::get().to(api::events))
            .route("/events/live", web::get().to(sse::live_events))
            .route("/events/{id}", web::get().to(api::event))
            .route("/counts", web::get().to(api::counts))
            .route("/snapshots/{key}.jpg", web::get().to(api::event_snapshot))
            .route("/tokens", web::get().to(admin::list_tokens))
            .route("/tokens", web::post().to(admin::create_token))
            .route("/tokens/{id}", web::delete().to(admin::revoke_token))
            .route("/users", web::get().to(admin::list_users))
            .route("/users/{name}", web::put().to(admin::set_user))
            .route("/users/{name}", web::delete().to(admin::delete_user))
            .default_service(web::to(|| async {
                HttpResponse::NotFound().json(serde_json::json!({"error": "no such endpoint"}))
            })),
    )
    .route("/healthz", web::get().to(stats::healthz))
    .route("/readyz", web::get().to(stats::readyz))
    .route("/metrics", web::get().to(metrics::metrics))
    .route("/", web::get().to(assets::index))
    .route("/ui/{path:.*}", web::get().to(assets::file))
    .default_service(web::to(|| async {
        HttpResponse::NotFound().json(serde_json::json!({"error": "not found"}))
    }));
}

/// Binds `config.listen` and serves on a new thread with its own runtime.
pub fn start(config: &ServerConfig, state: AppState) -> Result<ServerHandle, WebError> {
    let tls = config
        .tls
        .as_ref()
        .map(crate::tls::server_config)
        .transpose()?;
    crate::gpu::start_sampler();
    let state = web::Data::from(Arc::new(state));
    let closing = sse::closing();
    let closing_data = web::Data::from(closing.clone());
    let listen = config.listen.clone();
    let workers = config.workers.max(1);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let bound = HttpServer::new(move || {
                    App::new()
                        .app_data(state.clone())
                        .app_data(closing_data.clone())
                        .app_data(query_config())
                        .app_data(json_config())
                        .app_data(path_config())
                        .app_data(web::PayloadConfig::new(MAX_BODY))
                        .wrap(middleware::from_fn(auth::authenticate))
                        .wrap(
                            middleware::ErrorHandlers::new()
                                .default_handler_client(json_client_error),
                        )
                        .wrap(
                            middleware::DefaultHeaders::new()
                                .add(("X-Content-Type-Options", "nosniff"))
                                .add(("X-Frame-Options", "DENY"))
                                .add(("Referrer-Policy", "no-referrer")),
                        )
                        .configure(routes)
                })
                .workers(workers)
                .disable_signals() // the appliance owns signals and shutdown order
                .shutdown_timeout(5);
                let bound = match tls {
                    Some(tls) => bound.bind_rustls_0_23(&listen, tls),
                    None => bound.bind(&listen),
                };
                let server = match bound {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let addr = server.addrs().first().copied();
                let server = server.run();
                let _ = ready_tx.send(Ok((server.handle(), addr)));
                if let Err(e) = server.await {
                    tracing::error!(error = %e, "http server failed");
                }
            })
        })
        .map_err(|e| WebError::Bind {
            addr: config.listen.clone(),
            source: e,
        })?;
    let bind_err = |e| WebError::Bind {
        addr: config.listen.clone(),
        source: e,
    };
    let (handle, addr) = ready_rx
        .recv()
        .map_err(|_| bind_err(std::io::Error::other("server thread ended")))?
        .map_err(bind_err)?;
    let local_addr = addr.ok_or_else(|| bind_err(std::io::Error::other("bound to no address")))?;
    tracing::info!(addr = %local_addr, "serving the UI and API");
    Ok(ServerHandle {
        handle,
        thread,
        closing,
        local_addr,
    })
}

/// Request bodies are small JSON documents; anything bigger is refused
/// before it is read into memory.
const MAX_BODY: usize = 64 * 1024;
const MAX_CONFIG_BODY: usize = 1024 * 1024;

/// Client errors that actix-web answers itself (a body over its limit, a
/// body that is not UTF-8) in plain text get the API's JSON shape too.
fn json_client_error<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let message = match res.response().error() {
        Some(e) => e.to_string(),
        None => status
            .canonical_reason()
            .unwrap_or("bad request")
            .to_string(),
    };
    let (request, _) = res.into_parts();
    let json = HttpResponse::build(status).json(serde_json::json!({ "error": message }));
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(request, json).map_into_right_body(),
    ))
}

fn bad_request(err: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::BadRequest().json(serde_json::json!({ "error": err.to_string() }))
}

/// Bad query strings get the same JSON error shape as every other failure.
fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _| {
        let response = bad_request(&err);
        actix_web::error::InternalError::from_response(err, response).into()
    })
}

fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|err, _| {
        let response = bad_request(&err);
        actix_web::error::InternalError::from_response(err, response).into()
    })
}

fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(MAX_BODY)
        .error_handler(|err, _| {
            let response = match &err {
                actix_web::error::JsonPayloadError::OverflowKnownLength { .. }
                | actix_web::error::JsonPayloadError::Overflow { .. } => {
                    HttpResponse::PayloadTooLarge().json(serde_json::json!({
                        "error": format!("request body over {MAX_BODY} bytes")
                    }))
                }
                _ => bad_request(&err),
            };
            actix_web::error::InternalError::from_response(err, response).into()
        })
}
