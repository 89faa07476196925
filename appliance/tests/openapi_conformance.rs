//! The served OpenAPI document against the server behind it, with
//! schemathesis (installed by scripts/install-deps.sh): generated requests
//! for every operation, valid and not, must never get a 5xx, and every
//! response must have a documented status, content type and shape. Once
//! with an admin token (everything reachable) and once with a read token
//! (admin operations refused as documented).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{import_model, stop, wait_for, StreetBox, VIGIL};

/// Left out, each for its reason: the live event stream and the MJPEG
/// stream never end (tested in sse.rs and stream tests); the configuration
/// is TOML, which schemathesis cannot write (its parser is fuzzed in fuzz/);
/// revoking tokens would revoke the run's own (tested in security.rs).
const EXCLUDED_PATHS: [&str; 4] = [
    "/api/v1/events/live",
    "/api/v1/cameras/{id}/stream.mjpeg",
    "/api/v1/config",
    "/api/v1/tokens/{id}",
];

fn schemathesis() -> PathBuf {
    let path = std::env::var_os("VIGIL_SCHEMATHESIS").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/schemathesis/bin/schemathesis")
        },
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-deps.sh (or set VIGIL_SCHEMATHESIS)",
        path.display()
    );
    path
}

fn token(x: &StreetBox, scope: &str) -> String {
    let out = Command::new(VIGIL)
        .args([
            "token",
            "create",
            "conformance",
            "--scope",
            scope,
            "--config",
        ])
        .arg(&x.config)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Runs schemathesis against the box with `token`; panics with its report
/// unless every check passed.
fn run_schemathesis(x: &StreetBox, token: &str, examples: u32) {
    let mut cmd = Command::new(schemathesis());
    // Its cache and reports go beside the box's files, not into the repo.
    cmd.current_dir(x.config.parent().unwrap()).arg("run")
        .arg(format!("{}/api/v1/openapi.json", x.url))
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"])
        .args(["--max-examples", &examples.to_string()])
        // One worker: CPython 3.11's compile() is not safe across the
        // threads schemathesis would use.
        .args(["--workers", "1", "--seed", "1", "--no-color"])
        .args(["--request-timeout", "10"]);
    for path in EXCLUDED_PATHS {
        cmd.args(["--exclude-path", path]);
    }
    let out = cmd.output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}"
    );
    assert!(report.contains("passed"), "no test cases ran:\n{report}");
}

#[test]
fn every_operation_answers_as_its_openapi_document_says() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    import_model(&models);
    let x = StreetBox::new(tmp.path(), "box", "");
    let admin = token(&x, "admin");
    let running = x.start(&models);
    wait_for("the box to answer", || x.answers());

    run_schemathesis(&x, &admin, 50);
    run_schemathesis(&x, &x.token, 20);

    assert!(
        !x.log().contains("panicked"),
        "the server panicked:\n{}",
        x.log()
    );
    stop(running);
}
