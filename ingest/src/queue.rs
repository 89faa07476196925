//! A bounded frame queue that drops the oldest frame when full.
//!
//! A camera never waits for a slow model: when the queue is full the oldest
//! frame goes (it is the least useful one for live analytics) and the drop is
//! counted, so backlog never turns into latency.

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

use crate::Frame;

/// Creates a queue holding at most `capacity` frames.
pub fn frame_queue(capacity: usize) -> (FrameSender, FrameReceiver) {
    let (tx, rx) = bounded(capacity.max(1));
    (
        FrameSender {
            tx,
            evict: rx.clone(),
        },
        rx,
    )
}

pub type FrameReceiver = Receiver<Frame>;

/// The sending side; clone it for each camera.
#[derive(Clone)]
pub struct FrameSender {
    tx: Sender<Frame>,
    // A receiver of our own, used only to evict the oldest frame.
    evict: Receiver<Frame>,
}

impl FrameSender {
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
                    if self.evict.try_recv().is_ok() {
                        dropped += 1;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn frame(seq: u64) -> Frame {
        Frame {
            camera_id: "cam".into(),
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
