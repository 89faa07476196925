//! The analysis stage: batches frames from all cameras, runs the detector,
//! and hands results to storage and the live view.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use crossbeam_channel::Sender;
use vigil_inference::{Detection, Detector, ImageView};
use vigil_ingest::{Frame, FrameReceiver};
use vigil_storage::{DetectionRecord, HotStore, WriteOp};
use vigil_web_ui::{LatestDetections, LiveDetection, LiveFrames, Snapshot};

/// How often the detection rate is logged.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// What one camera keeps of the detector's output.
#[derive(Debug, Clone)]
pub struct CameraFilter {
    /// Empty: every label.
    pub labels: Vec<String>,
    pub min_score: f32,
}

impl CameraFilter {
    fn keeps(&self, d: &Detection) -> bool {
        d.score >= self.min_score && (self.labels.is_empty() || self.labels.contains(&d.label))
    }
}

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
}

pub struct Analyser {
    pub detector: Box<dyn Detector>,
    pub filters: HashMap<String, CameraFilter>,
    pub policy: BatchPolicy,
    pub store: Sender<WriteOp>,
    /// The latest detections of each camera, kept across restarts.
    pub hot: Arc<HotStore>,
    pub live: Arc<LiveFrames>,
    pub stats: Arc<AnalysisStats>,
}

impl Analyser {
    /// Runs until every frame sender is gone and the queue is drained.
    pub fn run(self, frames: FrameReceiver) {
        let mut report = Reporter::new();
        while let Some(batch) = next_batch(&frames, self.policy) {
            self.analyse(batch);
            report.maybe_log(&self.stats);
        }
        tracing::info!("analysis stopped: queue drained");
    }

    fn analyse(&self, batch: Vec<Frame>) {
        let views: Result<Vec<ImageView>, _> = batch
            .iter()
            .map(|f| ImageView::new(f.width as usize, f.height as usize, &f.rgb))
            .collect();
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
        self.stats
            .inference_us
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);

        let mut rows = Vec::new();
        for (frame, detections) in batch.into_iter().zip(results) {
            let kept: Vec<Detection> = match self.filters.get(&*frame.camera_id) {
                Some(f) => detections.into_iter().filter(|d| f.keeps(d)).collect(),
                None => detections,
            };
            let wall_ms = frame
                .wall_time
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            rows.extend(kept.iter().map(|d| DetectionRecord {
                camera: frame.camera_id.to_string(),
                frame_seq: frame.seq,
                frame_pts_us: frame.pts_us,
                frame_wall_ms: wall_ms,
                label: d.label.clone(),
                score: d.score,
                bbox: d.bbox.into(),
            }));
            let live: Vec<LiveDetection> = kept
                .into_iter()
                .map(|d| LiveDetection {
                    label: d.label,
                    score: d.score,
                    bbox: d.bbox.into(),
                })
                .collect();
            let latest = LatestDetections {
                seq: frame.seq,
                frame_wall_ms: wall_ms,
                width: frame.width,
                height: frame.height,
                detections: live.clone(),
            };
            let bytes = serde_json::to_vec(&latest).unwrap_or_default();
            if let Err(e) = self.hot.put_latest(&frame.camera_id, &bytes) {
                tracing::warn!(error = %e, "hot state not updated");
            }
            self.live.publish(
                &frame.camera_id,
                Snapshot::new(
                    frame.seq,
                    wall_ms,
                    frame.width,
                    frame.height,
                    frame.rgb,
                    live,
                ),
            );
        }
        if !rows.is_empty() && self.store.send(WriteOp::Detections(rows)).is_err() {
            tracing::error!("storage writer is gone; detections not stored");
        }
    }
}

/// Waits for one frame, then up to `max_wait` for more, up to `max_batch`.
/// `None` once the queue is closed and empty.
fn next_batch(frames: &FrameReceiver, policy: BatchPolicy) -> Option<Vec<Frame>> {
    let first = frames.recv().ok()?;
    let deadline = Instant::now() + policy.max_wait;
    let mut batch = vec![first];
    while batch.len() < policy.max_batch {
        match frames.recv_deadline(deadline) {
            Ok(f) => batch.push(f),
            Err(_) => break,
        }
    }
    Some(batch)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;
    use vigil_ingest::frame_queue;

    fn frame(seq: u64) -> Frame {
        Frame {
            camera_id: "c".into(),
            seq,
            pts_us: 0,
            wall_time: SystemTime::now(),
            width: 1,
            height: 1,
            rgb: vec![0; 3],
        }
    }

    #[test]
    fn batches_fill_up_to_the_limit_then_drain_and_end() {
        let (tx, rx) = frame_queue(16);
        for i in 0..5 {
            tx.send(frame(i));
        }
        drop(tx);
        let policy = BatchPolicy {
            max_batch: 2,
            max_wait: Duration::from_millis(1),
        };
        let sizes: Vec<usize> = std::iter::from_fn(|| next_batch(&rx, policy))
            .map(|b| b.len())
            .collect();
        assert_eq!(sizes, vec![2, 2, 1]);
    }

    #[test]
    fn filter_keeps_listed_labels_above_the_score() {
        let f = CameraFilter {
            labels: vec!["person".into()],
            min_score: 0.5,
        };
        let d = |label: &str, score| Detection {
            label: label.into(),
            score,
            bbox: [0.0; 4].into(),
        };
        assert!(f.keeps(&d("person", 0.6)));
        assert!(!f.keeps(&d("person", 0.4)));
        assert!(!f.keeps(&d("car", 0.9)));
    }
}
