//! The whole appliance as a user runs it: `vigil run` on the real street
//! clip with the real model, a person and a central server given access
//! with the CLI, queried over HTTP and in a real browser, stopped with
//! SIGTERM.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

use common::{assets, free_port, import_model, Guard, VIGIL};

/// The central server's read-only API token, made with `vigil token create`.
static TOKEN: OnceLock<String> = OnceLock::new();

fn authorised(url: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
    ureq::get(url).header("Authorization", format!("Bearer {}", TOKEN.get().unwrap()))
}

fn get_json(url: &str) -> Option<Value> {
    let mut res = authorised(url).call().ok()?;
    serde_json::from_str(&res.body_mut().read_to_string().ok()?).ok()
}

const PASSWORD: &str = "a long test password";

/// Runs a `vigil` subcommand to completion; its stdout.
fn vigil(args: &[&str], config: &Path, stdin: &str) -> String {
    let mut child = Command::new(VIGIL)
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "vigil {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// What a person sees in the UI, page by page, as reported by headless
/// Chromium driven by Playwright (`tests/support/browser`; `make test`
/// installs it). Screenshots go to `VIGIL_SCREENSHOTS` when set.
fn browser_tour(url: &str, user: &str) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/browser/tour.js");
    let mut cmd = Command::new("node");
    cmd.arg(&script).args([url, user, PASSWORD]);
    if let Some(dir) = std::env::var_os("VIGIL_SCREENSHOTS") {
        cmd.arg(dir);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("node must be installed (make test installs it): {e}"));
    assert!(
        out.status.success(),
        "browser check failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON report")
}

#[test]
fn street_clip_yields_person_detections_over_http_and_survives_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    import_model(&models);
    let port = free_port();
    let data = tmp.path().join("data");
    let config = tmp.path().join("vigil.toml");
    let clip = assets().join("video/vtest.avi");
    let mut f = std::fs::File::create(&config).unwrap();
    write!(
        f,
        "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[storage]\npath = {data:?}\n\n\
         [[cameras]]\nid = \"street\"\nurl = {url:?}\ndetect_fps = 4\n\
         lines = [{{ name = \"walkway\", from = [0.4, 0.25], to = [0.4, 0.75] }}]\n\
         zones = [{{ name = \"plaza\", polygon = [[0, 0.3], [1, 0.3], [1, 1], [0, 1]] }}]\n",
        url = format!("file://{}?loop=1", clip.display()),
    )
    .unwrap();
    drop(f);

    // Access is given before the first start, so no admin password is made.
    vigil(
        &["user", "add", "ana", "--password-stdin"],
        &config,
        &format!("{PASSWORD}\n"),
    );
    let token = vigil(&["token", "create", "central"], &config, "");
    TOKEN.set(token.trim().to_string()).unwrap();

    let child = Command::new(VIGIL)
        .args(["run", "--config"])
        .arg(&config)
        .env("VIGIL_MODEL_DIR", &models)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = Guard(Some(child));
    let base = format!("http://127.0.0.1:{port}/api/v1");

    // Wait for people to be stored.
    let deadline = Instant::now() + Duration::from_secs(90);
    let people = loop {
        if let Some(page) = get_json(&format!("{base}/detections?camera=street&limit=1000")) {
            let people: Vec<Value> = page["detections"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["label"] == "person")
                .cloned()
                .collect();
            if people.len() >= 10 {
                break people;
            }
        }
        let status = guard.0.as_mut().unwrap().try_wait().unwrap();
        assert!(status.is_none(), "vigil exited early: {status:?}");
        assert!(
            Instant::now() < deadline,
            "no person detections within 90 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    };

    // Plausible boxes: inside the 768x576 frame, person-shaped (taller than
    // wide), not tiny, not the whole frame; scores above the default 0.5.
    for d in &people {
        let b: Vec<f64> = d["box"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let (w, h) = (b[2] - b[0], b[3] - b[1]);
        assert!(
            b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= 768.0 && b[3] <= 576.0,
            "{d}"
        );
        assert!(w > 8.0 && h > 20.0 && w < 400.0 && h < 500.0, "{d}");
        assert!(h > w, "a walking person is taller than wide: {d}");
        let score = d["score"].as_f64().unwrap();
        assert!((0.5..=1.0).contains(&score), "{d}");
        assert!(d["frame_time"].as_str().unwrap().ends_with('Z'), "{d}");
    }

    // The camera list reports the source streaming.
    let cams = get_json(&format!("{base}/cameras")).unwrap();
    assert_eq!(cams[0]["id"], "street");
    assert_eq!(cams[0]["ingest"]["state"], "streaming");

    // Paging with the cursor returns each row once, in order.
    let first = get_json(&format!("{base}/detections?after=0&limit=5")).unwrap();
    let next = first["next_after"].as_i64().unwrap();
    let second = get_json(&format!("{base}/detections?after={next}&limit=5")).unwrap();
    let ids: Vec<i64> = first["detections"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["detections"].as_array().unwrap())
        .map(|d| d["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 10);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    // Nothing answers a stranger but the liveness check.
    let stranger = ureq::get(&format!("{base}/detections")).call();
    assert!(
        matches!(stranger, Err(ureq::Error::StatusCode(401))),
        "{stranger:?}"
    );
    let mut alive = ureq::get(&format!("http://127.0.0.1:{port}/healthz"))
        .call()
        .unwrap();
    assert_eq!(
        alive.body_mut().read_to_string().unwrap(),
        r#"{"status":"ok"}"#
    );
    let mut metrics = authorised(&format!("http://127.0.0.1:{port}/metrics"))
        .call()
        .unwrap();
    let metrics = metrics.body_mut().read_to_string().unwrap();
    assert!(
        metrics.contains("vigil_camera_frames_decoded_total{camera=\"street\"}"),
        "{metrics}"
    );

    // A hostile query gets a clear 400, not a crash.
    let bad = authorised(&format!("{base}/detections?limit=99999")).call();
    assert!(matches!(bad, Err(ureq::Error::StatusCode(400))), "{bad:?}");

    // The live view serves a real JPEG of an analysed frame.
    let snap = get_json(&format!("{base}/cameras/street/snapshot")).unwrap();
    assert_eq!(
        (snap["width"].as_u64(), snap["height"].as_u64()),
        (Some(768), Some(576))
    );
    let mut jpeg = authorised(&format!("{base}/cameras/street/snapshot.jpg"))
        .call()
        .unwrap();
    let bytes = jpeg.body_mut().read_to_vec().unwrap();
    assert_eq!(&bytes[..2], &[0xFF, 0xD8]);

    // A person logs in with a real browser and walks through the UI: the
    // live view with people boxed and tracked, events with snapshots kept
    // current by the live feed, an event's page, the camera with its
    // counting line, the system charts, and a token made in Settings.
    let tour = browser_tour(&format!("http://127.0.0.1:{port}/"), "ana");
    assert_eq!(tour["appHiddenBeforeLogin"], true, "{tour}");
    assert_eq!(tour["wrongPassword"], "wrong user name or password");
    assert_eq!(tour["whoami"], "ana (admin)");
    let live = &tour["live"];
    assert_eq!(live["cameras"][0], "street", "{tour}");
    assert!(
        live["frame"]
            .as_str()
            .unwrap()
            .contains("/api/v1/cameras/street/snapshot.jpg?seq="),
        "{tour}"
    );
    assert!(
        live["boxes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .any(|b| b.starts_with("person #")),
        "tracked people boxed: {tour}"
    );
    assert!(live["events"].as_u64().unwrap() >= 1, "{tour}");
    assert_eq!(live["feed"], "· live");
    let timeline = tour["timeline"].as_array().unwrap();
    assert!(
        !timeline.is_empty() && timeline.iter().all(|l| l == "person"),
        "{tour}"
    );
    assert!(tour["event"]["hash"]
        .as_str()
        .unwrap()
        .starts_with("#/event/"));
    assert!(
        tour["event"]["snapshotWidth"].as_u64().unwrap() > 0,
        "{tour}"
    );
    assert_eq!(
        tour["camera"]["streamWidth"], 768,
        "MJPEG frames shown: {tour}"
    );
    assert_eq!(tour["camera"]["lines"][0], "walkway", "{tour}");
    // Two more charts (GPU busy, GPU memory) and a row per GPU on a box
    // with an NVIDIA driver; a row saying there is none elsewhere.
    let facts = tour["system"]["facts"].as_str().unwrap();
    let charts = tour["system"]["charts"].as_array().unwrap().len();
    match vigil_web_ui::gpu::sample_now() {
        Ok(gpu) => {
            assert_eq!(charts, 7, "{tour}");
            assert!(facts.contains(&gpu.devices[0].name), "{facts}");
        }
        Err(_) => {
            assert_eq!(charts, 5, "{tour}");
            assert!(facts.contains("GPUnone found"), "{facts}");
        }
    }
    assert!(!tour["config"].as_str().unwrap().is_empty());
    assert_eq!(tour["loggedOut"], true);
    // The token the browser made works for a central server, until revoked
    // from the CLI while the service runs.
    let made = tour["token"].as_str().unwrap().to_string();
    let with_made = |url: &str| {
        ureq::get(url)
            .header("Authorization", format!("Bearer {made}"))
            .call()
            .map(|r| r.status().as_u16())
            .unwrap_or_else(|e| match e {
                ureq::Error::StatusCode(c) => c,
                other => panic!("{other}"),
            })
    };
    assert_eq!(with_made(&format!("{base}/cameras")), 200);
    let listed = vigil(&["token", "list"], &config, "");
    let made_id = listed
        .lines()
        .find(|l| l.contains("browser-made"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("token listed: {listed}"))
        .to_string();
    vigil(&["token", "revoke", &made_id], &config, "");
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(with_made(&format!("{base}/cameras")), 401, "revoked");

    // Analytics: people became tracked events with snapshots, zone visits
    // and counts; the live feed replays them.
    let deadline = Instant::now() + Duration::from_secs(60);
    let event = loop {
        let page = get_json(&format!("{base}/events?camera=street&zone=plaza")).unwrap();
        if let Some(e) = page["events"].as_array().unwrap().first() {
            break e.clone();
        }
        assert!(Instant::now() < deadline, "no event within 60 s");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(event["label"], "person", "{event}");
    assert_eq!(event["zones"][0], "plaza", "{event}");
    let snapshot = event["snapshot"].as_str().expect("event snapshot");
    let mut jpeg = authorised(&format!("http://127.0.0.1:{port}{snapshot}"))
        .call()
        .unwrap();
    assert_eq!(&jpeg.body_mut().read_to_vec().unwrap()[..2], &[0xFF, 0xD8]);
    let counts = get_json(&format!("{base}/counts?camera=street")).unwrap();
    let zones: Vec<&str> = counts["counts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["zone"].as_str())
        .collect();
    assert!(zones.contains(&"") && zones.contains(&"plaza"), "{counts}");
    // The live view labels tracked people with their track id (some frame
    // of the next few has one: people are in view most of the clip).
    let has_track = |snap: &Value| {
        snap["detections"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["track"].as_u64().is_some())
    };
    assert!(
        (0..40).any(|_| {
            std::thread::sleep(Duration::from_millis(250));
            has_track(&get_json(&format!("{base}/cameras/street/snapshot")).unwrap())
        }),
        "live detections carry track ids"
    );
    let feed = authorised(&format!("{base}/events/live?after=0"))
        .call()
        .unwrap();
    let mut first_lines = String::new();
    {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(feed.into_body().into_reader()).lines();
        while !first_lines.contains("data: ") {
            first_lines.push_str(&lines.next().unwrap().unwrap());
            first_lines.push('\n');
        }
    }
    assert!(first_lines.contains("event: event"), "{first_lines}");

    // SIGTERM: orderly shutdown, exit 0, and every row the API showed is on disk.
    let mut child = guard.0.take().unwrap();
    let shown_before_stop = get_json(&format!("{base}/detections?limit=1")).unwrap()["next_after"]
        .as_i64()
        .unwrap();
    common::signal(&child, "TERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("vigil did not stop within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(exit.success(), "exit {exit:?}\n{stderr}");
    assert!(stderr.contains("stopped cleanly"), "{stderr}");
    assert!(
        !stderr.contains("created the admin user"),
        "users existed: no password is made"
    );
    assert!(
        !stderr.contains(TOKEN.get().unwrap()),
        "tokens stay out of the log"
    );

    let db = rusqlite::Connection::open(data.join("vigil.sqlite3")).unwrap();
    let count: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM detections WHERE label = 'person'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(count >= 10);
    let total_max: i64 = db
        .query_row("SELECT MAX(id) FROM detections", [], |r| r.get(0))
        .unwrap();
    assert!(
        total_max >= shown_before_stop,
        "rows shown over HTTP are on disk"
    );
    // A clean stop closes every event.
    let (events, open): (i64, i64) = db
        .query_row(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE end_ms IS NULL) FROM events",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(events >= 1);
    assert_eq!(open, 0, "events left open after a clean stop");
}

#[test]
fn bad_config_exits_2_naming_field_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("bad.toml");
    std::fs::write(
        &config,
        "[storage]\npath = \"/tmp/x\"\n\n[[cameras]]\nid = \"gate\"\nurl = \"a.mp4\"\ndetect_fps = -1\n",
    )
    .unwrap();
    for args in [vec!["check-config"], vec!["run", "--config"]] {
        let out = Command::new(VIGIL)
            .args(&args)
            .arg(&config)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("bad.toml:7: cameras[0].detect_fps"), "{err}");
    }
    let ok = tmp.path().join("ok.toml");
    std::fs::write(&ok, "[storage]\npath = \"/tmp/x\"\n").unwrap();
    let out = Command::new(VIGIL)
        .arg("check-config")
        .arg(&ok)
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn shipped_default_config_is_valid() {
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../packaging/vigil.toml");
    let out = Command::new(VIGIL)
        .arg("check-config")
        .arg(&shipped)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn detect_prints_one_json_array_with_boxes_in_source_pixels() {
    let tmp = tempfile::tempdir().unwrap();
    import_model(tmp.path());
    let photo = assets().join("images/dog.jpg");
    let out = Command::new(VIGIL)
        .args(["detect", "--json", "--model"])
        .arg(tmp.path().join("ssdlite_mobilenet_v2_coco.safetensors"))
        .arg(&photo)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let img = &v.as_array().unwrap()[0];
    assert_eq!(img["image"], photo.display().to_string());
    assert_eq!(
        (img["width"].as_u64(), img["height"].as_u64()),
        (Some(768), Some(576))
    );
    let labels: Vec<&str> = img["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["label"].as_str().unwrap())
        .collect();
    for want in ["bicycle", "dog", "car"] {
        assert!(labels.contains(&want), "{labels:?}");
    }
    let dog = img["detections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["label"] == "dog")
        .unwrap();
    let b: Vec<f64> = dog["box"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    // The reference run puts the dog at [133, 220, 316, 542].
    assert!(
        (b[0] - 133.3).abs() < 15.0 && (b[3] - 541.8).abs() < 15.0,
        "{b:?}"
    );

    let missing = Command::new(VIGIL)
        .args(["detect", "/nonexistent.jpg", "--model"])
        .arg(tmp.path().join("ssdlite_mobilenet_v2_coco.safetensors"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent.jpg"));
}

/// `vigil openapi | head` ends as Unix tools do (SIGPIPE), not with a
/// panic message about a failed print.
#[test]
fn printing_commands_end_quietly_when_their_reader_goes_away() {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::process::ExitStatusExt;
    let (mut reader, writer) = std::io::pipe().unwrap();
    // A one-page pipe: the document (about 60 KiB) cannot fit in it, so
    // the command is still printing when the reader goes.
    // SAFETY: resizing a pipe this test owns.
    let resized = unsafe { libc::fcntl(writer.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
    assert!(resized > 0 && resized < 60_000, "{resized}");
    let child = Command::new(VIGIL)
        .arg("openapi")
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut start = [0u8; 16];
    reader.read_exact(&mut start).unwrap();
    drop(reader);
    let out = child.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&start).contains("openapi"));
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
