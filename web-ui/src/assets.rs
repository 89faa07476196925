//! The browser UI, compiled into the binary.

use actix_web::{http::header, web, HttpResponse};
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "assets/"]
struct Assets;

/// Only our own scripts, styles and pictures: an injected script or a
/// framing page gets nowhere.
const CSP: &str = "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; \
    script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
    form-action 'self'";

pub(crate) async fn index() -> HttpResponse {
    serve("index.html")
}

pub(crate) async fn file(path: web::Path<String>) -> HttpResponse {
    serve(&path)
}

fn serve(path: &str) -> HttpResponse {
    match Assets::get(path) {
        Some(content) => {
            let mime = match path.rsplit('.').next() {
                Some("html") => "text/html; charset=utf-8",
                Some("js") => "text/javascript; charset=utf-8",
                Some("css") => "text/css; charset=utf-8",
                Some("svg") => "image/svg+xml",
                _ => "application/octet-stream",
            };
            HttpResponse::Ok()
                .insert_header((header::CONTENT_TYPE, mime))
                .insert_header((header::CACHE_CONTROL, "no-cache"))
                .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
                .body(content.data.into_owned())
        }
        None => HttpResponse::NotFound().json(serde_json::json!({ "error": "not found" })),
    }
}
