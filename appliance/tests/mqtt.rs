//! MQTT publishing against a real broker (Debian's mosquitto, started by the
//! test): the broker goes away mid-run and comes back; every event change the
//! box stored still reaches a subscriber, camera status is retained, and the
//! box says `offline` when it stops.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, import_model, stop, wait_for, Guard, StreetBox};
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

/// A box configured for a broker with a persistent subscriber session
/// already made on it; the broker is left running.
struct Bench {
    tmp: tempfile::TempDir,
    models: std::path::PathBuf,
    broker_port: u16,
    broker_dir: std::path::PathBuf,
}

impl Bench {
    fn new() -> (Self, Guard) {
        let tmp = tempfile::tempdir().unwrap();
        let models = tmp.path().join("models");
        import_model(&models);
        let broker_port = free_port();
        let broker_dir = tmp.path().join("broker");
        std::fs::create_dir_all(&broker_dir).unwrap();
        let mosquitto = broker(&broker_dir, broker_port);
        subscribe(broker_port);
        let bench = Self {
            tmp,
            models,
            broker_port,
            broker_dir,
        };
        (bench, mosquitto)
    }

    /// A street box publishing to the broker; `extra` goes in `[mqtt]`.
    fn street(&self, extra: &str) -> StreetBox {
        let mqtt = format!(
            "[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n{extra}",
            self.broker_port
        );
        StreetBox::new(self.tmp.path(), "box", &mqtt)
    }
}

/// Events the box holds now, through its API.
fn events_stored(b: &StreetBox) -> usize {
    events_page(&b.url, &b.token).map_or(0, |p| p["events"].as_array().map_or(0, Vec::len))
}

#[test]
fn events_reach_the_broker_through_an_outage_and_status_is_retained() {
    let (bench, mosquitto) = Bench::new();
    let (broker_port, broker_dir) = (bench.broker_port, &bench.broker_dir);
    let street = bench.street("");
    let vigil = street.start(&bench.models);
    let count = || events_stored(&street);
    wait_for("events stored", || count() >= 3);

    // The broker goes away; the box keeps storing; the broker comes back.
    stop(mosquitto);
    let during = count();
    wait_for("more events while the broker is down", || {
        count() >= during + 2
    });
    let mosquitto = broker(broker_dir, broker_port);
    // The box reconnects and catches up; then it stops cleanly, publishing
    // its last changes.
    wait_for("the box reconnected", || {
        street.log().matches("mqtt connected").count() >= 2
    });
    let page = events_page(&street.url, &street.token).unwrap();
    let box_id = page["box"].as_str().unwrap().to_string();
    stop(vigil);

    let stored = street.stored_events();
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
    let log = street.log()
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

#[test]
fn a_backlog_over_max_backlog_is_cut_and_the_cut_announced() {
    // The subscriber's session exists before the box ever connects.
    let (bench, mosquitto) = Bench::new();
    stop(mosquitto);
    let (broker_port, broker_dir) = (bench.broker_port, &bench.broker_dir);
    let street = bench.street("max_backlog = 2\n");
    let vigil = street.start(&bench.models);
    let count = || events_stored(&street);
    wait_for("events stored while the broker is away", || count() >= 5);
    let mosquitto = broker(broker_dir, broker_port);
    wait_for("the box connected", || {
        street.log().contains("mqtt connected")
    });
    stop(vigil);
    let stored = street.stored_events();
    let messages = collect(broker_port, Duration::from_secs(3));
    stop(mosquitto);

    let gap: Value = messages
        .iter()
        .find(|(t, _)| t.ends_with("/gap"))
        .map(|(_, p)| serde_json::from_slice(p).unwrap())
        .unwrap_or_else(|| panic!("a gap message\n{}", street.log()));
    assert_eq!(gap["reason"], "backlog over mqtt.max_backlog", "{gap}");
    let cut = gap["skipped_to"].as_i64().unwrap();
    assert!(cut >= 1, "{gap}");
    let mut latest: BTreeMap<i64, i64> = BTreeMap::new();
    for (topic, payload) in &messages {
        if topic.ends_with("/events") {
            let e: Value = serde_json::from_slice(payload).unwrap();
            let rev = e["revision"].as_i64().unwrap();
            assert!(rev > cut, "only changes after the cut: {e}");
            let r = latest.entry(e["id"].as_i64().unwrap()).or_insert(rev);
            *r = (*r).max(rev);
        }
    }
    let after_cut: BTreeMap<i64, i64> = stored.into_iter().filter(|(_, r)| *r > cut).collect();
    assert_eq!(latest, after_cut, "everything after the cut was published");
}

/// Event changes published for `box_id`: the newest revision of each id.
fn published_for(messages: &[(String, Vec<u8>)], box_id: &str) -> BTreeMap<i64, i64> {
    let topic = format!("vigil/{box_id}/cameras/street/events");
    let mut latest = BTreeMap::new();
    for (_, payload) in messages.iter().filter(|(t, _)| *t == topic) {
        let e: Value = serde_json::from_slice(payload).unwrap();
        let rev = e["revision"].as_i64().unwrap();
        let r = latest.entry(e["id"].as_i64().unwrap()).or_insert(rev);
        *r = (*r).max(rev);
    }
    latest
}

#[test]
fn a_new_database_is_published_though_the_old_ones_cursor_was_further() {
    let (bench, mosquitto) = Bench::new();
    let street = bench.street("");
    let vigil = street.start(&bench.models);
    wait_for("events stored", || events_stored(&street) >= 10);
    stop(vigil);
    let old_newest = street.stored_events().into_values().max().unwrap();

    // The database is replaced (deleted here; restored from elsewhere in
    // the field) while the hot store, with the publisher's cursor, stays.
    for file in ["vigil.sqlite3", "vigil.sqlite3-wal", "vigil.sqlite3-shm"] {
        let _ = std::fs::remove_file(street.data.join(file));
    }
    let out = Command::new(common::VIGIL)
        .args(["token", "create", "hq2", "--config"])
        .arg(&street.config)
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let vigil = street.start(&bench.models);
    let page = || events_page(&street.url, &token);
    wait_for("events in the new database", || {
        page().is_some_and(|p| p["events"].as_array().is_some_and(|e| e.len() >= 3))
    });
    let new_box = page().unwrap()["box"].as_str().unwrap().to_string();
    stop(vigil);
    let stored = street.stored_events();
    assert!(
        stored.values().max().unwrap() < &old_newest,
        "the old cursor must be ahead for this test to mean anything"
    );
    let messages = collect(bench.broker_port, Duration::from_secs(3));
    stop(mosquitto);
    assert_eq!(
        published_for(&messages, &new_box),
        stored,
        "every change of the new database was published\n{}",
        street.log()
    );
}
