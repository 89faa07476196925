//! The analysis stage: batches frames from all cameras, runs the detector,
//! runs each camera's analytics, and hands results to storage and the live
//! view.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Sender;
use vigil::frame_view::frame_view;
use vigil_analytics::{CameraAnalytics, CountKey, Detected, EventChange, FrameAnalysis, FrameInfo};
use vigil_inference::{Detection, Detector, ImageView};
use vigil_ingest::{Frame, FrameReceiver, Pixels, RecvError};
use vigil_storage::{DetectionRecord, EventRecord, HotStore, MinuteCount, WriteOp};
use vigil_web_ui::{FramePixels, LatestDetections, LiveDetection, LiveFrames, Snapshot};

use crate::snapshot::event_snapshot;

/// How often the detection rate is logged.
const REPORT_EVERY: Duration = Duration::from_secs(10);
/// How often cameras that send nothing are looked at.
const QUIET_CHECK_EVERY: Duration = Duration::from_secs(1);
/// A camera's events close once it has sent nothing for its tracks' life
/// plus this (frames may wait this long in the queue and a slow batch).
const QUIET_MARGIN: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    pub max_batch: usize,
    pub max_wait: Duration,
}

#[derive(Debug, Default)]
pub struct AnalysisStats {
    pub frames: AtomicU64,
    pub batches: AtomicU64,
    pub inference_us: AtomicU64,
    pub errors: AtomicU64,
    pub events_opened: AtomicU64,
    pub line_crossings: AtomicU64,
    /// Detection rows handed to storage (what a clean stop must have stored).
    pub detection_rows: AtomicU64,
    /// Frames left waiting in the queue when the last batch was taken.
    pub queued_frames: AtomicU64,
    /// When the batch being analysed now started: the watchdog's view.
    pub busy_since: std::sync::Mutex<Option<Instant>>,
}

impl AnalysisStats {
    pub fn analysing_for(&self) -> Option<std::time::Duration> {
        self.busy_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|t| t.elapsed())
    }

    fn set_busy(&self, since: Option<Instant>) {
        *self.busy_since.lock().unwrap_or_else(|p| p.into_inner()) = since;
    }
}

pub struct Analyser {
    pub detector: Box<dyn Detector>,
    /// Analytics of each camera, by camera id.
    pub cameras: HashMap<String, CameraAnalytics>,
    /// Makes event ids unique across restarts: the run's start time.
    pub run_id: String,
    pub policy: BatchPolicy,
    pub store: Sender<WriteOp>,
    /// The latest detections of each camera, kept across restarts.
    pub hot: Arc<HotStore>,
    pub live: Arc<LiveFrames>,
    pub stats: Arc<AnalysisStats>,
    /// Model time per batch, for the metrics' histogram.
    pub latency: vigil_web_ui::BatchLatency,
}

impl Analyser {
    /// Runs until every frame sender is gone and the queue is drained.
    pub fn run(mut self, frames: FrameReceiver) {
        let mut report = Reporter::new();
        let mut snapshots = SnapshotKeys::default();
        let mut quiet_checked = Instant::now();
        loop {
            let policy = self.policy;
            match frames.next_batch_timeout(policy.max_batch, policy.max_wait, QUIET_CHECK_EVERY) {
                Ok(batch) => {
                    self.stats
                        .queued_frames
                        .store(frames.len() as u64, Ordering::Relaxed);
                    self.stats.set_busy(Some(Instant::now()));
                    self.analyse(batch, &mut snapshots);
                    self.stats.set_busy(None);
                    report.maybe_log(&self.stats);
                }
                Err(RecvError::Timeout) => {}
                Err(RecvError::Disconnected) => break,
            }
            if quiet_checked.elapsed() >= QUIET_CHECK_EVERY {
                quiet_checked = Instant::now();
                self.close_quiet_cameras(&mut snapshots);
            }
        }
        // Objects still in view when the appliance stops: their events end
        // where they were last seen rather than staying open forever.
        let mut cameras: Vec<_> = self.cameras.keys().cloned().collect();
        cameras.sort();
        for camera in cameras {
            let closed = self.cameras.get_mut(&camera).map(|a| a.finish());
            self.store_closed(&camera, closed.unwrap_or_default(), &mut snapshots);
        }
        tracing::info!(
            frames = self.stats.frames.load(Ordering::Relaxed),
            detection_rows = self.stats.detection_rows.load(Ordering::Relaxed),
            "analysis stopped: queue drained, open events closed"
        );
    }

    /// Ends the events of cameras that sent nothing for well over a
    /// track's life (down, reconnecting, a file that ended): they would
    /// else stay open until the camera comes back, or for ever.
    fn close_quiet_cameras(&mut self, snapshots: &mut SnapshotKeys) {
        let now_ms = unix_ms(SystemTime::now());
        // The margin covers frames still in the queue or in a slow batch.
        let before = now_ms - QUIET_MARGIN.as_millis() as i64;
        let closed: Vec<(String, Vec<EventChange>)> = self
            .cameras
            .iter_mut()
            .map(|(camera, analytics)| (camera.clone(), analytics.expire(before)))
            .filter(|(_, changes)| !changes.is_empty())
            .collect();
        for (camera, changes) in closed {
            tracing::info!(
                camera = %camera,
                events = changes.len(),
                "no frames for a while: its open events are closed"
            );
            self.store_closed(&camera, changes, snapshots);
        }
    }

    fn store_closed(&self, camera: &str, changes: Vec<EventChange>, snapshots: &mut SnapshotKeys) {
        for change in changes {
            let record = event_record(
                &self.run_id,
                camera,
                &change,
                snapshots.current(camera, &change),
            );
            snapshots.forget(camera, change.event.track_id);
            self.store.send(WriteOp::Event(record)).ok();
        }
    }

    fn analyse(&mut self, batch: Vec<Frame>, snapshots: &mut SnapshotKeys) {
        let views: Result<Vec<ImageView>, _> = batch.iter().map(frame_view).collect();
        let started = Instant::now();
        let results = views.and_then(|v| self.detector.detect(&v));
        let elapsed = started.elapsed();
        let results = match results {
            Ok(r) => r,
            Err(e) => {
                // One bad batch must not stop the appliance: count it and go on.
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, frames = batch.len(), "detection failed");
                return;
            }
        };
        self.stats
            .frames
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.latency.observe(elapsed);
        self.stats
            .inference_us
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);

        let mut rows = Vec::new();
        let mut counts: BTreeMap<(String, CountKey), i64> = BTreeMap::new();
        for (frame, detections) in batch.into_iter().zip(results) {
            let wall_ms = unix_ms(frame.wall_time);
            let Some(analytics) = self.cameras.get_mut(&*frame.camera_id) else {
                continue;
            };
            let detected: Vec<Detected> = detections
                .iter()
                .map(|d| Detected {
                    label: &d.label,
                    score: d.score,
                    bbox: d.bbox.into(),
                })
                .collect();
            let info = FrameInfo {
                width: frame.width,
                height: frame.height,
                wall_ms,
            };
            let analysis = analytics.process(info, &detected);
            let camera = frame.camera_id.to_string();

            rows.extend(analysis.kept.iter().map(|&i| DetectionRecord {
                camera: camera.clone(),
                frame_seq: frame.seq,
                frame_pts_us: frame.pts_us,
                frame_wall_ms: wall_ms,
                label: detections[i].label.clone(),
                score: detections[i].score,
                bbox: detections[i].bbox.into(),
            }));
            // The picture, fetched from the GPU at most once, if an event needs it.
            let mut picture = None;
            for change in &analysis.events {
                let snapshot = if change.new_best {
                    let jpeg = picture
                        .get_or_insert_with(|| host_picture(&frame))
                        .as_deref()
                        .and_then(|rgb| {
                            event_snapshot(rgb, frame.width, frame.height, change.event.best_box)
                        });
                    snapshots.replace(&self.hot, &camera, change.event.track_id, jpeg)
                } else {
                    snapshots.current(&camera, change)
                };
                if change.phase == vigil_analytics::Phase::Opened {
                    self.stats.events_opened.fetch_add(1, Ordering::Relaxed);
                }
                let record = event_record(&self.run_id, &camera, change, snapshot);
                if self.store.send(WriteOp::Event(record)).is_err() {
                    tracing::error!("storage writer is gone; event not stored");
                }
                if change.phase == vigil_analytics::Phase::Closed {
                    snapshots.forget(&camera, change.event.track_id);
                }
            }
            for c in &analysis.crossings {
                self.stats.line_crossings.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    camera = %camera,
                    line = %c.line,
                    direction = c.direction.as_str(),
                    label = %c.label,
                    track = c.track_id,
                    "line crossed"
                );
            }
            for key in &analysis.counts {
                *counts.entry((camera.clone(), key.clone())).or_default() += 1;
            }
            let live = live_detections(&detections, &analysis);
            let latest = LatestDetections {
                seq: frame.seq,
                frame_wall_ms: wall_ms,
                width: frame.width,
                height: frame.height,
                detections: live.clone(),
            };
            let bytes = serde_json::to_vec(&latest).unwrap_or_default();
            if let Err(e) = self.hot.put_latest(&camera, &bytes) {
                tracing::warn!(error = %e, "hot state not updated");
            }
            let fetched = match picture.flatten() {
                Some(std::borrow::Cow::Owned(rgb)) => Some(rgb),
                _ => None,
            };
            let (seq, width, height) = (frame.seq, frame.width, frame.height);
            let pixels = live_pixels(frame.pixels, fetched);
            self.live.publish(
                &camera,
                Snapshot::new(seq, wall_ms, width, height, pixels, live),
            );
        }
        let count = rows.len() as u64;
        if !rows.is_empty() {
            if self.store.send(WriteOp::Detections(rows)).is_ok() {
                self.stats
                    .detection_rows
                    .fetch_add(count, Ordering::Relaxed);
            } else {
                tracing::error!("storage writer is gone; detections not stored");
            }
        }
        if !counts.is_empty() {
            let counts = counts
                .into_iter()
                .map(|((camera, k), count)| MinuteCount {
                    camera,
                    minute_ms: k.minute_ms,
                    label: k.label,
                    zone: k.zone,
                    count,
                })
                .collect();
            self.store.send(WriteOp::Counts(counts)).ok();
        }
    }
}

/// Milliseconds since the Unix epoch (0 for a clock before it).
fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `frame`'s picture as RGB, fetched from the GPU if it is there; `None`
/// (logged) if that fails: the event goes on without a snapshot.
fn host_picture(frame: &Frame) -> Option<std::borrow::Cow<'_, [u8]>> {
    frame
        .rgb()
        .inspect_err(|e| tracing::warn!(error = %e, "no picture for the snapshot"))
        .ok()
}

/// The live view's picture: the frame's RGB, the copy already fetched for
/// a snapshot, or a fetch from the GPU when a browser asks.
fn live_pixels(pixels: Pixels, fetched: Option<Vec<u8>>) -> FramePixels {
    match (pixels, fetched) {
        (Pixels::Rgb(rgb), _) | (Pixels::Gpu(_), Some(rgb)) => FramePixels::Rgb(rgb),
        (Pixels::Gpu(gpu), None) => FramePixels::OnDemand(Box::new(move || {
            gpu.to_rgb()
                .inspect_err(|e| tracing::warn!(error = %e, "no picture for the live view"))
                .ok()
        })),
    }
}

/// What the live view shows: detections worth keeping, and those that only
/// carry a track on (low score), each with its track id when it has one.
fn live_detections(detections: &[Detection], analysis: &FrameAnalysis) -> Vec<LiveDetection> {
    let track_of = |i: usize| {
        analysis
            .tracks
            .iter()
            .find(|t| t.observation == i)
            .map(|t| t.track_id)
    };
    let mut shown: Vec<usize> = analysis.kept.clone();
    shown.extend(analysis.tracks.iter().map(|t| t.observation));
    shown.sort_unstable();
    shown.dedup();
    shown
        .into_iter()
        .map(|i| LiveDetection {
            label: detections[i].label.clone(),
            score: detections[i].score,
            bbox: detections[i].bbox.into(),
            track: track_of(i),
        })
        .collect()
}

fn event_record(
    run_id: &str,
    camera: &str,
    change: &EventChange,
    snapshot: Option<u64>,
) -> EventRecord {
    let e = &change.event;
    EventRecord {
        uid: format!("{run_id}-{camera}-{}", e.track_id),
        camera: camera.to_string(),
        track_id: e.track_id,
        label: e.label.clone(),
        start_ms: e.start_ms,
        end_ms: e.end_ms,
        max_score: e.max_score,
        best_box: e.best_box,
        zones: e.zones.clone(),
        snapshot,
    }
}

/// The snapshot key of each live event. A better sighting replaces the
/// snapshot and gives the old one's space back.
#[derive(Default)]
struct SnapshotKeys(HashMap<(String, u64), u64>);

impl SnapshotKeys {
    fn current(&self, camera: &str, change: &EventChange) -> Option<u64> {
        self.0
            .get(&(camera.to_string(), change.event.track_id))
            .copied()
    }

    fn replace(
        &mut self,
        hot: &HotStore,
        camera: &str,
        track: u64,
        jpeg: Option<Vec<u8>>,
    ) -> Option<u64> {
        let slot = (camera.to_string(), track);
        let Some(jpeg) = jpeg else {
            return self.0.get(&slot).copied();
        };
        match hot.put_snapshot(&jpeg) {
            Ok(key) => {
                if let Some(old) = self.0.insert(slot, key) {
                    if let Err(e) = hot.remove_snapshot(old) {
                        tracing::warn!(error = %e, "old snapshot not removed");
                    }
                }
                Some(key)
            }
            Err(e) => {
                tracing::warn!(error = %e, "event snapshot not stored");
                self.0.get(&slot).copied()
            }
        }
    }

    fn forget(&mut self, camera: &str, track: u64) {
        self.0.remove(&(camera.to_string(), track));
    }
}

struct Reporter {
    since: Instant,
    frames: u64,
    inference_us: u64,
}

impl Reporter {
    fn new() -> Self {
        Self {
            since: Instant::now(),
            frames: 0,
            inference_us: 0,
        }
    }

    fn maybe_log(&mut self, stats: &AnalysisStats) {
        let elapsed = self.since.elapsed();
        if elapsed < REPORT_EVERY {
            return;
        }
        let frames = stats.frames.load(Ordering::Relaxed);
        let us = stats.inference_us.load(Ordering::Relaxed);
        let (df, dus) = (frames - self.frames, us - self.inference_us);
        tracing::info!(
            frames_per_s = format!("{:.1}", df as f64 / elapsed.as_secs_f64()),
            ms_per_frame = format!("{:.1}", dus as f64 / 1e3 / df.max(1) as f64),
            "detector throughput"
        );
        *self = Self {
            since: Instant::now(),
            frames,
            inference_us: us,
        };
    }
}
