//! Per-camera counters, shared between the source thread and readers.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

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
    pub frames_decoded: AtomicU64,
    pub frames_sampled: AtomicU64,
    /// Sampled frames evicted from the full queue before the model saw them.
    pub frames_dropped: AtomicU64,
    pub reconnects: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// The codec and where it decodes, e.g. `h264 (cuda)`.
    decoder: Mutex<Option<String>>,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct StatsSnapshot {
    pub state: SourceState,
    pub frames_decoded: u64,
    pub frames_sampled: u64,
    pub frames_dropped: u64,
    pub reconnects: u64,
    pub last_error: Option<String>,
    pub decoder: Option<String>,
}

impl SourceStats {
    pub fn set_state(&self, s: SourceState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    pub fn set_error(&self, e: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    }

    pub fn set_decoder(&self, d: String) {
        *self.decoder.lock().unwrap_or_else(|p| p.into_inner()) = Some(d);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            state: SourceState::from_u8(self.state.load(Ordering::Relaxed)),
            frames_decoded: self.frames_decoded.load(Ordering::Relaxed),
            frames_sampled: self.frames_sampled.load(Ordering::Relaxed),
            frames_dropped: self.frames_dropped.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            decoder: self
                .decoder
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}
