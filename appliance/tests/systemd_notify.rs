//! The service protocol systemd sees (`Type=notify`), through a real
//! notification socket: READY with a status line, watchdog pings at half the
//! interval systemd asks for, RELOADING then READY on SIGHUP (pings going
//! on through a slow reload), STOPPING on SIGTERM.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{import_model, Guard, StreetBox, VIGIL};

/// Datagrams until `until` says enough (or 60 s pass).
fn read_until(socket: &UnixDatagram, seen: &mut Vec<String>, until: impl Fn(&[String]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 4096];
    while !until(seen) {
        assert!(Instant::now() < deadline, "systemd was told only: {seen:?}");
        if let Ok(n) = socket.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
}

fn count(seen: &[String], what: &str) -> usize {
    seen.iter().filter(|m| m.lines().any(|l| l == what)).count()
}

#[test]
fn systemd_hears_ready_status_watchdog_reload_and_stopping() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    import_model(&models);
    // A camera stuck in the kernel makes a reload take the 5 s a stop
    // waits for its sources: longer than the watchdog.
    let street = StreetBox::new(tmp.path(), "box", &common::stuck_camera(tmp.path()));
    let path = tmp.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let child = Command::new(VIGIL)
        .args(["run", "--config"])
        .arg(&street.config)
        .env("VIGIL_MODEL_DIR", &models)
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "1000000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = Guard(Some(child));
    let mut seen = Vec::new();
    read_until(&socket, &mut seen, |s| count(s, "READY=1") >= 1);
    let ready = seen.iter().find(|m| m.contains("READY=1")).unwrap();
    assert!(
        ready.contains("STATUS=") && ready.contains("cameras streaming"),
        "{ready}"
    );

    // 1 s watchdog: pinged every half second while healthy.
    let started = Instant::now();
    read_until(&socket, &mut seen, |s| count(s, "WATCHDOG=1") >= 4);
    assert!(started.elapsed() < Duration::from_secs(5), "{seen:?}");

    common::signal(guard.0.as_ref().unwrap(), "HUP");
    read_until(&socket, &mut seen, |s| {
        count(s, "RELOADING=1") >= 1 && count(s, "READY=1") >= 2
    });
    let reload = seen.iter().find(|m| m.contains("RELOADING=1")).unwrap();
    assert!(reload.contains("MONOTONIC_USEC="), "{reload}");
    // Fed through the reload, which a 1 s watchdog would not survive else.
    let from = seen.iter().position(|m| m.contains("RELOADING=1")).unwrap();
    let to = seen.iter().rposition(|m| m.contains("READY=1")).unwrap();
    let pings = count(&seen[from..to], "WATCHDOG=1");
    eprintln!("{pings} watchdog pings during the reload");
    assert!(pings >= 5, "{pings} pings during the reload: {seen:?}");

    let child = guard.0.take().unwrap();
    common::signal(&child, "TERM");
    read_until(&socket, &mut seen, |s| count(s, "STOPPING=1") >= 1);
    common::stop(Guard(Some(child)));
}
