//! `vigil bench` end to end: real clips through the whole pipeline with the
//! real model, and the report's figures consistent with each other.

mod common;

use std::process::Command;

use common::{import_model, VIGIL};
use serde_json::Value;

/// Each run loads every core of the machine: side by side, the two tests'
/// runs would each measure the other (a fast run once read 18 frames/s of
/// input instead of over 20 while the paced search ran beside it).
static ONE_RUN_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn bench(dir: &std::path::Path, args: &[&str]) -> (Value, String) {
    // A run that failed an assertion while holding the lock poisons it;
    // the next run does not depend on that one.
    let _alone = ONE_RUN_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let json = dir.join(format!("report-{}.json", args.len()));
    let out = Command::new(VIGIL)
        .arg("bench")
        .args(["--clip", "street", "--warmup", "2", "--duration", "4"])
        .args(args)
        .arg("--data")
        .arg(dir.join("data"))
        .arg("--json")
        .arg(&json)
        .env("VIGIL_MODEL_DIR", dir.join("models"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    (report, text)
}

#[test]
fn a_paced_search_reports_held_cameras_latency_anchors_and_a_chart() {
    let dir = tempfile::tempdir().unwrap();
    import_model(&dir.path().join("models"));
    let plot = dir.path().join("cameras.svg");
    let (report, text) = bench(
        dir.path(),
        &[
            "--max-cameras",
            "--limit",
            "1",
            "--plot",
            plot.to_str().unwrap(),
        ],
    );
    let trials = report["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 1, "limit 1 tries one camera only");
    let t = &trials[0];
    assert_eq!(t["cameras"], 1);
    // The street clip is 10 fps: one camera sends the model 5 frames/s.
    assert_eq!(t["expected_fps"], 5.0);
    let analysed = t["analysed_fps"].as_f64().unwrap();
    assert!(analysed > 0.0 && analysed <= 5.5, "{analysed}");
    // The answer follows from the trial: 1 if it held, else 0.
    let held = t["held"].as_bool().unwrap();
    assert_eq!(report["max_cameras"], u64::from(held));
    assert_eq!(held, t["frames_dropped"] == 0 && analysed >= 0.95 * 5.0);

    // Latency from decode to commit: measured on stored frames, ordered,
    // and at least the time the model took.
    let lat = &t["latency"];
    assert!(lat["frames"].as_u64().unwrap() > 0, "{lat}");
    let (p50, p95, p99) = (
        lat["p50_ms"].as_f64().unwrap(),
        lat["p95_ms"].as_f64().unwrap(),
        lat["p99_ms"].as_f64().unwrap(),
    );
    assert!(p50 <= p95 && p95 <= p99, "{lat}");
    assert!(p50 >= t["ms_per_batch"].as_f64().unwrap() * 0.5, "{t}");
    assert!(t["rows_stored"].as_u64().unwrap() > 0);
    let cpu = t["cpu_percent"].as_f64().unwrap();
    assert!(cpu > 0.0 && cpu <= 100.5, "{cpu}");
    assert!(t["peak_rss_mib"].as_f64().unwrap() > 20.0);

    // Anchors from the same run: the model alone, and decoding the whole
    // street clip (795 frames) alone.
    assert!(report["model_alone"]["frames_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(report["decode_alone"]["frames"], 795);
    assert!(report["machine"]["cores"].as_u64().unwrap() >= 1);

    assert!(text.contains("most cameras held in real time"), "{text}");
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(
        svg.matches("<circle cx").count(),
        1 + 2,
        "one trial + legend"
    );
}

#[test]
fn a_fast_run_reports_throughput_and_no_real_time_verdict() {
    let dir = tempfile::tempdir().unwrap();
    import_model(&dir.path().join("models"));
    let (report, _) = bench(dir.path(), &["--fast", "--no-anchors", "--cameras", "2"]);
    let t = &report["trials"][0];
    assert_eq!(t["cameras"], 2);
    assert!(t["held"].is_null() && t["expected_fps"].is_null(), "{t}");
    // Unpaced, the two cameras decode far faster than real time (2 x 10 fps)
    // and the model, the slowest stage, is kept busy.
    assert!(t["input_fps"].as_f64().unwrap() > 20.0, "{t}");
    assert!(t["analysed_fps"].as_f64().unwrap() > 0.0, "{t}");
    assert!(report["model_alone"].is_null());
}
