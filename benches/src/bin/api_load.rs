//! The REST API under load while the pipeline runs: a database of a million
//! events, `vigil run` on the street clip, and `wrk` with 200 concurrent
//! connections asking for the newest events page. Reports latency
//! percentiles, errors, and the pipeline's frame rate before and during the
//! load, as a table and as JSON.
//!
//! ```text
//! cargo build --release -p vigil -p vigil-benches
//! target/release/api_load --vigil target/release/vigil [--events 1000000]
//! ```
//! Needs `wrk` (Debian package) and the default model (`make models`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_benches::history::synthetic_event;
use vigil_storage::{prepare, spawn_writer, WriteOp, WriterConfig};

/// wrk reports its own percentiles through this script; `WRK_DELAY_MS`
/// paces each connection (0: as fast as it can).
const WRK_SCRIPT: &str = r#"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("VIGIL_TOKEN")
local pause = tonumber(os.getenv("WRK_DELAY_MS") or "0")
if pause > 0 then
  function delay() return pause end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"p50_us":%d,"p95_us":%d,"p99_us":%d,"max_us":%d,"status_errors":%d,"socket_errors":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.max, e.status, e.connect + e.read + e.write + e.timeout))
end
"#;

struct Args {
    vigil: PathBuf,
    events: u64,
    connections: u32,
    seconds: u32,
}

fn args() -> Args {
    let mut a = Args {
        vigil: PathBuf::from("target/release/vigil"),
        events: 1_000_000,
        connections: 200,
        seconds: 30,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--vigil" => a.vigil = value.into(),
            "--events" => a.events = value.parse().expect("--events N"),
            "--connections" => a.connections = value.parse().expect("--connections N"),
            "--seconds" => a.seconds = value.parse().expect("--seconds N"),
            other => panic!("unknown option {other}"),
        }
    }
    a
}

/// Writes `n` events through the real writer (group commits), like a box
/// that has run for a month.
fn seed(dir: &Path, n: u64) {
    let db = prepare(dir).unwrap();
    let writer = spawn_writer(&db, WriterConfig::default()).unwrap();
    let started = Instant::now();
    for i in 0..n {
        writer
            .sender()
            .send(WriteOp::Event(synthetic_event(i, n)))
            .unwrap();
    }
    writer.finish();
    eprintln!(
        "seeded {n} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

struct Vigil(Child);

impl Drop for Vigil {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn stats(origin: &str, token: &str) -> Option<Value> {
    let mut r = ureq::get(&format!("{origin}/api/v1/stats"))
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .ok()?;
    serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()
}

/// Frames through the model per second, and frames dropped, over `f`.
fn pipeline_rate<T>(origin: &str, token: &str, f: impl FnOnce() -> T) -> (T, f64, u64) {
    let frames = |s: &Value| s["inference"]["frames"].as_u64().unwrap_or(0);
    let dropped = |s: &Value| {
        s["cameras"].as_array().map_or(0, |c| {
            c.iter()
                .map(|c| c["ingest"]["frames_dropped"].as_u64().unwrap_or(0))
                .sum()
        })
    };
    let before = stats(origin, token).expect("stats");
    let started = Instant::now();
    let out = f();
    let after = stats(origin, token).expect("stats");
    let fps = (frames(&after) - frames(&before)) as f64 / started.elapsed().as_secs_f64();
    (out, fps, dropped(&after) - dropped(&before))
}

fn wrk(
    url: &str,
    token: &str,
    connections: u32,
    seconds: u32,
    delay_ms: u32,
    script: &Path,
) -> Value {
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--timeout",
            "5s",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .env("VIGIL_TOKEN", token)
        .env("WRK_DELAY_MS", delay_ms.to_string())
        .output()
        .expect("wrk must be installed (apt install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let json = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("wrk said: {text}"));
    serde_json::from_str(json).unwrap()
}

fn main() {
    let a = args();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    seed(&data, a.events);

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = tmp.path().join("vigil.toml");
    let clip = vigil_benches::assets().join("video/vtest.avi");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[storage]\npath = {data:?}\n\
             [[cameras]]\nid = \"street\"\nurl = \"file://{}?loop=1\"\ndetect_fps = 5\n",
            clip.display()
        ),
    )
    .unwrap();
    let token = Command::new(&a.vigil)
        .args(["token", "create", "load", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let token = String::from_utf8(token.stdout).unwrap().trim().to_string();
    let _vigil = Vigil(
        Command::new(&a.vigil)
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let origin = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while stats(&origin, &token).is_none_or(|s| s["inference"]["frames"].as_u64().unwrap_or(0) < 10)
    {
        assert!(Instant::now() < deadline, "vigil did not start");
        std::thread::sleep(Duration::from_millis(500));
    }
    let ((), idle_fps, idle_dropped) = pipeline_rate(&origin, &token, || {
        std::thread::sleep(Duration::from_secs(10))
    });

    let script = tmp.path().join("report.lua");
    std::fs::write(&script, WRK_SCRIPT).unwrap();
    let url = format!("{origin}/api/v1/events?limit=50");
    let mut rows = Vec::new();
    // Paced: each connection asks every 100 ms (2000 requests/s offered by
    // 200 connections: 200 pollers, or people, at 10 requests a second);
    // then as fast as the box answers.
    for (name, delay) in [("paced 10/s per connection", 100), ("saturated", 0)] {
        let (r, fps, dropped) = pipeline_rate(&origin, &token, || {
            wrk(&url, &token, a.connections, a.seconds, delay, &script)
        });
        let secs = r["duration_us"].as_f64().unwrap() / 1e6;
        let row = serde_json::json!({
            "load": name,
            "connections": a.connections,
            "requests_per_s": (r["requests"].as_f64().unwrap() / secs).round(),
            "p50_ms": r["p50_us"].as_f64().unwrap() / 1e3,
            "p95_ms": r["p95_us"].as_f64().unwrap() / 1e3,
            "p99_ms": r["p99_us"].as_f64().unwrap() / 1e3,
            "errors": r["status_errors"].as_u64().unwrap() + r["socket_errors"].as_u64().unwrap(),
            "pipeline_fps": (fps * 100.0).round() / 100.0,
            "frames_dropped": dropped,
        });
        eprintln!("{row}");
        rows.push(row);
    }
    println!(
        "events stored: {}; pipeline without load: {idle_fps:.2} frames/s, {idle_dropped} dropped",
        a.events
    );
    println!(
        "| load | conns | req/s | p50 ms | p95 ms | p99 ms | errors | pipeline fps | dropped |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {} | {:.2} | {} |",
            r["load"].as_str().unwrap(),
            r["connections"],
            r["requests_per_s"],
            r["p50_ms"].as_f64().unwrap(),
            r["p95_ms"].as_f64().unwrap(),
            r["p99_ms"].as_f64().unwrap(),
            r["errors"],
            r["pipeline_fps"].as_f64().unwrap(),
            r["frames_dropped"]
        );
    }
    println!(
        "{}",
        serde_json::json!({ "events": a.events, "idle_pipeline_fps": idle_fps, "runs": rows })
    );
}
