//! The actix-web server on its own thread and runtime.

use std::sync::Arc;
use std::thread::JoinHandle;

use actix_web::{middleware, web, App, HttpResponse, HttpServer};

use crate::sse::{self, Closing};
use crate::{api, assets, AppState, WebError};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `host:port`
    pub listen: String,
    pub workers: usize,
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
            .route("/health", web::get().to(api::health))
            .route("/cameras", web::get().to(api::cameras))
            .route("/cameras/{id}/snapshot", web::get().to(api::snapshot))
            .route(
                "/cameras/{id}/snapshot.jpg",
                web::get().to(api::snapshot_jpeg),
            )
            .route("/detections", web::get().to(api::detections))
            .route("/events", web::get().to(api::events))
            .route("/events/live", web::get().to(sse::live_events))
            .route("/counts", web::get().to(api::counts))
            .route("/snapshots/{key}.jpg", web::get().to(api::event_snapshot))
            .default_service(web::to(|| async {
                HttpResponse::NotFound().json(serde_json::json!({"error": "no such endpoint"}))
            })),
    )
    .route("/", web::get().to(assets::index))
    .route("/ui/{path:.*}", web::get().to(assets::file));
}

/// Binds `config.listen` and serves on a new thread with its own runtime.
pub fn start(config: &ServerConfig, state: AppState) -> Result<ServerHandle, WebError> {
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
                        .wrap(
                            middleware::DefaultHeaders::new()
                                .add(("X-Content-Type-Options", "nosniff")),
                        )
                        .configure(routes)
                })
                .workers(workers)
                .disable_signals() // the appliance owns signals and shutdown order
                .shutdown_timeout(5)
                .bind(&listen);
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

/// Bad query strings get the same JSON error shape as every other failure.
fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _| {
        let msg = err.to_string();
        actix_web::error::InternalError::from_response(
            err,
            HttpResponse::BadRequest().json(serde_json::json!({ "error": msg })),
        )
        .into()
    })
}
