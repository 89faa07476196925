//! How long stored rows waited: from the decode of the frame they describe
//! (its wall time) to the commit that made them durable. This is the
//! appliance's end-to-end latency, read by `vigil bench`.

use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::WriteOp;

/// Frame-decoded-to-stored latencies in milliseconds, one sample per frame
/// with stored detections. A frame's events are sent before its detection
/// rows, so they are never stored later than this says.
pub struct StoreLag {
    hist: Mutex<Histogram<u64>>,
}

/// Percentiles of [`StoreLag`] since the last reset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LagSummary {
    pub frames: u64,
    pub p50_ms: u64,
    pub p95_ms: u64,
    pub p99_ms: u64,
    pub max_ms: u64,
}

impl Default for StoreLag {
    fn default() -> Self {
        Self {
            // Three significant digits, growing as needed: a few KiB.
            hist: Mutex::new(Histogram::new(3).expect("3 significant digits is valid")),
        }
    }
}

impl std::fmt::Debug for StoreLag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("StoreLag").field(&self.summary()).finish()
    }
}

impl StoreLag {
    /// Records the frames of `ops`, committed at `now_ms`.
    pub(crate) fn record_commit(&self, ops: &[WriteOp], now_ms: i64) {
        let mut hist = self.hist.lock().unwrap_or_else(|p| p.into_inner());
        for op in ops {
            let WriteOp::Detections(rows) = op else {
                continue;
            };
            // Rows of one frame are adjacent and share its wall time.
            let mut last = None;
            for r in rows {
                if last != Some(r.frame_wall_ms) {
                    last = Some(r.frame_wall_ms);
                    hist.saturating_record((now_ms - r.frame_wall_ms).max(0) as u64);
                }
            }
        }
    }

    pub fn summary(&self) -> LagSummary {
        let hist = self.hist.lock().unwrap_or_else(|p| p.into_inner());
        LagSummary {
            frames: hist.len(),
            p50_ms: hist.value_at_quantile(0.50),
            p95_ms: hist.value_at_quantile(0.95),
            p99_ms: hist.value_at_quantile(0.99),
            max_ms: hist.max(),
        }
    }

    /// Starts a new measurement window (e.g. after a warm-up).
    pub fn reset(&self) {
        self.hist.lock().unwrap_or_else(|p| p.into_inner()).reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DetectionRecord;

    fn row(frame_wall_ms: i64) -> DetectionRecord {
        DetectionRecord {
            camera: "c".into(),
            frame_seq: 0,
            frame_pts_us: 0,
            frame_wall_ms,
            label: "person".into(),
            score: 0.9,
            bbox: [0.0; 4],
        }
    }

    #[test]
    fn one_sample_per_frame_measured_to_the_commit() {
        let lag = StoreLag::default();
        // Frame at 1000 ms with two rows, frame at 1900 ms with one.
        let ops = vec![WriteOp::Detections(vec![row(1000), row(1000), row(1900)])];
        lag.record_commit(&ops, 2000);
        let s = lag.summary();
        assert_eq!(s.frames, 2);
        assert_eq!(s.p50_ms, 100);
        assert!((999..=1001).contains(&s.max_ms), "{s:?}");
        lag.reset();
        assert_eq!(lag.summary().frames, 0);
    }
}
