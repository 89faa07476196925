//! Sources on real files: decoding, sampling, clocks, and what a broken
//! input does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;

use support::{assets, ffmpeg, wait_for};
use vigil_ingest::{
    frame_queue, spawn_source, DecodeOptions, Frame, HwAccel, SourceConfig, SourceState, SourceUrl,
    VideoInput,
};

fn config(url: &str, fps: f64) -> SourceConfig {
    SourceConfig {
        camera_id: "cam".into(),
        url: SourceUrl::parse(url).unwrap(),
        detect_fps: fps,
        // Whatever this machine has: CI has no GPU, so this is software
        // there, and the same tests exercise NVDEC where a GPU is present.
        hwaccel: HwAccel::Auto,
        decode_threads: 0,
        max_width: None,
        gpu_target: None,
        input_options: Default::default(),
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
    // 25 fps against 5 wanted: B-frames are skipped, and counted.
    assert_eq!(s.frames_in, 250);
    assert_eq!(s.frames_decoded + s.frames_skipped, 250);
    assert!(s.frames_skipped > 0, "{s:?}");
    assert_eq!(s.state, SourceState::Stopped);
    // 10 s at 5 fps.
    assert_eq!(frames.len(), 50, "sampled frames");
    assert_eq!(s.frames_sampled, 50);
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.seq, i as u64);
        assert_eq!((f.width, f.height), (640, 272));
        assert_eq!(f.rgb().unwrap().len(), 640 * 272 * 3);
        // One sample per 200 ms slot of stream time: the first decoded
        // frame of the slot (skipped B-frames can push it a frame or two in).
        let slot = i as i64 * 200_000;
        assert!(
            (slot..slot + 200_000).contains(&f.pts_us),
            "sample {i} at {} us",
            f.pts_us
        );
    }
    // Real pixels, not a blank frame.
    let mid = frames[25].rgb().unwrap();
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
fn a_stream_whose_clock_jumps_back_keeps_being_sampled() {
    vigil_ingest::init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("part.ts");
    let clip = assets().join("video/bikes.mp4"); // 10 s
    ffmpeg(&[
        "-i",
        clip.to_str().unwrap(),
        "-c",
        "copy",
        "-f",
        "mpegts",
        part.to_str().unwrap(),
    ]);
    // Two copies back to back: the second starts the clock again, as an
    // encoder that restarted mid-stream does.
    let once = std::fs::read(&part).unwrap();
    let twice = dir.path().join("twice.ts");
    std::fs::write(&twice, [once.as_slice(), once.as_slice()].concat()).unwrap();
    let (tx, rx) = frame_queue(1000);
    let url = format!("file://{}?loop=0&realtime=0", twice.display());
    let handle = spawn_source(config(&url, 5.0), tx, Arc::new(AtomicBool::new(false))).unwrap();
    handle.join();
    let frames: Vec<Frame> = rx.try_iter().collect();
    // 20 s at 5 fps; without rebasing, the second half gave nothing.
    assert!(
        (95..=101).contains(&frames.len()),
        "{} frames sampled",
        frames.len()
    );
    assert!(frames.windows(2).all(|w| w[1].pts_us > w[0].pts_us));
}

#[test]
fn a_file_without_a_decodable_frame_is_an_error_not_a_busy_loop() {
    vigil_ingest::init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let blank = dir.path().join("blank.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=size=64x64:rate=5",
        "-t",
        "1",
        "-c:v",
        "libx264",
        "-movflags",
        "+faststart",
        blank.to_str().unwrap(),
    ]);
    // Cut where the frames begin: the index says there is video, so the
    // file opens, and then it simply ends.
    let bytes = std::fs::read(&blank).unwrap();
    let mdat = bytes.windows(4).position(|w| w == b"mdat").unwrap();
    let empty = dir.path().join("empty.mp4");
    std::fs::write(&empty, &bytes[..mdat + 4]).unwrap();
    let (tx, _rx) = frame_queue(4);
    let stop = Arc::new(AtomicBool::new(false));
    let url = format!("file://{}?loop=1&realtime=0", empty.display());
    let handle = spawn_source(config(&url, 5.0), tx, stop.clone()).unwrap();
    let stats = handle.stats.clone();
    assert!(wait_for(Duration::from_secs(10), || stats
        .snapshot()
        .last_error
        .is_some()));
    let s = stats.snapshot();
    let error = s.last_error.as_deref().unwrap();
    assert!(
        error.contains("empty.mp4") && error.contains("without a frame"),
        "{s:?}"
    );
    assert!(s.last_error_time.is_some(), "{s:?}");
    // Retried with backoff, not reopened thousands of times a second.
    std::thread::sleep(Duration::from_secs(2));
    assert!(stats.snapshot().reconnects <= 5, "{:?}", stats.snapshot());
    stop.store(true, Ordering::Relaxed);
    handle.join();
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

/// Coded frames of each picture type in `clip`, counted by ffprobe.
fn picture_types(clip: &std::path::Path) -> std::collections::HashMap<String, u64> {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .args(["frame=pict_type", "-of", "csv=p=0"])
        .arg(clip)
        .output()
        .expect("ffprobe (make test installs ffmpeg)");
    let mut counts = std::collections::HashMap::new();
    for t in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        *counts.entry(t.trim_matches(',').to_string()).or_default() += 1;
    }
    counts
}

#[test]
fn a_stream_much_faster_than_detection_skips_nonreference_frames_and_counts_them() {
    vigil_ingest::init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // 30 fps with two non-reference B-frames between reference frames.
    let clip = dir.path().join("bframes.mp4");
    let (src, out) = (
        assets().join("video/vtest.avi"),
        clip.to_str().unwrap().to_string(),
    );
    ffmpeg(&[
        "-t",
        "10",
        "-i",
        src.to_str().unwrap(),
        "-vf",
        "fps=30",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-bf",
        "2",
        "-x264-params",
        "b-pyramid=none:b-adapt=0",
        "-g",
        "30",
        &out,
    ]);
    let types = picture_types(&clip);
    let b_frames = types.get("B").copied().unwrap_or(0);
    assert!(b_frames > 100, "{types:?}");

    let read_all = |needed_fps: f64| {
        let url = SourceUrl::parse(&out).unwrap();
        let options = DecodeOptions {
            hwaccel: HwAccel::None,
            needed_fps: Some(needed_fps),
            ..Default::default()
        };
        let mut input = VideoInput::open_with(&url, options).unwrap();
        let mut last = -1;
        while let Some(t) = input.next_frame().unwrap() {
            assert!(t > last, "frames come in presentation order");
            last = t;
        }
        (input.skips_nonref(), input.counts())
    };
    // Detection at 5 fps: the decoder skips exactly the B-frames.
    let (skipping, counts) = read_all(5.0);
    assert!(skipping);
    assert_eq!(counts.skipped, b_frames, "{counts:?} {types:?}");
    assert_eq!(counts.packets, counts.decoded + counts.skipped);
    let reference = types["I"] + types["P"];
    assert_eq!(
        counts.decoded, reference,
        "every reference frame is decoded"
    );
    // Detection at 20 fps is too close to the stream's rate: decode all.
    let (skipping, counts) = read_all(20.0);
    assert!(!skipping);
    assert_eq!((counts.skipped, counts.decoded), (0, counts.packets));

    // Through a source, the counts reach the camera's stats.
    let (tx, rx) = frame_queue(1000);
    let url = format!("file://{out}?loop=0&realtime=0");
    let handle = spawn_source(config(&url, 5.0), tx, Arc::new(AtomicBool::new(false))).unwrap();
    let stats = handle.stats.clone();
    handle.join();
    let s = stats.snapshot();
    assert_eq!(s.frames_skipped, b_frames, "{s:?}");
    assert_eq!(s.frames_in, s.frames_decoded + s.frames_skipped, "{s:?}");
    // Sampling by stream time still gives 5 frames per second of video.
    let sampled = rx.try_iter().count();
    assert!(
        (48..=51).contains(&sampled),
        "{sampled} frames sampled from 10 s"
    );
}

#[test]
fn inputs_without_usable_video_give_a_clear_error_state() {
    vigil_ingest::init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let audio = dir.path().join("audio-only.m4a");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=duration=1",
        audio.to_str().unwrap(),
    ]);
    let garbage = dir.path().join("garbage.mp4");
    let noise: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&garbage, noise).unwrap();
    let cases = [
        (audio.to_str().unwrap().to_string(), "no video stream"),
        (garbage.to_str().unwrap().to_string(), "garbage.mp4"),
        // A V4L2 camera that is not plugged in.
        ("/dev/video99".to_string(), "/dev/video99"),
    ];
    let (tx, _rx) = frame_queue(4);
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = cases
        .iter()
        .map(|(url, _)| spawn_source(config(url, 5.0), tx.clone(), stop.clone()).unwrap())
        .collect();
    for (handle, (url, expected)) in handles.iter().zip(&cases) {
        assert!(
            wait_for(Duration::from_secs(10), || handle
                .stats
                .snapshot()
                .last_error
                .is_some()),
            "{url}: no error state"
        );
        let s = handle.stats.snapshot();
        let error = s.last_error.unwrap();
        assert!(error.contains(expected), "{url}: {error}");
        assert_ne!(s.state, SourceState::Streaming);
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join();
    }
}

#[test]
fn frames_wider_than_the_limit_are_scaled_down_keeping_their_aspect() {
    vigil_ingest::init().unwrap();
    let url = SourceUrl::parse(assets().join("video/bikes.mp4").to_str().unwrap()).unwrap();
    let options = DecodeOptions {
        hwaccel: HwAccel::None,
        max_width: Some(320),
        ..Default::default()
    };
    let mut input = VideoInput::open_with(&url, options).unwrap();
    input.next_frame().unwrap().unwrap();
    let (w, h, rgb) = input.convert_to_rgb().unwrap();
    assert_eq!((w, h), (320, 136));
    assert_eq!(rgb.len(), 320 * 136 * 3);
}
