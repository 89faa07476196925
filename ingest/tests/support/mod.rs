//! Helpers shared by the ingest tests.
#![allow(dead_code)] // each test file uses a different subset

use std::path::PathBuf;
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicBool, Ordering};

use vigil_ingest::{FrameReceiver, SourceHandle};

/// The shared test assets (clips, photos).
pub fn assets() -> PathBuf {
    std::env::var_os("VIGIL_TEST_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/assets"))
}

/// Runs the ffmpeg CLI (installed by `make test`) and checks it succeeded.
pub fn ffmpeg(args: &[&str]) {
    let status = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(args)
        .status()
        .expect("the ffmpeg CLI (make test installs it)");
    assert!(status.success(), "ffmpeg {args:?}");
}

/// Polls `done` every 50 ms for up to `limit`.
pub fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Waits up to `limit` for a frame of `camera`; returns when it came.
pub fn next_frame_of(rx: &FrameReceiver, camera: &str, limit: Duration) -> Option<Instant> {
    let deadline = Instant::now() + limit;
    while let Ok(f) = rx.recv_deadline(deadline) {
        if &*f.camera_id == camera {
            return Some(Instant::now());
        }
    }
    None
}

/// Asks every source to stop and waits for them, draining the queue
/// meanwhile so none is held up by a full lane.
pub fn stop_all(
    stop: &AtomicBool,
    rx: FrameReceiver,
    sources: impl IntoIterator<Item = SourceHandle>,
) {
    stop.store(true, Ordering::Relaxed);
    let drain = std::thread::spawn(move || while rx.recv().is_ok() {});
    for source in sources {
        source.join();
    }
    drain.join().unwrap();
}
