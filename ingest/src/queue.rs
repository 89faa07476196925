//! A bounded frame queue that drops the oldest frame when full.
//!
//! A camera never waits for a slow model: when the queue is full the oldest
//! frame goes (it is the least useful one for live analytics) and the drop is
//! counted against the camera it came from, so backlog never turns into
//! latency and every loss is visible.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

use crate::{Frame, SourceStats};

/// Creates a queue holding at most `capacity` frames.
pub fn frame_queue(capacity: usize) -> (FrameSender, FrameReceiver) {
    let (tx, rx) = bounded(capacity.max(1));
    (
        FrameSender {
            tx,
            evict: rx.clone(),
            owners: Arc::default(),
        },
        rx,
    )
}

/// Whose counters an evicted frame is charged to.
type Owners = Arc<RwLock<HashMap<Arc<str>, Arc<SourceStats>>>>;

pub type FrameReceiver = Receiver<Frame>;

/// The sending side; clone it for each camera.
#[derive(Clone)]
pub struct FrameSender {
    tx: Sender<Frame>,
    // A receiver of our own, used only to evict the oldest frame.
    evict: Receiver<Frame>,
    owners: Owners,
}

impl FrameSender {
    /// Charges frames of `camera` evicted from now on to `stats`.
    pub fn register(&self, camera: Arc<str>, stats: Arc<SourceStats>) {
        self.owners
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(camera, stats);
    }

    /// Queues `frame`, evicting the oldest frames while the queue is full.
    /// Returns how many were evicted. Never blocks.
    pub fn send(&self, mut frame: Frame) -> u64 {
        let mut dropped = 0;
        loop {
            match self.tx.try_send(frame) {
                // Our own eviction receiver keeps the channel connected, so
                // Disconnected cannot happen; treat it like success regardless.
                Ok(()) | Err(TrySendError::Disconnected(_)) => return dropped,
                Err(TrySendError::Full(back)) => {
                    frame = back;
                    if let Ok(old) = self.evict.try_recv() {
                        dropped += 1;
                        self.charge_drop(&old.camera_id);
                    }
                }
            }
        }
    }
}

impl FrameSender {
    fn charge_drop(&self, camera: &str) {
        let owners = self.owners.read().unwrap_or_else(|p| p.into_inner());
        if let Some(stats) = owners.get(camera) {
            stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn frame(seq: u64) -> Frame {
        frame_of("cam", seq)
    }

    fn frame_of(camera: &str, seq: u64) -> Frame {
        Frame {
            camera_id: camera.into(),
            seq,
            pts_us: 0,
            wall_time: SystemTime::now(),
            width: 1,
            height: 1,
            rgb: vec![0; 3],
        }
    }

    #[test]
    fn full_queue_drops_the_oldest_and_counts_it() {
        let (tx, rx) = frame_queue(2);
        assert_eq!(tx.send(frame(0)), 0);
        assert_eq!(tx.send(frame(1)), 0);
        assert_eq!(tx.send(frame(2)), 1);
        let seqs: Vec<u64> = rx.try_iter().map(|f| f.seq).collect();
        assert_eq!(seqs, vec![1, 2]);
    }

    #[test]
    fn a_drop_is_charged_to_the_camera_whose_frame_was_evicted() {
        let (tx, _rx) = frame_queue(1);
        let (a, b) = (
            Arc::new(SourceStats::default()),
            Arc::new(SourceStats::default()),
        );
        tx.register("a".into(), a.clone());
        tx.register("b".into(), b.clone());
        tx.send(frame_of("a", 0));
        tx.send(frame_of("b", 0)); // evicts a's frame
        assert_eq!(a.snapshot().frames_dropped, 1);
        assert_eq!(b.snapshot().frames_dropped, 0);
    }

    #[test]
    fn consumer_sees_the_end_once_every_sender_is_gone() {
        let (tx, rx) = frame_queue(2);
        let second = tx.clone();
        tx.send(frame(0));
        drop(tx);
        drop(second);
        assert_eq!(rx.recv().unwrap().seq, 0);
        assert!(rx.recv().is_err(), "disconnected after draining");
    }
}
