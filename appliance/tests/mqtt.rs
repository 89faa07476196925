//! MQTT publishing against a real broker (Debian's mosquitto, started by the
//! test): the broker goes away mid-run and comes back; every event change the
//! box stored still reaches a subscriber, camera status is retained, and the
//! box says `offline` when it stops.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{assets, free_port, import_model, Guard, VIGIL};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

fn broker(dir: &Path, port: u16) -> Guard {
    // Started as root, mosquitto switches to its own user unless told to
    // stay: it could not write its persistence into our temporary folder.
    let me = Command::new("id").arg("-un").output().unwrap();
    let me = String::from_utf8(me.stdout).unwrap().trim().to_string();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
             persistence_location {0}/\nautosave_interval 1\n\
             log_dest file {0}/mosquitto.log\nuser {me}\n",
            dir.display()
        ),
    )
    .unwrap();
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto must be installed (make test installs it)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mosquitto did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    Guard(Some(child))
}

fn stop(mut guard: Guard) {
    let mut child: Child = guard.0.take().unwrap();
    common::signal(&child, "TERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "no exit within 30 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A persistent session ("hq"): the broker keeps QoS 1 messages for it
/// while it is away, the way a central consumer subscribes.
fn session(port: u16) -> (Client, rumqttc::Connection) {
    let mut o = MqttOptions::new("hq", "127.0.0.1", port);
    o.set_clean_session(false);
    o.set_keep_alive(Duration::from_secs(30));
    Client::new(o, 10)
}

fn subscribe(port: u16) {
    let (client, mut conn) = session(port);
    client.subscribe("vigil/#", QoS::AtLeastOnce).unwrap();
    for n in conn.iter() {
        if let Ok(Event::Incoming(Packet::SubAck(_))) = n {
            break;
        }
    }
    client.disconnect().unwrap();
    for n in conn.iter() {
        if n.is_err() {
            break;
        }
    }
}

/// Everything queued for the session, until `quiet` passes with nothing.
fn collect(port: u16, quiet: Duration) -> Vec<(String, Vec<u8>)> {
    let (_client, mut conn) = session(port);
    let mut got = Vec::new();
    loop {
        match conn.recv_timeout(quiet) {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => got.push((p.topic, p.payload.to_vec())),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("subscriber: {e}"),
            Err(_) => return got,
        }
    }
}

fn events_page(origin: &str, token: &str) -> Option<Value> {
    let mut r = ureq::get(&format!("{origin}/api/v1/events?after=0&limit=1000"))
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .ok()?;
    serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !ok() {
        assert!(Instant::now() < deadline, "{what} within 90 s");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn events_reach_the_broker_through_an_outage_and_status_is_retained() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    import_model(&models);
    let broker_port = free_port();
    let broker_dir = tmp.path().join("broker");
    std::fs::create_dir_all(&broker_dir).unwrap();
    let mosquitto = broker(&broker_dir, broker_port);
    subscribe(broker_port);

    let port = free_port();
    let data = tmp.path().join("data");
    let config = tmp.path().join("vigil.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[storage]\npath = {data:?}\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{broker_port}\"\n\
             [[cameras]]\nid = \"street\"\nurl = \"file://{}?loop=1\"\ndetect_fps = 3\n",
            assets().join("video/vtest.avi").display()
        ),
    )
    .unwrap();
    let out = Command::new(VIGIL)
        .args(["token", "create", "t", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let origin = format!("http://127.0.0.1:{port}");
    let vigil = Guard(Some(
        Command::new(VIGIL)
            .args(["run", "--config"])
            .arg(&config)
            .env("VIGIL_MODEL_DIR", &models)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(tmp.path().join("vigil.log")).unwrap())
            .spawn()
            .unwrap(),
    ));
    let count =
        || events_page(&origin, &token).map_or(0, |p| p["events"].as_array().map_or(0, Vec::len));
    wait_for("events stored", || count() >= 3);

    // The broker goes away; the box keeps storing; the broker comes back.
    stop(mosquitto);
    let during = count();
    wait_for("more events while the broker is down", || {
        count() >= during + 2
    });
    let mosquitto = broker(&broker_dir, broker_port);
    // The box reconnects (its backoff is at most a few seconds here) and
    // catches up; then it stops cleanly, publishing its last changes.
    std::thread::sleep(Duration::from_secs(12));
    let page = events_page(&origin, &token).unwrap();
    let box_id = page["box"].as_str().unwrap().to_string();
    stop(vigil);

    let stored: BTreeMap<i64, i64> = {
        let db = rusqlite::Connection::open(data.join("vigil.sqlite3")).unwrap();
        let mut stmt = db.prepare("SELECT id, revision FROM events").unwrap();
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows
    };
    let messages = collect(broker_port, Duration::from_secs(3));
    stop(mosquitto);

    let prefix = format!("vigil/{box_id}");
    let mut latest: BTreeMap<i64, i64> = BTreeMap::new();
    let mut statuses = Vec::new();
    let mut camera_status = None;
    for (topic, payload) in &messages {
        if topic == &format!("{prefix}/cameras/street/events") {
            let e: Value = serde_json::from_slice(payload).unwrap();
            assert_eq!(e["box_id"], box_id.as_str());
            let (id, rev) = (e["id"].as_i64().unwrap(), e["revision"].as_i64().unwrap());
            let r = latest.entry(id).or_insert(rev);
            *r = (*r).max(rev);
        } else if topic == &format!("{prefix}/status") {
            statuses.push(String::from_utf8_lossy(payload).into_owned());
        } else if topic == &format!("{prefix}/cameras/street/status") {
            camera_status = Some(serde_json::from_slice::<Value>(payload).unwrap());
        } else {
            panic!("unexpected topic {topic}");
        }
    }
    assert!(stored.len() >= 5, "{stored:?}");
    let log = std::fs::read_to_string(tmp.path().join("vigil.log")).unwrap_or_default()
        + &std::fs::read_to_string(broker_dir.join("mosquitto.log")).unwrap_or_default();
    let topics: Vec<&str> = messages.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        latest, stored,
        "every stored event, in its final state, was published\ntopics: {topics:?}\nlog:\n{log}"
    );
    assert_eq!(
        statuses.first().map(String::as_str),
        Some("online"),
        "{statuses:?}"
    );
    assert_eq!(
        statuses.last().map(String::as_str),
        Some("offline"),
        "{statuses:?}"
    );
    let camera_status = camera_status.expect("camera status published");
    assert!(
        camera_status["ingest"]["state"].is_string(),
        "{camera_status}"
    );
}
