//! What the appliance's end-to-end tests share: the binary, the shared
//! assets, the default model, a free port, a process that dies with the test.
#![allow(dead_code)] // each test file uses its own part

pub mod poller;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

pub const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

pub fn assets() -> PathBuf {
    std::env::var_os("VIGIL_TEST_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/assets"))
}

/// Imports the default model from the TF.js files into `dir` with the CLI.
pub fn import_model(dir: &Path) {
    let out = Command::new(VIGIL)
        .args(["import-tfjs", "--out"])
        .arg(dir.join("ssdlite_mobilenet_v2_coco.safetensors"))
        .arg(assets().join("models/ssdlite_mobilenet_v2_coco_tfjs/model.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the child if the test fails before the orderly stop.
pub struct Guard(pub Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends a signal by name (TERM, HUP) to a child.
pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Stops a child with SIGTERM and waits for a clean exit.
pub fn stop(mut guard: Guard) {
    let mut child = guard.0.take().unwrap();
    signal(&child, "TERM");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exit within 30 s of SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A `[[cameras]]` block whose source blocks in `open(2)` for good: a FIFO
/// in `dir` that no one writes (as a hung V4L2 device or a dead network
/// mount does), where no interrupt reaches.
pub fn stuck_camera(dir: &Path) -> String {
    let fifo = dir.join("never-written.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    format!(
        "[[cameras]]\nid = \"stuck\"\nurl = \"file://{}?loop=0\"\n",
        fifo.display()
    )
}

/// Waits up to 90 s for `ok`.
pub fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while !ok() {
        assert!(std::time::Instant::now() < deadline, "{what} within 90 s");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

/// A box watching the street clip: its configuration, data, address, a
/// read token made with the CLI, and its log file.
pub struct StreetBox {
    pub config: PathBuf,
    pub data: PathBuf,
    pub url: String,
    pub token: String,
    pub log: PathBuf,
}

impl StreetBox {
    /// `extra` is more configuration (e.g. an `[mqtt]` section).
    pub fn new(dir: &Path, name: &str, extra: &str) -> Self {
        let port = free_port();
        let data = dir.join(name);
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\n[storage]\npath = {data:?}\n{extra}\n\
                 [[cameras]]\nid = \"street\"\nurl = \"file://{}?loop=1\"\ndetect_fps = 3\n",
                assets().join("video/vtest.avi").display()
            ),
        )
        .unwrap();
        let out = Command::new(VIGIL)
            .args(["token", "create", "hq", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(out.status.success());
        Self {
            config,
            data,
            url: format!("http://127.0.0.1:{port}"),
            token: String::from_utf8(out.stdout).unwrap().trim().to_string(),
            log: dir.join(format!("{name}.log")),
        }
    }

    pub fn start(&self, models: &Path) -> Guard {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        Guard(Some(
            Command::new(VIGIL)
                .args(["run", "--config"])
                .arg(&self.config)
                .env("VIGIL_MODEL_DIR", models)
                .stdout(std::process::Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        ))
    }

    /// Whether the box answers `/healthz`.
    pub fn answers(&self) -> bool {
        ureq::get(&format!("{}/healthz", self.url)).call().is_ok()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `(id, revision)` of every event in its database.
    pub fn stored_events(&self) -> std::collections::BTreeMap<i64, i64> {
        let db = rusqlite::Connection::open(self.data.join("vigil.sqlite3")).unwrap();
        let mut stmt = db.prepare("SELECT id, revision FROM events").unwrap();
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows
    }
}
