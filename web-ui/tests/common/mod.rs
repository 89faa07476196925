//! A real server on loopback over a real database, with the credentials a
//! test needs: an admin token, a read-only token, and a person's password.
#![allow(dead_code)] // each test file uses its own part

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use vigil_storage::{prepare, AuthStore, HotStore, Reader, Scope, WriterStats};
use vigil_web_ui::{
    AppState, CameraStatus, InferenceStats, LiveFrames, ServerConfig, ServerHandle, TlsFiles,
};

pub const PASSWORD: &str = "correct horse battery";

/// The appliance's role: it knows which cameras exist.
pub struct OneCamera;

impl vigil_web_ui::Pipeline for OneCamera {
    fn cameras(&self) -> Vec<CameraStatus> {
        vec![CameraStatus {
            id: "gate".into(),
            source: "rtsp://***@cam/1".into(),
            detect_fps: 5.0,
            ingest: serde_json::json!({ "state": "streaming", "frames_decoded": 7 }),
            zones: serde_json::json!({ "zones": [], "lines": [] }),
        }]
    }

    fn inference(&self) -> InferenceStats {
        InferenceStats {
            model: "test-model".into(),
            frames: 42,
            ..Default::default()
        }
    }

    fn config_toml(&self) -> String {
        "[storage]\npath = \"db\"\n".into()
    }

    fn apply_config(&self, toml: &str) -> Result<(), vigil_web_ui::ConfigRejected> {
        // The appliance validates; here any text without a storage section is "invalid".
        if toml.contains("[storage]") {
            Ok(())
        } else {
            Err(vigil_web_ui::ConfigRejected::Invalid(
                "t.toml:1: missing field `storage`".into(),
            ))
        }
    }
}

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
    pub server: Option<ServerHandle>,
    pub auth: Arc<AuthStore>,
    pub hot: Arc<HotStore>,
    pub live: Arc<LiveFrames>,
    pub admin_token: String,
    pub read_token: String,
    pub origin: String,
}

impl TestServer {
    pub fn start() -> Self {
        Self::start_with(Arc::new(WriterStats::default()), None)
    }

    /// `writer` stands for the storage writer's health; `tls` serves HTTPS.
    pub fn start_with(writer: Arc<WriterStats>, tls: Option<TlsFiles>) -> Self {
        Self::try_start_with(writer, tls).unwrap()
    }

    pub fn try_start_with(
        writer: Arc<WriterStats>,
        tls: Option<TlsFiles>,
    ) -> Result<Self, vigil_web_ui::WebError> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let secure_cookies = tls.is_some();
        let dir = tempfile::tempdir().unwrap();
        let db = prepare(dir.path()).unwrap();
        let auth = Arc::new(AuthStore::open(&db).unwrap());
        auth.set_user("ana", PASSWORD, Some(Scope::Admin)).unwrap();
        auth.set_user("viewer", PASSWORD, Some(Scope::Read))
            .unwrap();
        let (_, admin_token) = auth.create_token("central-admin", Scope::Admin).unwrap();
        let (_, read_token) = auth.create_token("central", Scope::Read).unwrap();
        let hot = Arc::new(HotStore::open(dir.path(), 1 << 20).unwrap());
        let live = Arc::new(LiveFrames::default());
        let server = vigil_web_ui::start(
            &ServerConfig {
                listen: "127.0.0.1:0".into(),
                workers: 2,
                tls,
            },
            AppState {
                pipeline: Arc::new(OneCamera),
                live: live.clone(),
                reader: Arc::new(Reader::new(&db)),
                storage_health: writer,
                hot: hot.clone(),
                auth: auth.clone(),
                limiter: Default::default(),
                secure_cookies,
                started: std::time::Instant::now(),
                batch_latency: Default::default(),
            },
        )?;
        let origin = format!("{scheme}://{}", server.local_addr);
        Ok(Self {
            dir,
            db,
            server: Some(server),
            auth,
            hot,
            live,
            admin_token,
            read_token,
            origin,
        })
    }

    pub fn api(&self) -> String {
        format!("{}/api/v1", self.origin)
    }

    pub fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An HTTP client that reports 4xx/5xx as statuses, not errors.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

pub struct Reply {
    pub status: u16,
    pub headers: ureq::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn reply(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
    let mut r = r.expect("the server answers");
    Reply {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .unwrap(),
    }
}

/// `method url` with optional headers and JSON body.
pub fn call(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&str>) -> Reply {
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let agent = agent();
    match body {
        Some(b) => reply(
            agent.run(
                req.header("Content-Type", "application/json")
                    .body(b.to_string())
                    .unwrap(),
            ),
        ),
        None => reply(agent.run(req.body(()).unwrap())),
    }
}

pub fn get_as(url: &str, token: &str) -> Reply {
    call(
        "GET",
        url,
        &[("Authorization", &format!("Bearer {token}"))],
        None,
    )
}
