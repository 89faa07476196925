//! HTTP cameras against a real HTTP server: a multipart MJPEG stream (what
//! most IP cameras serve), HLS, and a progressive MP4, side by side with a
//! URL that answers 404.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use support::{assets, ffmpeg, next_frame_of, stop_all, wait_for};
use vigil_ingest::{
    frame_queue, spawn_source, HwAccel, InputOptions, SourceConfig, SourceState, SourceUrl,
};

/// The test server (tests/support/http_server.py); killed on drop.
struct HttpServer {
    child: Child,
    port: u16,
}

impl HttpServer {
    fn start(root: &Path) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/http_server.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .arg(root)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the server prints its port");
        Self { child, port }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// JPEG frames, an HLS playlist and a progressive MP4 cut from the street clip.
fn make_media(root: &Path) {
    let clip = assets().join("video/vtest.avi");
    let clip = clip.to_str().unwrap();
    let at = |p: &str| root.join(p).to_str().unwrap().to_string();
    std::fs::create_dir_all(root.join("jpeg")).unwrap();
    std::fs::create_dir_all(root.join("hls")).unwrap();
    ffmpeg(&[
        "-t",
        "4",
        "-i",
        clip,
        "-vf",
        "fps=10",
        "-q:v",
        "5",
        &at("jpeg/%03d.jpg"),
    ]);
    let h264 = ["-c:v", "libx264", "-preset", "ultrafast", "-g", "10"];
    let mut mp4 = vec!["-t", "20", "-i", clip];
    mp4.extend(h264);
    let mp4_out = at("clip.mp4");
    mp4.extend(["-movflags", "+faststart", &mp4_out]);
    ffmpeg(&mp4);
    let mut hls = vec!["-t", "20", "-i", clip];
    hls.extend(h264);
    let hls_out = at("hls/cam.m3u8");
    hls.extend([
        "-f",
        "hls",
        "-hls_time",
        "1",
        "-hls_list_size",
        "0",
        &hls_out,
    ]);
    ffmpeg(&hls);
}

#[test]
fn mjpeg_hls_and_progressive_mp4_stream_while_a_404_fails_alone() {
    vigil_ingest::init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    make_media(dir.path());
    let server = HttpServer::start(dir.path());
    let base = format!("http://127.0.0.1:{}", server.port);

    let (tx, rx) = frame_queue(8);
    let stop = Arc::new(AtomicBool::new(false));
    let cameras = [
        ("mjpeg", format!("{base}/mjpeg")),
        ("hls", format!("{base}/hls/cam.m3u8")),
        ("mp4", format!("{base}/clip.mp4")),
        ("missing", format!("{base}/nothing-here.mp4")),
        ("typo", format!("{base}/clip.mp4")),
    ];
    // The camera's own ffmpeg options: one the HTTP protocol takes, and
    // one (a device's) that nothing takes for an MP4 over HTTP.
    let option = |name: &str, value: &str| {
        InputOptions::new([(name.to_string(), value.to_string())].into()).unwrap()
    };
    let options_of = |id: &str| match id {
        "mp4" => option("user_agent", "vigil-test-agent/1"),
        "typo" => option("video_size", "640x480"),
        _ => InputOptions::default(),
    };
    let handles: Vec<_> = cameras
        .iter()
        .map(|(id, url)| {
            let config = SourceConfig {
                camera_id: id.to_string(),
                url: SourceUrl::parse(url).unwrap(),
                detect_fps: 5.0,
                hwaccel: HwAccel::Auto,
                decode_threads: 1,
                max_width: Some(384),
                gpu_target: None,
                input_options: options_of(id),
            };
            spawn_source(config, tx.clone(), stop.clone()).unwrap()
        })
        .collect();
    drop(tx);
    let stats = |i: usize| handles[i].stats.snapshot();

    for id in ["mjpeg", "hls", "mp4"] {
        for _ in 0..3 {
            assert!(
                next_frame_of(&rx, id, Duration::from_secs(20)).is_some(),
                "{id} gave no frames"
            );
        }
    }
    assert!(
        stats(0).decoder.unwrap().starts_with("mjpeg"),
        "{:?}",
        stats(0)
    );
    assert!(
        stats(1).decoder.unwrap().starts_with("h264"),
        "{:?}",
        stats(1)
    );
    // The MJPEG camera sends 10 frames/s: the measured input rate says so.
    assert!(
        wait_for(Duration::from_secs(5), || (5.0..=15.0)
            .contains(&stats(0).input_fps)),
        "{:?}",
        stats(0)
    );
    // MJPEG over HTTP has no clock of its own (ffmpeg makes up 25 fps):
    // frames are timed as they arrive, so 5 of the 10 a second are sampled.
    // The HLS playlist and the MP4 are recordings that arrive as fast as
    // the link allows: they are played at real time, 5 sampled a second too.
    let sampled = || [0, 1, 2].map(|i| stats(i).frames_sampled);
    let before = sampled();
    std::thread::sleep(Duration::from_secs(4));
    for ((id, now), then) in ["mjpeg", "hls", "mp4"].iter().zip(sampled()).zip(before) {
        let per_second = (now - then) as f64 / 4.0;
        assert!(
            (4.0..=6.0).contains(&per_second),
            "{id}: {per_second} sampled/s"
        );
    }
    let requests = std::fs::read_to_string(dir.path().join("requests.log")).unwrap();
    assert!(
        requests.contains("/clip.mp4 vigil-test-agent/1"),
        "{requests}"
    );
    // Frames were scaled to the width asked for, aspect kept (768x576).
    let frame = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!((frame.width, frame.height), (384, 288));

    assert!(wait_for(Duration::from_secs(10), || stats(3)
        .last_error
        .is_some()));
    let error = stats(3).last_error.unwrap();
    assert!(error.contains("404"), "{error}");
    assert_ne!(stats(3).state, SourceState::Streaming);
    // An option nothing takes is the camera's error, named, not ignored.
    let error = stats(4)
        .last_error
        .expect("an error for the unknown option");
    assert!(error.contains("takes no option video_size"), "{error}");
    assert_eq!(stats(4).frames_sampled, 0);

    stop_all(&stop, rx, handles);
}
