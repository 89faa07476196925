//! `vigil model import` installs the models users bring so that a config
//! (or `vigil detect --model`) can name them.

use std::path::{Path, PathBuf};
use std::process::Command;

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

fn assets() -> PathBuf {
    std::env::var_os("VIGIL_TEST_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/assets"))
}

fn vigil(args: &[&str], model_dir: &Path) -> (bool, String, String) {
    let out = Command::new(VIGIL)
        .args(args)
        .env("VIGIL_MODEL_DIR", model_dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run vigil");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn darknet_and_ultralytics_models_are_installed_and_used_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().to_str().unwrap();
    let darknet = assets().join("models/yolov3_tiny_darknet");
    let (ok, _, err) = vigil(
        &[
            "model",
            "import",
            darknet.join("yolov3-tiny.cfg").to_str().unwrap(),
            "--names",
            darknet.join("coco.names").to_str().unwrap(),
            "--dir",
            models,
        ],
        dir.path(),
    );
    assert!(ok, "{err}");
    let checkpoint = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../inference/tests/data/ultralytics/tiny-yolov8.pt");
    let (ok, out, err) = vigil(
        &[
            "model",
            "import",
            checkpoint.to_str().unwrap(),
            "--name",
            "tiny",
            "--dir",
            models,
        ],
        dir.path(),
    );
    assert!(ok, "{err}");
    assert!(out.contains("2 classes"), "{out}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("tiny.names")).unwrap(),
        "walker\nrider\n"
    );

    let (ok, out, _) = vigil(&["model", "list"], dir.path());
    assert!(
        ok && out.contains("yolov3-tiny") && out.contains("tiny "),
        "{out}"
    );

    let dog = assets().join("images/dog.jpg");
    let labels = detect_labels(&dog, &[], dir.path());
    for want in ["dog", "car", "truck"] {
        assert!(labels.contains(&want.to_string()), "{labels:?}");
    }
    // The same in int8: the same objects (their order, by score, may
    // differ where two scores are close).
    let mut int8_labels = detect_labels(&dog, &["--precision", "int8"], dir.path());
    let mut labels = labels;
    int8_labels.sort();
    labels.sort();
    assert_eq!(int8_labels, labels);
}

/// Labels `vigil detect` finds in `image` with yolov3-tiny.
fn detect_labels(image: &Path, extra: &[&str], model_dir: &Path) -> Vec<String> {
    let mut args = vec![
        "detect",
        "--json",
        "--model",
        "yolov3-tiny",
        "--min-score",
        "0.5",
    ];
    args.extend_from_slice(extra);
    args.push(image.to_str().unwrap());
    let (ok, out, err) = vigil(&args, model_dir);
    assert!(ok, "{err}");
    let results: serde_json::Value = serde_json::from_str(&out).unwrap();
    results[0]["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["label"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn unknown_formats_and_bad_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().to_str().unwrap();
    let readme = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let (ok, _, err) = vigil(
        &["model", "import", readme.to_str().unwrap(), "--dir", models],
        dir.path(),
    );
    assert!(!ok && err.contains("not a model format"), "{err}");
    let cfg = assets().join("models/yolov3_tiny_darknet/yolov3-tiny.cfg");
    let (ok, _, err) = vigil(
        &[
            "model",
            "import",
            cfg.to_str().unwrap(),
            "--name",
            "../escape",
            "--dir",
            models,
        ],
        dir.path(),
    );
    assert!(!ok && err.contains("not a plain file name"), "{err}");
}

#[test]
fn a_model_that_does_not_load_replaces_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().to_str().unwrap();
    let checkpoint = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../inference/tests/data/ultralytics/tiny-yolov8.pt");
    let import = |source: &Path, extra: &[&str]| {
        let mut args = vec!["model", "import", source.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.extend(["--name", "tiny", "--dir", models]);
        vigil(&args, dir.path())
    };
    let (ok, _, err) = import(&checkpoint, &[]);
    assert!(ok, "{err}");
    let installed = |kind: &str| std::fs::read(dir.path().join(format!("tiny.{kind}"))).ok();
    let before = (installed("safetensors"), installed("names"));

    // A checkpoint cut in half, then a darknet model whose names file
    // does not match its 80 classes: both refused, the working model kept.
    let scratch = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(&checkpoint).unwrap();
    let broken = scratch.path().join("broken.pt");
    std::fs::write(&broken, &bytes[..bytes.len() / 2]).unwrap();
    let (ok, _, err) = import(&broken, &[]);
    assert!(!ok, "a broken checkpoint is refused");
    eprintln!("{err}");
    let names = scratch.path().join("two.names");
    std::fs::write(&names, "walker\nrider\n").unwrap();
    let cfg = assets().join("models/yolov3_tiny_darknet/yolov3-tiny.cfg");
    let (ok, _, err) = import(&cfg, &["--names", names.to_str().unwrap()]);
    assert!(
        !ok && err.contains("2 names for a model of 80 classes"),
        "{err}"
    );

    assert_eq!((installed("safetensors"), installed("names")), before);
    assert_eq!(installed("cfg"), None);
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left.len(), 2, "no staging left behind: {left:?}");

    // A darknet model then replaces it whole: no labels of the old one stay.
    let (ok, _, err) = import(&cfg, &[]);
    assert!(ok, "{err}");
    assert_eq!(installed("safetensors"), None);
    assert_eq!(installed("names"), None, "the old model's labels are gone");
    assert!(installed("cfg").is_some() && installed("weights").is_some());
}
