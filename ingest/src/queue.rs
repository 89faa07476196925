//! Bounded per-camera frame queues and the cross-camera batcher.
//!
//! Each camera has its own small lane. A camera never waits for a slow
//! model: when its lane is full its oldest frame goes (the least useful one
//! for live analytics) and the sender counts the drop. Lanes are what make
//! this fair: a 30 fps camera can only evict its own frames, never starve a
//! 1 fps one. Memory is bounded by lanes × capacity, whatever the load.
//!
//! The consumer takes batches: it waits for one frame, then up to
//! `max_wait` for more, up to `max_batch`, taking lanes in turn (one frame
//! per camera per round, starting after the camera served last), so one
//! model call serves many cameras and none is favoured.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::Frame;

/// Creates a queue that holds at most `per_camera` frames of each camera.
pub fn frame_queue(per_camera: usize) -> (FrameSender, FrameReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            lanes: Vec::new(),
            next_lane: 0,
            senders: 1,
            closed: false,
        }),
        ready: Condvar::new(),
        room: Condvar::new(),
        per_camera: per_camera.max(1),
    });
    (
        FrameSender {
            shared: shared.clone(),
        },
        FrameReceiver { shared },
    )
}

struct Shared {
    state: Mutex<State>,
    /// A frame was queued.
    ready: Condvar,
    /// A frame was taken: a waiting sender may have room.
    room: Condvar,
    per_camera: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct State {
    lanes: Vec<Lane>,
    /// The lane the next pop looks at first (round robin).
    next_lane: usize,
    senders: usize,
    /// Set by [`QueueCloser::close`]: the queue ends once drained, whatever
    /// senders are left, and takes no more frames.
    closed: bool,
}

struct Lane {
    camera: Arc<str>,
    frames: VecDeque<Frame>,
}

impl State {
    fn is_empty(&self) -> bool {
        self.lanes.iter().all(|l| l.frames.is_empty())
    }

    /// The oldest frame of the next camera in turn that has one.
    fn pop_fair(&mut self) -> Option<Frame> {
        let n = self.lanes.len();
        for i in 0..n {
            let lane = (self.next_lane + i) % n;
            if let Some(frame) = self.lanes[lane].frames.pop_front() {
                self.next_lane = (lane + 1) % n;
                return Some(frame);
            }
        }
        None
    }
}

/// The sending side; clone it for each camera. The queue ends for the
/// receiver once every sender is gone and the lanes are empty.
pub struct FrameSender {
    shared: Arc<Shared>,
}

impl Clone for FrameSender {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for FrameSender {
    fn drop(&mut self) {
        self.shared.lock().senders -= 1;
        self.shared.ready.notify_all();
    }
}

impl FrameSender {
    /// Queues `frame` in its camera's lane, evicting that camera's oldest
    /// frames while the lane is full. Returns how many were evicted, for the
    /// caller to count. Never blocks.
    pub fn send(&self, frame: Frame) -> u64 {
        let mut state = self.shared.lock();
        if state.closed {
            return 1;
        }
        let index = match state.lanes.iter().position(|l| l.camera == frame.camera_id) {
            Some(i) => i,
            None => {
                state.lanes.push(Lane {
                    camera: frame.camera_id.clone(),
                    frames: VecDeque::with_capacity(self.shared.per_camera),
                });
                state.lanes.len() - 1
            }
        };
        let lane = &mut state.lanes[index].frames;
        let mut dropped = 0;
        while lane.len() >= self.shared.per_camera {
            lane.pop_front();
            dropped += 1;
        }
        lane.push_back(frame);
        drop(state);
        self.shared.ready.notify_one();
        dropped
    }
}

impl FrameSender {
    /// Like [`Self::send`], but while the camera's lane is full waits for
    /// the consumer to take a frame, until `stop` is set (then it evicts as
    /// `send` does). For inputs that may wait: a file read as fast as
    /// possible is analysed whole instead of mostly dropped.
    pub fn send_waiting(&self, frame: Frame, stop: &AtomicBool) -> u64 {
        let mut state = self.shared.lock();
        while !stop.load(Ordering::Relaxed)
            && !state.closed
            && state
                .lanes
                .iter()
                .any(|l| l.camera == frame.camera_id && l.frames.len() >= self.shared.per_camera)
        {
            // Timed, so a stop request is seen even if no frame is taken.
            state = self
                .shared
                .room
                .wait_timeout(state, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        drop(state);
        self.send(frame)
    }
}

/// Ends a queue without waiting for its senders: a source thread stuck in
/// the operating system (a device or file that never answers) keeps its
/// sender, and must not keep the consumer, and with it a stop or a reload,
/// waiting forever.
pub struct QueueCloser {
    shared: Arc<Shared>,
}

impl QueueCloser {
    /// The receiver gets what is queued, then [`RecvError::Disconnected`];
    /// frames sent from now on are dropped (and counted as drops).
    pub fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_all();
        self.shared.room.notify_all();
    }
}

/// Why [`FrameReceiver::recv_deadline`] returned no frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    #[error("no frame before the deadline")]
    Timeout,
    #[error("every sender is gone and the queue is empty")]
    Disconnected,
}

/// The consuming side (one consumer: the analysis stage).
pub struct FrameReceiver {
    shared: Arc<Shared>,
}

impl FrameReceiver {
    /// Waits for the next frame (fairly across cameras).
    pub fn recv(&self) -> Result<Frame, RecvError> {
        self.wait_for_frame(None)
    }

    /// Like [`Self::recv`], giving up at `deadline`.
    pub fn recv_deadline(&self, deadline: Instant) -> Result<Frame, RecvError> {
        self.wait_for_frame(Some(deadline))
    }

    /// Like [`Self::recv`], waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Frame, RecvError> {
        self.wait_for_frame(Some(Instant::now() + timeout))
    }

    /// A frame if one is queued now.
    pub fn try_recv(&self) -> Option<Frame> {
        let frame = self.shared.lock().pop_fair();
        if frame.is_some() {
            self.shared.room.notify_all();
        }
        frame
    }

    /// Every frame queued now, fairly interleaved.
    pub fn try_iter(&self) -> impl Iterator<Item = Frame> + '_ {
        std::iter::from_fn(|| self.try_recv())
    }

    /// Frames queued now, over all cameras.
    pub fn len(&self) -> usize {
        self.shared
            .lock()
            .lanes
            .iter()
            .map(|l| l.frames.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.shared.lock().is_empty()
    }

    /// A handle that ends the queue from elsewhere (the receiver itself
    /// usually lives in the consumer's thread).
    pub fn closer(&self) -> QueueCloser {
        QueueCloser {
            shared: self.shared.clone(),
        }
    }

    /// Waits for one frame, then up to `max_wait` for more, up to
    /// `max_batch`, taking cameras in turn. `None` once the queue has ended.
    pub fn next_batch(&self, max_batch: usize, max_wait: Duration) -> Option<Vec<Frame>> {
        let first = self.recv().ok()?;
        Some(self.fill_batch(first, max_batch, max_wait))
    }

    /// Like [`Self::next_batch`], giving up after `idle` without a frame
    /// ([`RecvError::Timeout`]), so the consumer can see to quiet cameras.
    pub fn next_batch_timeout(
        &self,
        max_batch: usize,
        max_wait: Duration,
        idle: Duration,
    ) -> Result<Vec<Frame>, RecvError> {
        let first = self.recv_timeout(idle)?;
        Ok(self.fill_batch(first, max_batch, max_wait))
    }

    fn fill_batch(&self, first: Frame, max_batch: usize, max_wait: Duration) -> Vec<Frame> {
        let deadline = Instant::now() + max_wait;
        let mut batch = vec![first];
        while batch.len() < max_batch.max(1) {
            match self.recv_deadline(deadline) {
                Ok(frame) => batch.push(frame),
                Err(_) => break,
            }
        }
        batch
    }

    fn wait_for_frame(&self, deadline: Option<Instant>) -> Result<Frame, RecvError> {
        let mut state = self.shared.lock();
        loop {
            if let Some(frame) = state.pop_fair() {
                drop(state);
                self.shared.room.notify_all();
                return Ok(frame);
            }
            if state.senders == 0 || state.closed {
                return Err(RecvError::Disconnected);
            }
            state = match deadline {
                None => self
                    .shared
                    .ready
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(RecvError::Timeout);
                    }
                    self.shared
                        .ready
                        .wait_timeout(state, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn frame_of(camera: &str, seq: u64) -> Frame {
        Frame {
            camera_id: camera.into(),
            seq,
            pts_us: 0,
            wall_time: SystemTime::now(),
            width: 1,
            height: 1,
            pixels: crate::Pixels::Rgb(vec![0; 3]),
        }
    }

    fn seqs(frames: impl Iterator<Item = Frame>) -> Vec<(String, u64)> {
        frames.map(|f| (f.camera_id.to_string(), f.seq)).collect()
    }

    #[test]
    fn a_waiting_sender_waits_for_room_instead_of_dropping_until_stopped() {
        let (tx, rx) = frame_queue(1);
        let stop = Arc::new(AtomicBool::new(false));
        assert_eq!(tx.send(frame_of("a", 0)), 0);
        let (tx2, stop2) = (tx.clone(), stop.clone());
        let waiting = std::thread::spawn(move || tx2.send_waiting(frame_of("a", 1), &stop2));
        std::thread::sleep(Duration::from_millis(150));
        assert!(!waiting.is_finished(), "the lane is full: it waits");
        assert_eq!(rx.recv().unwrap().seq, 0);
        assert_eq!(waiting.join().unwrap(), 0, "nothing dropped");
        assert_eq!(rx.recv().unwrap().seq, 1);

        // Once stopping, a full lane evicts as `send` does.
        assert_eq!(tx.send(frame_of("a", 2)), 0);
        stop.store(true, Ordering::Relaxed);
        assert_eq!(tx.send_waiting(frame_of("a", 3), &stop), 1);
        assert_eq!(rx.recv().unwrap().seq, 3);
    }

    #[test]
    fn a_full_lane_drops_its_own_oldest_frame_and_says_so() {
        let (tx, rx) = frame_queue(2);
        assert_eq!(tx.send(frame_of("a", 0)), 0);
        assert_eq!(tx.send(frame_of("a", 1)), 0);
        assert_eq!(tx.send(frame_of("a", 2)), 1);
        let got = seqs(rx.try_iter());
        assert_eq!(got, vec![("a".into(), 1), ("a".into(), 2)]);
    }

    #[test]
    fn a_busy_camera_cannot_evict_or_starve_a_quiet_one() {
        let (tx, rx) = frame_queue(2);
        tx.send(frame_of("quiet", 0));
        for seq in 0..50 {
            tx.send(frame_of("busy", seq));
        }
        assert_eq!(rx.len(), 3, "memory is bounded per camera");
        let batch = rx.next_batch(2, Duration::ZERO).unwrap();
        let cameras: Vec<&str> = batch.iter().map(|f| &*f.camera_id).collect();
        assert!(cameras.contains(&"quiet"), "{cameras:?}");
    }

    #[test]
    fn batches_take_cameras_in_turn_and_keep_each_cameras_order() {
        let (tx, rx) = frame_queue(4);
        for seq in 0..3 {
            tx.send(frame_of("a", seq));
        }
        tx.send(frame_of("b", 0));
        tx.send(frame_of("c", 0));
        let got = seqs(rx.try_iter());
        let expected = [("a", 0), ("b", 0), ("c", 0), ("a", 1), ("a", 2)];
        let expected: Vec<(String, u64)> =
            expected.iter().map(|(c, s)| (c.to_string(), *s)).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn batches_fill_up_to_the_limit_then_drain_and_end() {
        let (tx, rx) = frame_queue(16);
        for i in 0..5 {
            tx.send(frame_of("c", i));
        }
        drop(tx);
        let sizes: Vec<usize> = std::iter::from_fn(|| rx.next_batch(2, Duration::from_millis(1)))
            .map(|b| b.len())
            .collect();
        assert_eq!(sizes, vec![2, 2, 1]);
    }

    #[test]
    fn the_consumer_sees_the_end_once_every_sender_is_gone() {
        let (tx, rx) = frame_queue(2);
        let second = tx.clone();
        tx.send(frame_of("a", 0));
        drop(tx);
        assert_eq!(
            rx.recv_deadline(Instant::now()).map(|f| f.seq),
            Ok(0),
            "queued frames are still delivered"
        );
        assert_eq!(
            rx.recv_deadline(Instant::now() + Duration::from_millis(5))
                .map(|f| f.seq),
            Err(RecvError::Timeout),
            "one sender is still alive"
        );
        drop(second);
        assert_eq!(rx.recv().map(|f| f.seq), Err(RecvError::Disconnected));
    }

    #[test]
    fn a_closed_queue_ends_after_draining_though_a_sender_lives_on() {
        let (tx, rx) = frame_queue(2);
        tx.send(frame_of("a", 0));
        let closer = rx.closer();
        let consumer = std::thread::spawn(move || {
            std::iter::from_fn(|| rx.recv().ok())
                .map(|f| f.seq)
                .collect::<Vec<_>>()
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(!consumer.is_finished(), "a live sender keeps it open");
        closer.close();
        assert_eq!(consumer.join().unwrap(), vec![0], "what was queued is kept");
        assert_eq!(tx.send(frame_of("a", 1)), 1, "later frames are dropped");
        let stop = AtomicBool::new(false);
        assert_eq!(
            tx.send_waiting(frame_of("a", 2), &stop),
            1,
            "and never wait"
        );
    }
}
