//! Publishing to an MQTT broker: every stored event change and each
//! camera's status, QoS 1.
//!
//! The database is the outbox. The publisher reads event changes after its
//! cursor (kept in the hot store, so it survives restarts), publishes a
//! batch, and moves the cursor only when the broker has acknowledged all of
//! it. A broker that is away costs nothing but a growing backlog in the
//! database; when it returns, the backlog goes out in order, at most
//! `max_backlog` changes of it (older ones are reported on `<prefix>/gap`).
//! Delivery is at least once: dedupe by `(box_id, id, revision)`.
//!
//! Topics (see docs/api.md):
//! - `<prefix>/status`: `online` / `offline` (retained; offline is also the
//!   last will, for a box that vanishes)
//! - `<prefix>/cameras/<id>/status`: the camera's ingest state (retained)
//! - `<prefix>/cameras/<id>/events`: one event change, as the API shows it
//! - `<prefix>/gap`: changes that will not be published

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumqttc::{Client, Connection, Event, LastWill, MqttOptions, Packet, QoS};
use serde_json::json;
use vigil_storage::{EventQuery, HotStore, Reader};
use vigil_web_ui::Pipeline;

use crate::config::MqttSection;

/// Event changes per batch (one acknowledgement round).
const BATCH: usize = 100;
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the database is looked at when caught up: the writer's
/// commit interval.
const POLL: Duration = Duration::from_millis(250);
const STATUS_EVERY: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The cursor of versions that kept one for whatever database was there.
const LEGACY_CURSOR: &str = "mqtt";

/// The cursor's key in the hot store: per database, since a new database's
/// revisions start over and an old cursor would hold back everything below it.
fn cursor_key(box_id: &str) -> String {
    format!("mqtt/{box_id}")
}

#[derive(Debug, thiserror::Error)]
enum MqttError {
    // Boxed: rumqttc's errors are large and this one is returned often.
    #[error("broker: {0}")]
    Connection(Box<rumqttc::ConnectionError>),
    #[error("client: {0}")]
    Client(Box<rumqttc::ClientError>),
    #[error("no acknowledgement within {0:?}")]
    Timeout(Duration),
    #[error("storage: {0}")]
    Storage(#[from] vigil_storage::StorageError),
}

impl From<rumqttc::ConnectionError> for MqttError {
    fn from(e: rumqttc::ConnectionError) -> Self {
        Self::Connection(Box::new(e))
    }
}

impl From<rumqttc::ClientError> for MqttError {
    fn from(e: rumqttc::ClientError) -> Self {
        Self::Client(Box::new(e))
    }
}

pub struct Settings {
    host: String,
    port: u16,
    prefix: String,
    client_id: String,
    credentials: Option<(String, String)>,
    max_backlog: usize,
    box_id: String,
}

impl Settings {
    pub fn new(section: &MqttSection, box_id: &str) -> anyhow::Result<Self> {
        let (host, port) = section.address().map_err(anyhow::Error::msg)?;
        let credentials = section.username.as_ref().map(|u| {
            let pw = section.password.as_ref().map(|p| p.get_ref().clone());
            (u.clone(), pw.unwrap_or_default())
        });
        Ok(Self {
            host,
            port,
            prefix: section
                .topic_prefix
                .clone()
                .unwrap_or_else(|| format!("vigil/{box_id}"))
                .trim_end_matches('/')
                .to_string(),
            client_id: section
                .client_id
                .clone()
                .unwrap_or_else(|| format!("vigil-{box_id}")),
            credentials,
            max_backlog: section.max_backlog,
            box_id: box_id.to_string(),
        })
    }

    fn options(&self) -> MqttOptions {
        let mut o = MqttOptions::new(&self.client_id, &self.host, self.port);
        o.set_keep_alive(Duration::from_secs(30));
        // Large enough for a camera status or an event with many zones.
        o.set_max_packet_size(256 * 1024, 256 * 1024);
        o.set_last_will(LastWill::new(
            format!("{}/status", self.prefix),
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
        if let Some((u, p)) = &self.credentials {
            o.set_credentials(u, p);
        }
        o
    }
}

/// The running publisher; [`MqttPublisher::stop`] publishes what is left
/// (briefly), says `offline` and disconnects.
pub struct MqttPublisher {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

struct Outbox {
    settings: Settings,
    reader: Arc<Reader>,
    hot: Arc<HotStore>,
    pipeline: Arc<dyn Pipeline>,
    stop: Arc<AtomicBool>,
}

pub fn spawn(
    settings: Settings,
    reader: Arc<Reader>,
    hot: Arc<HotStore>,
    pipeline: Arc<dyn Pipeline>,
) -> anyhow::Result<MqttPublisher> {
    let stop = Arc::new(AtomicBool::new(false));
    let outbox = Outbox {
        settings,
        reader,
        hot,
        pipeline,
        stop: stop.clone(),
    };
    let thread = std::thread::Builder::new()
        .name("mqtt".into())
        .spawn(move || outbox.run())?;
    Ok(MqttPublisher { stop, thread })
}

impl MqttPublisher {
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        if self.thread.join().is_err() {
            tracing::error!("mqtt publisher panicked");
        }
    }
}

impl Outbox {
    fn run(self) {
        // A first start publishes from now on, not the whole history.
        let newest = self
            .reader
            .last_event_revision()
            .ok()
            .flatten()
            .unwrap_or(0);
        let key = cursor_key(&self.settings.box_id);
        let saved = match self.hot.cursor(&key) {
            Ok(None) => self.hot.cursor(LEGACY_CURSOR),
            found => found,
        };
        let mut acked = match saved {
            Ok(Some(c)) => c,
            Ok(None) => newest,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the mqtt cursor; publishing from now on");
                newest
            }
        };
        if acked > newest {
            // The database is behind the cursor (replaced, or restored from
            // a backup): else nothing would go out until it caught up.
            tracing::warn!(
                cursor = acked,
                newest,
                "the mqtt cursor is past the database's newest change; following the database"
            );
            acked = newest;
        }
        let mut backoff = Duration::from_secs(1);
        let (host, port) = (&self.settings.host, self.settings.port);
        while !self.stop.load(Ordering::Relaxed) {
            let mut connected = false;
            match self.session(&mut acked, &mut connected) {
                Ok(()) => return,
                Err(e) => {
                    if connected {
                        backoff = Duration::from_secs(1);
                    }
                    tracing::warn!(%host, port, error = %e, retry_in = ?backoff, "mqtt broker unavailable");
                }
            }
            // Jitter, so a fleet does not reconnect to a restarted broker at once.
            let jitter = Duration::from_millis(u64::from(std::process::id() % 500));
            self.sleep(backoff + jitter);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn sleep(&self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until && !self.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn topic(&self, rest: &str) -> String {
        format!("{}/{rest}", self.settings.prefix)
    }

    /// One connection: returns `Ok` only after a clean stop.
    fn session(&self, acked: &mut i64, connected: &mut bool) -> Result<(), MqttError> {
        let (client, mut conn) = Client::new(self.settings.options(), 4 * BATCH);
        wait_for(&mut conn, |p| matches!(p, Packet::ConnAck(_)), 1)?;
        *connected = true;
        tracing::info!(host = %self.settings.host, port = self.settings.port, "mqtt connected");
        let mut pending = 0usize;
        client.publish(self.topic("status"), QoS::AtLeastOnce, true, "online")?;
        pending += 1;
        self.skip_old_backlog(&client, acked, &mut pending)?;
        let mut last_status: Option<Instant> = None;
        let mut last_states = Vec::new();
        loop {
            let stopping = self.stop.load(Ordering::Relaxed);
            let cameras = self.pipeline.cameras();
            let states: Vec<String> = cameras
                .iter()
                .map(|c| c.ingest["state"].to_string())
                .collect();
            if last_status.is_none_or(|t| t.elapsed() >= STATUS_EVERY) || states != last_states {
                for cam in &cameras {
                    let body = json!({ "box_id": self.settings.box_id, "camera": cam.id, "ingest": cam.ingest });
                    let topic = self.topic(&format!("cameras/{}/status", cam.id));
                    client.publish(topic, QoS::AtLeastOnce, true, body.to_string())?;
                    pending += 1;
                }
                last_status = Some(Instant::now());
                last_states = states;
            }
            let gap = self.reader.poll_state()?.deleted_event_revision;
            if *acked < gap {
                let body = json!({ "box_id": self.settings.box_id, "after": *acked, "deleted_up_to": gap,
                    "reason": "deleted by retention before it was published" });
                client.publish(self.topic("gap"), QoS::AtLeastOnce, false, body.to_string())?;
                pending += 1;
            }
            let batch = self.reader.events(&EventQuery {
                after_revision: Some(*acked),
                limit: BATCH,
                ..Default::default()
            })?;
            let last = batch.last().map(|e| e.revision);
            let full = batch.len() == BATCH;
            for event in batch {
                let topic = self.topic(&format!("cameras/{}/events", event.record.camera));
                let mut body = vigil_web_ui::event_json(event);
                body["box_id"] = json!(self.settings.box_id);
                client.publish(topic, QoS::AtLeastOnce, false, body.to_string())?;
                pending += 1;
            }
            wait_for(&mut conn, |p| matches!(p, Packet::PubAck(_)), pending)?;
            pending = 0;
            if let Some(last) = last {
                *acked = last.max(*acked);
                if let Err(e) = self
                    .hot
                    .set_cursor(&cursor_key(&self.settings.box_id), *acked)
                {
                    tracing::warn!(error = %e, "cannot save the mqtt cursor; it will republish");
                }
            } else if gap > *acked {
                *acked = gap;
            }
            if stopping && !full {
                client.publish(self.topic("status"), QoS::AtLeastOnce, true, "offline")?;
                wait_for(&mut conn, |p| matches!(p, Packet::PubAck(_)), 1)?;
                let _ = client.disconnect();
                let _ = conn.recv_timeout(Duration::from_millis(200));
                return Ok(());
            }
            if !full {
                // Caught up: keep the connection alive until the next look.
                let until = Instant::now() + POLL;
                while let Some(left) = until.checked_duration_since(Instant::now()) {
                    match conn.recv_timeout(left) {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Err(e.into()),
                        Err(_) => break,
                    }
                }
            }
        }
    }

    /// After a long outage, replays at most `max_backlog` changes.
    fn skip_old_backlog(
        &self,
        client: &Client,
        acked: &mut i64,
        pending: &mut usize,
    ) -> Result<(), MqttError> {
        let newest = self.reader.events(&EventQuery {
            limit: self.settings.max_backlog,
            ..Default::default()
        })?;
        let Some(oldest_kept) = newest.first().map(|e| e.revision) else {
            return Ok(());
        };
        if newest.len() == self.settings.max_backlog && oldest_kept > *acked + 1 {
            let body = json!({ "box_id": self.settings.box_id, "after": *acked, "skipped_to": oldest_kept - 1,
                "reason": "backlog over mqtt.max_backlog" });
            client.publish(self.topic("gap"), QoS::AtLeastOnce, false, body.to_string())?;
            *pending += 1;
            tracing::warn!(
                from = *acked,
                to = oldest_kept - 1,
                "mqtt backlog too long: skipping the oldest changes"
            );
            *acked = oldest_kept - 1;
        }
        Ok(())
    }
}

/// Drives the connection until `count` packets matching `want` arrived.
fn wait_for(
    conn: &mut Connection,
    want: impl Fn(&Packet) -> bool,
    count: usize,
) -> Result<(), MqttError> {
    let mut left = count;
    if left == 0 {
        return Ok(());
    }
    let deadline = Instant::now() + ACK_TIMEOUT;
    loop {
        let Some(wait) = deadline.checked_duration_since(Instant::now()) else {
            return Err(MqttError::Timeout(ACK_TIMEOUT));
        };
        match conn.recv_timeout(wait) {
            Ok(Ok(Event::Incoming(p))) if want(&p) => {
                left -= 1;
                if left == 0 {
                    return Ok(());
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(MqttError::Timeout(ACK_TIMEOUT)),
        }
    }
}
