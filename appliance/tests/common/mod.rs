//! What the appliance's end-to-end tests share: the binary, the shared
//! assets, the default model, a free port, a process that dies with the test.
#![allow(dead_code)] // each test file uses its own part

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
