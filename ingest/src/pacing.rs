//! Timing decisions, kept free of I/O so they can be tested alone.

use std::time::{Duration, Instant};

/// Picks frames at `fps` by stream time: a frame is taken when its timestamp
/// reaches the next sampling instant. A gap in the stream (or a slow start)
/// restarts the schedule rather than bursting to catch up.
#[derive(Debug)]
pub struct Sampler {
    interval_us: i64,
    next_us: Option<i64>,
}

impl Sampler {
    pub fn new(fps: f64) -> Self {
        Self {
            interval_us: (1e6 / fps.max(1e-3)).round() as i64,
            next_us: None,
        }
    }

    /// Whether the frame at stream time `pts_us` is sampled.
    pub fn take(&mut self, pts_us: i64) -> bool {
        match self.next_us {
            Some(next) if pts_us < next => false,
            Some(next) if pts_us < next + self.interval_us => {
                self.next_us = Some(next + self.interval_us);
                true
            }
            _ => {
                self.next_us = Some(pts_us + self.interval_us);
                true
            }
        }
    }
}

/// Plays a file at real time: frame at stream time `t` is released at
/// `start + t`. A source that falls behind is not made to wait.
#[derive(Debug)]
pub struct Pacer {
    start: Instant,
    first_pts_us: Option<i64>,
}

impl Pacer {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            first_pts_us: None,
        }
    }

    /// How long to wait before releasing the frame at `pts_us`.
    pub fn delay(&mut self, pts_us: i64, now: Instant) -> Duration {
        let first = *self.first_pts_us.get_or_insert(pts_us);
        let due = self.start + Duration::from_micros((pts_us - first).max(0) as u64);
        due.saturating_duration_since(now)
    }
}

impl Default for Pacer {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_takes_frames_at_the_requested_rate() {
        // 25 fps stream sampled at 5 fps: every fifth frame.
        let mut s = Sampler::new(5.0);
        let taken: Vec<i64> = (0..25)
            .map(|i| i * 40_000)
            .filter(|&pts| s.take(pts))
            .collect();
        assert_eq!(taken, vec![0, 200_000, 400_000, 600_000, 800_000]);
    }

    #[test]
    fn sampler_restarts_after_a_gap_instead_of_bursting() {
        let mut s = Sampler::new(10.0);
        assert!(s.take(0));
        assert!(s.take(5_000_000)); // 5 s gap
        assert!(!s.take(5_040_000));
        assert!(s.take(5_100_000));
    }

    #[test]
    fn pacer_waits_for_stream_time_but_never_for_late_frames() {
        let mut p = Pacer::new();
        let t0 = p.start;
        assert_eq!(p.delay(1_000_000, t0), Duration::ZERO); // first frame sets the origin
        assert_eq!(p.delay(1_500_000, t0), Duration::from_millis(500));
        assert_eq!(
            p.delay(1_500_000, t0 + Duration::from_secs(2)),
            Duration::ZERO
        );
    }
}
