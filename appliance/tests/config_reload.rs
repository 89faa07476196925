//! Changing the configuration of a running appliance: through the API (the
//! pipeline restarts in the process with the new cameras), refused when
//! invalid, rolled back when it does not start, and re-read on SIGHUP.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{assets, free_port, import_model, Guard, VIGIL};
use serde_json::Value;

struct Api {
    base: String,
    token: String,
    /// The appliance's log, shown when a wait fails.
    log: std::path::PathBuf,
}

impl Api {
    fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.token));
        let reply = match body {
            Some(b) => agent.run(
                req.header("Content-Type", "application/toml")
                    .body(b.to_string())
                    .unwrap(),
            ),
            None => agent.run(req.body(()).unwrap()),
        };
        match reply {
            Ok(mut r) => (
                r.status().as_u16(),
                r.body_mut().read_to_string().unwrap_or_default(),
            ),
            // Connection refused while the server restarts.
            Err(_) => (0, String::new()),
        }
    }

    fn camera_ids(&self) -> Option<Vec<String>> {
        let (status, body) = self.call("GET", "/api/v1/cameras", None);
        if status != 200 {
            return None;
        }
        let list: Value = serde_json::from_str(&body).ok()?;
        Some(
            list.as_array()?
                .iter()
                .filter_map(|c| c["id"].as_str().map(String::from))
                .collect(),
        )
    }

    /// Waits until the running cameras are exactly `ids`.
    fn wait_for_cameras(&self, ids: &[&str], what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self
                .camera_ids()
                .is_some_and(|got| got.iter().map(String::as_str).eq(ids.iter().copied()))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: cameras never became {ids:?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

fn camera(id: &str, clip: &Path) -> String {
    format!(
        "\n[[cameras]]\nid = \"{id}\"\nurl = \"file://{}?loop=1\"\ndetect_fps = 2\n",
        clip.display()
    )
}

#[test]
fn config_changes_apply_in_process_are_validated_rolled_back_and_reloaded_on_sighup() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    import_model(&models);
    let port = free_port();
    let file = tmp.path().join("vigil.toml");
    let clip = assets().join("video/vtest.avi");
    let base_text = format!(
        "# written by hand\n[server]\nlisten = \"127.0.0.1:{port}\"\n\n[storage]\npath = {:?}\n",
        tmp.path().join("data")
    );
    std::fs::write(&file, format!("{base_text}{}", camera("street", &clip))).unwrap();
    let out = Command::new(VIGIL)
        .args([
            "token",
            "create",
            "provisioning",
            "--scope",
            "admin",
            "--config",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let api = Api {
        base: format!("http://127.0.0.1:{port}"),
        token: String::from_utf8(out.stdout).unwrap().trim().to_string(),
        log: tmp.path().join("vigil.log"),
    };
    let child = Command::new(VIGIL)
        .args(["run", "--config"])
        .arg(&file)
        .env("VIGIL_MODEL_DIR", &models)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&api.log).unwrap())
        .spawn()
        .unwrap();
    let mut guard = Guard(Some(child));
    api.wait_for_cameras(&["street"], "start");

    // Add a camera through the API: validated, saved, running within seconds.
    let (status, shown) = api.call("GET", "/api/v1/config", None);
    assert_eq!(status, 200);
    assert!(shown.contains("# written by hand"), "{shown}");
    let two = format!("{shown}{}", camera("again", &clip));
    let (status, body) = api.call("PUT", "/api/v1/config", Some(&two));
    assert_eq!(status, 202, "{body}");
    api.wait_for_cameras(&["street", "again"], "after PUT");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), two);

    // An invalid one is refused with its line; nothing changes.
    let (status, body) = api.call("PUT", "/api/v1/config", Some("[storage]\npath = 5\n"));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("vigil.toml:2"), "{body}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), two);

    // A valid one that cannot start (no such model) is rolled back.
    let broken = format!("{two}\n[detector]\nmodel = \"no-such-model\"\n");
    let (status, _) = api.call("PUT", "/api/v1/config", Some(&broken));
    assert_eq!(status, 202);
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&file).unwrap() != two {
        assert!(Instant::now() < deadline, "the file was not restored");
        std::thread::sleep(Duration::from_millis(200));
    }
    api.wait_for_cameras(&["street", "again"], "after the rollback");

    // Edited by hand, applied on SIGHUP.
    std::fs::write(&file, format!("{base_text}{}", camera("again", &clip))).unwrap();
    let child = guard.0.as_ref().unwrap();
    common::signal(child, "HUP");
    api.wait_for_cameras(&["again"], "after SIGHUP");

    let mut child = guard.0.take().unwrap();
    common::signal(&child, "TERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit within 30 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(exit.success(), "{exit:?}");
}
