//! Real network peers: a GStreamer RTSP server serving the shared street
//! clip (transcoded to H.264 and H.265 here), killed and restarted; a port
//! with nothing listening; a server that accepts and never answers. Every
//! camera gets its own error state, the others keep running, and a camera
//! comes back within 5 s of its server returning.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;

use support::{assets, next_frame_of, stop_all, wait_for};
use vigil_ingest::{
    frame_queue, spawn_source, HwAccel, SourceConfig, SourceHandle, SourceState, SourceUrl,
    Transport,
};

/// 20 s of the street clip in `codec`, keyframe every 0.5 s, made with the
/// ffmpeg CLI (installed by `make test`).
fn transcode(dir: &Path, codec: &str) -> PathBuf {
    let out = dir.join(format!("street_{codec}.mp4"));
    let encoder = if codec == "h264" {
        "libx264"
    } else {
        "libx265"
    };
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-t", "20", "-i"])
        .arg(assets().join("video/vtest.avi"))
        .args([
            "-c:v",
            encoder,
            "-preset",
            "ultrafast",
            "-g",
            "5",
            "-bf",
            "0",
        ])
        .args(["-pix_fmt", "yuv420p"])
        .arg(&out)
        .status()
        .expect("the ffmpeg CLI (make test installs it)");
    assert!(status.success(), "transcoding to {codec}");
    out
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running GStreamer RTSP server; killed on drop.
struct RtspServer(Child);

impl RtspServer {
    fn start(port: u16, clip: &Path, codec: &str) -> Self {
        Self::start_with(port, clip, codec, &[])
    }

    /// `extra`: `["USER:PASSWORD"]` to require that login.
    fn start_with(port: u16, clip: &Path, codec: &str, extra: &[&str]) -> Self {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/rtsp_server.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .arg(port.to_string())
            .arg(clip)
            .arg(codec)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 with GStreamer's RTSP server (make test installs them)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "RTSP server did not start");
        Self(child)
    }

    fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn source(
    id: &str,
    url: SourceUrl,
    stop: &Arc<AtomicBool>,
    queue: &vigil_ingest::FrameSender,
) -> SourceHandle {
    spawn_source(
        SourceConfig {
            camera_id: id.into(),
            url,
            detect_fps: 5.0,
            hwaccel: HwAccel::Auto,
            decode_threads: 1,
            max_width: None,
            gpu_target: None,
            input_options: Default::default(),
        },
        queue.clone(),
        stop.clone(),
    )
    .unwrap()
}

#[test]
fn rtsp_cameras_recover_from_a_server_restart_while_broken_peers_fail_alone() {
    vigil_ingest::init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let h264 = transcode(dir.path(), "h264");
    let h265 = transcode(dir.path(), "h265");
    let (port264, port265) = (free_port(), free_port());
    let server264 = RtspServer::start(port264, &h264, "h264");
    let _server265 = RtspServer::start(port265, &h265, "h265");
    // A port nobody listens on, and a server that accepts and says nothing.
    let refused = free_port();
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let held: Arc<std::sync::Mutex<Vec<TcpStream>>> = Arc::default();
    let keep = held.clone();
    std::thread::spawn(move || {
        for conn in silent.incoming().flatten() {
            keep.lock().unwrap().push(conn); // accepted, never answered
        }
    });

    let (tx, rx) = frame_queue(64);
    let stop = Arc::new(AtomicBool::new(false));
    let url = |s: String| SourceUrl::parse(&s).unwrap();
    let cams = [
        source(
            "h264",
            url(format!("rtsp://user:secret@127.0.0.1:{port264}/cam")),
            &stop,
            &tx,
        ),
        source(
            "h265",
            url(format!("rtsp://127.0.0.1:{port265}/cam")),
            &stop,
            &tx,
        ),
        source(
            "refused",
            url(format!("rtsp://127.0.0.1:{refused}/cam")),
            &stop,
            &tx,
        ),
        source(
            "silent",
            url(format!("rtsp://127.0.0.1:{silent_port}/cam")),
            &stop,
            &tx,
        ),
        // The same H.265 camera again, its media over UDP.
        source(
            "h265-udp",
            url(format!("rtsp://127.0.0.1:{port265}/cam")).with_transport(Transport::Udp),
            &stop,
            &tx,
        ),
    ];
    drop(tx);
    let stats = |i: usize| cams[i].stats.snapshot();

    // Both codecs stream.
    assert!(next_frame_of(&rx, "h264", Duration::from_secs(15)).is_some());
    assert!(next_frame_of(&rx, "h265", Duration::from_secs(15)).is_some());
    assert!(
        stats(0).decoder.unwrap().starts_with("h264 ("),
        "{:?}",
        stats(0)
    );
    assert!(
        stats(1).decoder.unwrap().starts_with("hevc ("),
        "{:?}",
        stats(1)
    );
    // RTP over UDP on a loaded runner can lose the first packets of a
    // stream; a keyframe follows every 0.5 s, so give it room, and say what
    // the camera saw if it never comes.
    assert!(
        next_frame_of(&rx, "h265-udp", Duration::from_secs(30)).is_some(),
        "UDP camera: {:?}",
        stats(2)
    );
    // The server paces the 10 fps clip at real time; the stats measure it.
    assert!(
        wait_for(Duration::from_secs(5), || {
            let s = stats(1);
            (5.0..=15.0).contains(&s.input_fps) && (5.0..=15.0).contains(&s.decoded_fps)
        }),
        "{:?}",
        stats(1)
    );

    // The broken peers each show their own error, with no crash.
    assert!(wait_for(Duration::from_secs(10), || stats(2)
        .last_error
        .is_some()));
    let refused_error = stats(2).last_error.unwrap();
    assert!(refused_error.contains("refused"), "{refused_error}");
    assert!(wait_for(Duration::from_secs(20), || stats(3)
        .last_error
        .is_some()));
    eprintln!("silent server: {}", stats(3).last_error.unwrap());
    assert_ne!(stats(3).state, SourceState::Streaming);

    // Kill the H.264 server: that camera fails and retries...
    server264.kill();
    assert!(wait_for(Duration::from_secs(15), || stats(0).state
        != SourceState::Streaming));
    let error = stats(0).last_error.unwrap();
    assert!(
        !error.contains("secret"),
        "credentials leaked into the error: {error}"
    );
    // ...while H.265 keeps streaming.
    assert!(next_frame_of(&rx, "h265", Duration::from_secs(5)).is_some());

    // Restart it: frames flow again within 5 s of the server being back.
    // Let the backoff grow first.
    std::thread::sleep(Duration::from_secs(3));
    // Frames queued before the kill must not pass for frames after it.
    while rx.try_recv().is_some() {}
    assert_ne!(stats(0).state, SourceState::Streaming);
    let _server264 = RtspServer::start(port264, &h264, "h264");
    let back = Instant::now();
    let frame_at = next_frame_of(&rx, "h264", Duration::from_secs(15)).expect("camera is back");
    let took = frame_at - back;
    eprintln!("h264 camera back {took:?} after its server");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(stats(0).reconnects >= 1);

    // Stopping interrupts every source, even one blocked on a silent peer.
    let stopping = Instant::now();
    stop_all(&stop, rx, cams);
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "{:?}",
        stopping.elapsed()
    );
    drop(held);
}

/// A TCP proxy between cameras and their server that the test can stall
/// (stop forwarding, connections kept open: a network that goes quiet) and
/// cut (every connection closed at once: a link that drops).
struct Proxy {
    port: u16,
    paused: Arc<AtomicBool>,
    links: Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let paused = Arc::new(AtomicBool::new(false));
        let links: Arc<std::sync::Mutex<Vec<TcpStream>>> = Arc::default();
        let (p, l) = (paused.clone(), links.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let mut held = l.lock().unwrap();
                held.push(client.try_clone().unwrap());
                held.push(server.try_clone().unwrap());
                drop(held);
                Self::pump(client.try_clone().unwrap(), server.try_clone().unwrap(), &p);
                Self::pump(server, client, &p);
            }
        });
        Self {
            port,
            paused,
            links,
        }
    }

    /// Copies `from` to `to`, holding data back while paused.
    fn pump(mut from: TcpStream, mut to: TcpStream, paused: &Arc<AtomicBool>) {
        use std::io::{Read, Write};
        let paused = paused.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                while paused.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = to.shutdown(std::net::Shutdown::Both);
        });
    }

    fn stall(&self, on: bool) {
        self.paused.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    fn cut(&self) {
        for link in self.links.lock().unwrap().drain(..) {
            let _ = link.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[test]
fn a_camera_that_refuses_our_password_is_asked_rarely_and_never_shown_it() {
    vigil_ingest::init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let h264 = transcode(dir.path(), "h264");
    let port = free_port();
    let _server = RtspServer::start_with(port, &h264, "h264", &["alice:wonderland"]);
    let (tx, rx) = frame_queue(8);
    let stop = Arc::new(AtomicBool::new(false));
    let url = |password: &str| {
        SourceUrl::parse(&format!("rtsp://alice:{password}@127.0.0.1:{port}/cam")).unwrap()
    };
    let handles = vec![
        source("right", url("wonderland"), &stop, &tx),
        source("wrong", url("looking-glass"), &stop, &tx),
    ];
    drop(tx);
    assert!(next_frame_of(&rx, "right", Duration::from_secs(20)).is_some());
    let wrong = handles[1].stats.clone();
    assert!(wait_for(Duration::from_secs(10), || wrong
        .snapshot()
        .last_error
        .is_some()));
    let error = wrong.snapshot().last_error.unwrap();
    assert!(error.contains("401"), "{error}");
    assert!(!error.contains("looking-glass"), "{error}");
    // A refusal is retried after 5 s, then 10 s: not every second, which
    // would lock the account on many cameras.
    std::thread::sleep(Duration::from_secs(8));
    let s = wrong.snapshot();
    assert!(s.reconnects <= 2, "{s:?}");
    assert_eq!(s.state, SourceState::Retrying, "{s:?}");
    stop_all(&stop, rx, handles);
}

#[test]
fn an_rtsp_camera_rides_out_a_stalled_network_and_a_dropped_link() {
    vigil_ingest::init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let clip = transcode(dir.path(), "h264");
    let server_port = free_port();
    let _server = RtspServer::start(server_port, &clip, "h264");
    let proxy = Proxy::start(server_port);
    let (tx, rx) = frame_queue(64);
    let stop = Arc::new(AtomicBool::new(false));
    let cam = source(
        "cam",
        SourceUrl::parse(&format!("rtsp://127.0.0.1:{}/cam", proxy.port)).unwrap(),
        &stop,
        &tx,
    );
    drop(tx);
    assert!(next_frame_of(&rx, "cam", Duration::from_secs(15)).is_some());

    // The network goes quiet with the connection open: the socket's read
    // timeout (5 s) or the stall watchdog (10 s), whichever fires first,
    // makes the camera reconnect and say why.
    proxy.stall(true);
    let stalled_at = Instant::now();
    assert!(
        wait_for(Duration::from_secs(20), || cam.stats.snapshot().reconnects
            >= 1),
        "{:?}",
        cam.stats.snapshot()
    );
    let noticed = stalled_at.elapsed();
    let error = cam.stats.snapshot().last_error.unwrap_or_default();
    eprintln!("stall noticed after {noticed:?}: {error}");
    assert!(
        error.contains("timed out") || error.contains("no data"),
        "{error}"
    );
    assert!(
        noticed >= Duration::from_secs(4),
        "noticed after {noticed:?}"
    );
    while rx.try_recv().is_some() {} // frames decoded before the stall

    // The network comes back: frames again within 5 s.
    proxy.stall(false);
    let back = Instant::now();
    let frame = next_frame_of(&rx, "cam", Duration::from_secs(15));
    assert!(frame.is_some(), "{:?}", cam.stats.snapshot());
    let recovered = frame.unwrap() - back;
    eprintln!("frames again {recovered:?} after the network came back");
    assert!(recovered <= Duration::from_secs(5), "took {recovered:?}");

    // The link drops (both sides closed): the camera reconnects at once.
    let before = cam.stats.snapshot().reconnects;
    proxy.cut();
    let cut_at = Instant::now();
    assert!(wait_for(Duration::from_secs(10), || cam
        .stats
        .snapshot()
        .reconnects
        > before));
    while rx.try_recv().is_some() {}
    let frame = next_frame_of(&rx, "cam", Duration::from_secs(15));
    assert!(frame.is_some(), "{:?}", cam.stats.snapshot());
    let recovered = frame.unwrap() - cut_at;
    eprintln!("frames again {recovered:?} after the link was cut");
    assert!(recovered <= Duration::from_secs(5), "took {recovered:?}");
    stop_all(&stop, rx, vec![cam]);
}
