//! Who gets in: every route the OpenAPI document lists is tried without
//! credentials, with a forged token, and with too little scope; logins are
//! rate limited; browser changes need the CSRF token; secrets stay out of
//! the logs; paths cannot escape; oversized and malformed bodies are 4xx.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{call, get_as, TestServer, PASSWORD};
use serde_json::Value;

/// Every (method, path) in the served OpenAPI document, with path
/// parameters filled in.
fn documented_routes(server: &TestServer) -> Vec<(String, String)> {
    let doc = get_as(
        &format!("{}/openapi.json", server.api()),
        &server.read_token,
    )
    .json();
    let mut routes = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            let concrete = path
                .replace("{id}", "1")
                .replace("{name}", "someone")
                .replace("{key}", "1");
            routes.push((method.to_uppercase(), concrete));
        }
    }
    assert!(routes.len() >= 25, "{routes:?}");
    routes
}

fn is_public(method: &str, path: &str) -> bool {
    (method == "GET" && path == "/healthz") || (method == "POST" && path == "/api/v1/login")
}

#[test]
fn every_documented_route_but_healthz_and_login_refuses_strangers() {
    let server = TestServer::start();
    let forged = format!("{}x", server.read_token);
    for (method, path) in documented_routes(&server) {
        let url = format!("{}{path}", server.origin);
        let body = (method != "GET").then_some("{}");
        let anonymous = call(&method, &url, &[], body);
        if is_public(&method, &path) {
            assert_ne!(anonymous.status, 401, "{method} {path}");
            continue;
        }
        assert_eq!(
            anonymous.status,
            401,
            "{method} {path}: {}",
            anonymous.text()
        );
        assert_eq!(
            anonymous.header("www-authenticate"),
            Some("Bearer realm=\"vigil\"")
        );
        assert!(anonymous.json()["error"].is_string(), "{method} {path}");
        let bad = call(
            &method,
            &url,
            &[("Authorization", &format!("Bearer {forged}"))],
            body,
        );
        assert_eq!(bad.status, 401, "{method} {path} with a forged token");
        let cookie = call(&method, &url, &[("Cookie", "vigil_session=guess")], body);
        assert_eq!(cookie.status, 401, "{method} {path} with a made-up session");
    }
    assert_eq!(
        call("GET", &format!("{}/healthz", server.origin), &[], None).status,
        200
    );
}

#[test]
fn read_scope_reads_but_changes_nothing() {
    let server = TestServer::start();
    let read = format!("Bearer {}", server.read_token);
    for (method, path) in documented_routes(&server) {
        if method == "GET" || is_public(&method, &path) || path == "/api/v1/logout" {
            continue;
        }
        let url = format!("{}{path}", server.origin);
        let r = call(&method, &url, &[("Authorization", &read)], Some("{}"));
        assert_eq!(r.status, 403, "{method} {path}: {}", r.text());
    }
    // Listing tokens or users is for admins too.
    for admin_only in ["tokens", "users"] {
        let r = get_as(
            &format!("{}/{admin_only}", server.api()),
            &server.read_token,
        );
        assert_eq!(r.status, 403, "{admin_only}");
    }
    let stats = get_as(&format!("{}/stats", server.api()), &server.read_token);
    assert_eq!(stats.status, 200);
    assert_eq!(stats.json()["inference"]["model"], "test-model");
    // GPU figures exactly when this machine has an NVIDIA driver.
    let gpu = &stats.json()["gpu"];
    match vigil_web_ui::gpu::sample_now() {
        Ok(here) => assert_eq!(gpu["devices"].as_array().unwrap().len(), here.devices.len()),
        Err(_) => assert!(gpu.is_null(), "{gpu}"),
    }
}

#[test]
fn tokens_work_until_revoked_and_admins_manage_users() {
    let server = TestServer::start();
    let admin = format!("Bearer {}", server.admin_token);
    let auth = [("Authorization", admin.as_str())];
    let created = call(
        "POST",
        &format!("{}/tokens", server.api()),
        &auth,
        Some(r#"{"name":"hq","scope":"read"}"#),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let token = created.json()["token"].as_str().unwrap().to_string();
    let id = created.json()["id"].as_str().unwrap().to_string();
    assert_eq!(
        get_as(&format!("{}/cameras", server.api()), &token).status,
        200
    );
    let listed = get_as(&format!("{}/tokens", server.api()), &server.admin_token).json();
    let hq = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .expect("listed");
    assert!(hq.get("token").is_none(), "secrets are never listed");
    assert!(hq["last_used"].is_string());
    let revoked = call(
        "DELETE",
        &format!("{}/tokens/{id}", server.api()),
        &auth,
        None,
    );
    assert_eq!(revoked.status, 204);
    assert_eq!(
        get_as(&format!("{}/cameras", server.api()), &token).status,
        401
    );
    assert_eq!(
        call(
            "DELETE",
            &format!("{}/tokens/{id}", server.api()),
            &auth,
            None
        )
        .status,
        404
    );
    for bad in [
        r#"{"name":"../x"}"#,
        r#"{"name":"a","scope":"root"}"#,
        "{",
        r#"{"name":1}"#,
    ] {
        let r = call(
            "POST",
            &format!("{}/tokens", server.api()),
            &auth,
            Some(bad),
        );
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }

    // Users: create, refuse a weak password, keep the last admin.
    let put = |name: &str, body: &str| {
        call(
            "PUT",
            &format!("{}/users/{name}", server.api()),
            &auth,
            Some(body),
        )
        .status
    };
    assert_eq!(
        put("bo", r#"{"password":"long enough pw","scope":"read"}"#),
        204
    );
    assert_eq!(put("bo", r#"{"password":"short"}"#), 400);
    let delete = |name: &str| {
        call(
            "DELETE",
            &format!("{}/users/{name}", server.api()),
            &auth,
            None,
        )
        .status
    };
    assert_eq!(delete("bo"), 204);
    assert_eq!(delete("bo"), 404);
    assert_eq!(delete("ana"), 409, "ana is the only admin");
    let demote = r#"{"password":"long enough pw","scope":"read"}"#;
    assert_eq!(put("ana", demote), 409, "nor can she be demoted");
    // A new password alone keeps her scope: she stays the admin.
    assert_eq!(put("ana", r#"{"password":"long enough pw"}"#), 204);
    assert_eq!(delete("ana"), 409, "still the only admin");
}

fn login(server: &TestServer, user: &str, password: &str) -> common::Reply {
    let body = serde_json::json!({ "user": user, "password": password }).to_string();
    call("POST", &format!("{}/login", server.api()), &[], Some(&body))
}

fn session_cookie(reply: &common::Reply) -> String {
    let set = reply.header("set-cookie").expect("a session cookie");
    assert!(set.contains("HttpOnly"), "{set}");
    assert!(set.contains("SameSite=Strict"), "{set}");
    set.split(';').next().unwrap().to_string()
}

#[test]
fn browser_sessions_need_the_csrf_token_to_change_anything() {
    let server = TestServer::start();
    let ok = login(&server, "ana", PASSWORD);
    assert_eq!(ok.status, 200, "{}", ok.text());
    let cookie = session_cookie(&ok);
    let csrf = ok.json()["csrf"].as_str().unwrap().to_string();
    assert_eq!(ok.json()["scope"], "admin");

    let me = call(
        "GET",
        &format!("{}/session", server.api()),
        &[("Cookie", &cookie)],
        None,
    );
    assert_eq!(me.json()["name"], "ana");
    let tokens = format!("{}/tokens", server.api());
    let body = Some(r#"{"name":"from-ui"}"#);
    let without = call("POST", &tokens, &[("Cookie", &cookie)], body);
    assert_eq!(without.status, 403, "no CSRF header");
    let wrong = call(
        "POST",
        &tokens,
        &[("Cookie", &cookie), ("X-CSRF-Token", "nope")],
        body,
    );
    assert_eq!(wrong.status, 403, "wrong CSRF header");
    let right = call(
        "POST",
        &tokens,
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        body,
    );
    assert_eq!(right.status, 201, "{}", right.text());

    // A viewer logs in but cannot change anything.
    let viewer = login(&server, "viewer", PASSWORD);
    let vcookie = session_cookie(&viewer);
    let vcsrf = viewer.json()["csrf"].as_str().unwrap().to_string();
    let denied = call(
        "POST",
        &tokens,
        &[("Cookie", &vcookie), ("X-CSRF-Token", &vcsrf)],
        body,
    );
    assert_eq!(denied.status, 403);

    let out = call(
        "POST",
        &format!("{}/logout", server.api()),
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        None,
    );
    assert_eq!(out.status, 204);
    let after = call(
        "GET",
        &format!("{}/session", server.api()),
        &[("Cookie", &cookie)],
        None,
    );
    assert_eq!(after.status, 401, "the session ended");
}

#[test]
fn failed_logins_are_rate_limited_with_retry_after() {
    let server = TestServer::start();
    for i in 0..5 {
        let r = login(&server, "ana", "wrong password");
        assert_eq!(r.status, 401, "attempt {i}");
        assert!(r.header("set-cookie").is_none());
    }
    let limited = login(&server, "ana", "wrong password");
    assert_eq!(limited.status, 429);
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Even the right password waits: guessing cannot go on in parallel.
    assert_eq!(login(&server, "ana", PASSWORD).status, 429);
    // Malformed attempts are plain 400s.
    let r = call(
        "POST",
        &format!("{}/login", server.api()),
        &[],
        Some("{\"user\":1}"),
    );
    assert_eq!(r.status, 400);
}

#[test]
fn oversized_and_malformed_requests_get_clear_4xx() {
    let server = TestServer::start();
    let admin = format!("Bearer {}", server.admin_token);
    let huge = format!(r#"{{"name":"{}"}}"#, "x".repeat(200 * 1024));
    let r = call(
        "POST",
        &format!("{}/tokens", server.api()),
        &[("Authorization", &admin)],
        Some(&huge),
    );
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.json()["error"].is_string());
    let r = call(
        "POST",
        &format!("{}/tokens", server.api()),
        &[("Authorization", &admin)],
        Some("not json"),
    );
    assert_eq!(r.status, 400);
    let r = get_as(
        &format!("{}/snapshots/abc.jpg", server.api()),
        &server.read_token,
    );
    assert_eq!(r.status, 400);
    // A configuration over its (larger) limit: actix-web's own refusal,
    // in the same JSON shape as ours.
    let r = call(
        "PUT",
        &format!("{}/config", server.api()),
        &[("Authorization", &admin)],
        Some(&"#".repeat(2 << 20)),
    );
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.json()["error"].is_string(), "{}", r.text());
}

#[test]
fn paths_cannot_escape_the_embedded_assets_or_snapshots() {
    let server = TestServer::start();
    for path in [
        "/ui/../Cargo.toml",
        "/ui/..%2f..%2fCargo.toml",
        "/ui/%2e%2e/%2e%2e/etc/passwd",
        "/ui//etc/passwd",
        "/api/v1/snapshots/..%2f..%2fetc%2fpasswd.jpg",
        "/api/v1/cameras/..%2f..%2fetc/latest.jpg",
    ] {
        let r = get_as(&format!("{}{path}", server.origin), &server.admin_token);
        assert!(
            (400..500).contains(&r.status),
            "{path}: {} {}",
            r.status,
            r.text()
        );
        assert!(!r.text().contains("root:"), "{path}");
        assert!(!r.text().contains("[package]"), "{path}");
    }
}

/// A writer the tracing subscriber logs into, shared with the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn tokens_and_passwords_never_reach_the_log() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    // Global: the server logs from its own threads. No other test in this
    // file sets one.
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let server = TestServer::start();
    let admin = format!("Bearer {}", server.admin_token);
    let created = call(
        "POST",
        &format!("{}/tokens", server.api()),
        &[("Authorization", &admin)],
        Some(r#"{"name":"logged"}"#),
    );
    let secret = created.json()["token"].as_str().unwrap().to_string();
    get_as(&format!("{}/cameras", server.api()), &secret);
    login(&server, "ana", "a wrong password");
    login(&server, "ana", PASSWORD);
    drop(server);
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("API token created"),
        "the log was captured: {log}"
    );
    assert!(log.contains("failed login"), "{log}");
    // The secret part of a token comes after its public id.
    let secret_part = secret.rsplit('_').next().unwrap();
    for leaked in [secret.as_str(), secret_part, PASSWORD, "a wrong password"] {
        assert!(!log.contains(leaked), "{leaked:?} leaked into the log");
    }
}

#[test]
fn metrics_and_readiness_answer_to_a_token() {
    let server = TestServer::start();
    let m = get_as(&format!("{}/metrics", server.origin), &server.read_token);
    assert_eq!(m.status, 200);
    let text = m.text();
    assert!(
        text.contains("vigil_camera_frames_decoded_total{camera=\"gate\"} 7"),
        "{text}"
    );
    assert!(text.contains("vigil_inference_frames_total 42"), "{text}");
    assert!(
        text.contains("vigil_inference_batch_seconds_bucket"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"));
    // Every series the shipped Grafana dashboard queries is served.
    let dashboard = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../packaging/grafana/vigil-fleet.json"),
    )
    .unwrap();
    let mut names: Vec<&str> = dashboard
        .match_indices("vigil_")
        .map(|(i, _)| {
            let rest = &dashboard[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .filter(|n| n.len() > "vigil_".len())
        .collect();
    names.sort_unstable();
    names.dedup();
    assert!(names.len() >= 15, "{names:?}");
    for name in names {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))),
            "the dashboard asks for {name}, which /metrics does not serve"
        );
    }
    let ready = get_as(&format!("{}/readyz", server.origin), &server.read_token);
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["status"], Value::from("ready"));
}
