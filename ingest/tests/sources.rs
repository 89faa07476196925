//! Sources on real files: decoding, sampling, clocks, and what a broken
//! input does.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vigil_ingest::{
    frame_queue, spawn_source, Frame, HwAccel, SourceConfig, SourceState, SourceUrl,
};

fn assets() -> PathBuf {
    std::env::var_os("VIGIL_TEST_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/assets"))
}

fn config(url: &str, fps: f64) -> SourceConfig {
    SourceConfig {
        camera_id: "cam".into(),
        url: SourceUrl::parse(url).unwrap(),
        detect_fps: fps,
        // Whatever this machine has: CI has no GPU, so this is software
        // there, and the same tests exercise NVDEC where a GPU is present.
        hwaccel: HwAccel::Auto,
        decode_threads: 0,
    }
}

#[test]
fn a_whole_file_is_sampled_at_the_detection_rate_with_rising_stream_time() {
    vigil_ingest::init().unwrap();
    let clip = assets().join("video/bikes.mp4"); // 640x272, 25 fps, 250 frames
    let (tx, rx) = frame_queue(1000);
    let stop = Arc::new(AtomicBool::new(false));
    let url = format!("file://{}?loop=0&realtime=0", clip.display());
    let handle = spawn_source(config(&url, 5.0), tx, stop).unwrap();
    let stats = handle.stats.clone();
    handle.join(); // a non-looping file ends by itself
    let frames: Vec<Frame> = rx.try_iter().collect();

    let s = stats.snapshot();
    assert_eq!(s.frames_decoded, 250);
    assert_eq!(s.state, SourceState::Stopped);
    // 10 s at 5 fps.
    assert_eq!(frames.len(), 50, "sampled frames");
    assert_eq!(s.frames_sampled, 50);
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.seq, i as u64);
        assert_eq!((f.width, f.height), (640, 272));
        assert_eq!(f.rgb.len(), 640 * 272 * 3);
        assert_eq!(
            f.pts_us,
            i as i64 * 200_000,
            "one sample every 200 ms of stream time"
        );
    }
    // Real pixels, not a blank frame.
    let mid = &frames[25].rgb;
    let mean = mid.iter().map(|&v| v as f64).sum::<f64>() / mid.len() as f64;
    assert!((40.0..220.0).contains(&mean), "mean pixel {mean}");
}

#[test]
fn a_looping_file_keeps_stream_time_rising_across_loops() {
    vigil_ingest::init().unwrap();
    let clip = assets().join("video/bikes.mp4");
    let (tx, rx) = frame_queue(1000);
    let stop = Arc::new(AtomicBool::new(false));
    let url = format!("file://{}?realtime=0", clip.display());
    let handle = spawn_source(config(&url, 2.0), tx, stop.clone()).unwrap();
    let mut frames = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while frames.len() < 45 {
        assert!(Instant::now() < deadline, "only {} frames", frames.len());
        if let Ok(f) = rx.recv_timeout(Duration::from_secs(5)) {
            frames.push(f);
        }
    }
    stop.store(true, Ordering::Relaxed);
    handle.join();
    // 20 samples per 10 s loop: frame 45 is in the third loop.
    assert!(frames.windows(2).all(|w| w[1].pts_us > w[0].pts_us));
    assert!(frames[44].pts_us >= 20_000_000, "{}", frames[44].pts_us);
}

#[test]
fn a_missing_file_is_retried_with_a_clear_error_and_stops_on_request() {
    vigil_ingest::init().unwrap();
    let (tx, _rx) = frame_queue(4);
    let stop = Arc::new(AtomicBool::new(false));
    let handle = spawn_source(config("/nonexistent/clip.mp4", 5.0), tx, stop.clone()).unwrap();
    let stats = handle.stats.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats.snapshot().state != SourceState::Retrying {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = stats.snapshot().last_error.unwrap();
    assert!(err.contains("/nonexistent/clip.mp4"), "{err}");
    let asked = Instant::now();
    stop.store(true, Ordering::Relaxed);
    handle.join();
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "stop is prompt during backoff"
    );
    assert_eq!(stats.snapshot().state, SourceState::Stopped);
}

#[test]
fn a_truncated_file_yields_the_frames_it_has_without_crashing() {
    vigil_ingest::init().unwrap();
    let whole = std::fs::read(assets().join("video/vtest.avi")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.avi");
    std::fs::write(&cut, &whole[..whole.len() / 3]).unwrap();
    let (tx, rx) = frame_queue(1000);
    let url = format!("file://{}?loop=0&realtime=0", cut.display());
    let handle = spawn_source(config(&url, 10.0), tx, Arc::new(AtomicBool::new(false))).unwrap();
    handle.join();
    let frames: Vec<Frame> = rx.try_iter().collect();
    assert!(
        frames.len() > 100,
        "{} frames from a third of the file",
        frames.len()
    );
    assert!(frames.iter().all(|f| (f.width, f.height) == (768, 576)));
}

#[test]
fn garbage_is_an_error_naming_the_file() {
    vigil_ingest::init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.jpg");
    std::fs::write(&junk, b"this is not an image").unwrap();
    let err = vigil_ingest::decode_still(&junk).unwrap_err().to_string();
    assert!(err.contains("junk.jpg"), "{err}");
}
