//! Per-camera counters, shared between the source thread and readers.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

/// What a source is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceState {
    Connecting,
    Streaming,
    /// Waiting before the next reconnect attempt.
    Retrying,
    Stopped,
}

impl SourceState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Connecting,
            1 => Self::Streaming,
            2 => Self::Retrying,
            _ => Self::Stopped,
        }
    }
}

#[derive(Debug, Default)]
pub struct SourceStats {
    state: AtomicU8,
    /// Coded frames (video packets) read from the input.
    pub frames_in: AtomicU64,
    pub frames_decoded: AtomicU64,
    /// Coded frames not decoded: non-reference frames skipped because the
    /// stream is much faster than `detect_fps`, and damaged packets.
    pub frames_skipped: AtomicU64,
    pub frames_sampled: AtomicU64,
    /// Sampled frames evicted from the full queue before the model saw them.
    pub frames_dropped: AtomicU64,
    pub reconnects: AtomicU64,
    /// Rates over the last second or so, as f64 bits.
    input_fps: AtomicU64,
    decoded_fps: AtomicU64,
    last_error: Mutex<Option<(String, SystemTime)>>,
    /// The codec and where it decodes, e.g. `h264 (cuda)`.
    decoder: Mutex<Option<String>>,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct StatsSnapshot {
    pub state: SourceState,
    /// Frames per second arriving from the camera.
    pub input_fps: f64,
    /// Frames per second out of the decoder.
    pub decoded_fps: f64,
    pub frames_in: u64,
    pub frames_decoded: u64,
    pub frames_skipped: u64,
    pub frames_sampled: u64,
    pub frames_dropped: u64,
    pub reconnects: u64,
    pub last_error: Option<String>,
    /// When `last_error` happened (RFC 3339, UTC): an old one is history,
    /// not a camera that is failing now.
    pub last_error_time: Option<String>,
    pub decoder: Option<String>,
}

impl SourceStats {
    pub fn set_state(&self, s: SourceState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    /// Publishes the current rates (the source thread measures them).
    pub fn set_rates(&self, input_fps: f64, decoded_fps: f64) {
        self.input_fps.store(input_fps.to_bits(), Ordering::Relaxed);
        self.decoded_fps
            .store(decoded_fps.to_bits(), Ordering::Relaxed);
    }

    pub fn set_error(&self, e: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some((e, SystemTime::now()));
    }

    pub fn set_decoder(&self, d: String) {
        *self.decoder.lock().unwrap_or_else(|p| p.into_inner()) = Some(d);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let last_error = self
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        StatsSnapshot {
            state: SourceState::from_u8(self.state.load(Ordering::Relaxed)),
            input_fps: round2(f64::from_bits(self.input_fps.load(Ordering::Relaxed))),
            decoded_fps: round2(f64::from_bits(self.decoded_fps.load(Ordering::Relaxed))),
            frames_in: self.frames_in.load(Ordering::Relaxed),
            frames_decoded: self.frames_decoded.load(Ordering::Relaxed),
            frames_skipped: self.frames_skipped.load(Ordering::Relaxed),
            frames_sampled: self.frames_sampled.load(Ordering::Relaxed),
            frames_dropped: self.frames_dropped.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            last_error: last_error.as_ref().map(|(e, _)| e.clone()),
            last_error_time: last_error
                .map(|(_, t)| humantime::format_rfc3339_millis(t).to_string()),
            decoder: self
                .decoder
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Turns running totals into per-second rates, once per window.
#[derive(Debug)]
pub struct RateMeter {
    since: Instant,
    at_start: (u64, u64),
}

impl RateMeter {
    const WINDOW: Duration = Duration::from_secs(1);

    pub fn new(now: Instant, totals: (u64, u64)) -> Self {
        Self {
            since: now,
            at_start: totals,
        }
    }

    /// Rates of the two totals over the window that just closed, if one did.
    pub fn observe(&mut self, now: Instant, totals: (u64, u64)) -> Option<(f64, f64)> {
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed < Self::WINDOW {
            return None;
        }
        let secs = elapsed.as_secs_f64();
        let rates = (
            totals.0.saturating_sub(self.at_start.0) as f64 / secs,
            totals.1.saturating_sub(self.at_start.1) as f64 / secs,
        );
        *self = Self::new(now, totals);
        Some(rates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_measured_over_whole_windows() {
        let t0 = Instant::now();
        let mut meter = RateMeter::new(t0, (0, 0));
        assert_eq!(
            meter.observe(t0 + Duration::from_millis(500), (15, 5)),
            None
        );
        let rates = meter
            .observe(t0 + Duration::from_secs(2), (60, 10))
            .unwrap();
        assert_eq!(rates, (30.0, 5.0));
        let rates = meter
            .observe(t0 + Duration::from_secs(3), (90, 10))
            .unwrap();
        assert_eq!(rates, (30.0, 0.0));
    }
}
