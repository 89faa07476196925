//! Telling systemd how the service is (`Type=notify`): ready, a one-line
//! status, reloading, stopping, and watchdog pings sent only while the
//! pipeline is healthy, so a stuck pipeline gets the process restarted.
//! Outside systemd (no `NOTIFY_SOCKET`) every call does nothing.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// A batch the model has worked on for this long is stuck, not slow.
const STUCK_ANALYSIS: Duration = Duration::from_secs(60);
/// Rows waiting this long with no commit attempt: the writer is stuck.
const STUCK_WRITER: Duration = Duration::from_secs(60);

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "cannot notify systemd");
    }
}

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

pub fn reloading() {
    let mut states = vec![
        NotifyState::Reloading,
        NotifyState::Status("reloading the configuration"),
    ];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    send(&states);
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// How often to look at the pipeline: half the watchdog interval when
/// systemd set one, so one late look never misses a ping.
pub fn tick() -> Duration {
    sd_notify::watchdog_enabled().map_or(Duration::from_secs(10), |w| {
        (w / 2).clamp(Duration::from_millis(200), Duration::from_secs(10))
    })
}

pub fn watchdog_ping() {
    send(&[NotifyState::Watchdog]);
}

/// A reload stops the pipeline and starts it again (the model loads anew),
/// which may take longer than the watchdog interval: it is fed meanwhile,
/// but only for `limit`, so a reload that hangs still gets us restarted.
pub fn feeding_watchdog<T>(limit: Duration, work: impl FnOnce() -> T) -> T {
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let until = Instant::now() + limit;
            let mut next = Instant::now() + tick();
            while Instant::now() < until {
                if done.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                if Instant::now() >= next {
                    watchdog_ping();
                    next += tick();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            tracing::error!(
                ?limit,
                "the reload has not finished; no longer feeding the watchdog"
            );
        });
        let result = work();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        result
    })
}

/// What the health check reads, sampled by the main loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// How long the current model batch has run (`None`: not in one).
    pub analysing_for: Option<Duration>,
    pub pending_rows: u64,
    /// Commits tried so far (successful or not).
    pub commit_attempts: u64,
}

/// Remembers when the writer last tried to commit.
pub struct Health {
    attempts: u64,
    attempts_changed: Instant,
}

impl Health {
    pub fn new() -> Self {
        Self {
            attempts: 0,
            attempts_changed: Instant::now(),
        }
    }

    /// `Err` with the reason when the pipeline is stuck.
    pub fn check(&mut self, s: Sample, now: Instant) -> Result<(), String> {
        if s.commit_attempts != self.attempts {
            self.attempts = s.commit_attempts;
            self.attempts_changed = now;
        }
        if let Some(busy) = s.analysing_for.filter(|b| *b > STUCK_ANALYSIS) {
            return Err(format!(
                "the model has been on one batch for {} s",
                busy.as_secs()
            ));
        }
        let idle = now.duration_since(self.attempts_changed);
        if s.pending_rows > 0 && idle > STUCK_WRITER {
            return Err(format!(
                "{} rows waiting and no commit tried for {} s",
                s.pending_rows,
                idle.as_secs()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_batch_or_a_silent_writer_is_stuck_a_quiet_box_is_not() {
        let start = Instant::now();
        let mut h = Health::new();
        let quiet = Sample {
            analysing_for: None,
            pending_rows: 0,
            commit_attempts: 0,
        };
        assert!(
            h.check(quiet, start + Duration::from_secs(3600)).is_ok(),
            "no cameras, nothing to do"
        );
        let busy = Sample {
            analysing_for: Some(Duration::from_secs(61)),
            ..quiet
        };
        assert!(h.check(busy, start).unwrap_err().contains("model"));
        let waiting = Sample {
            pending_rows: 10,
            commit_attempts: 5,
            ..quiet
        };
        let t = start + Duration::from_secs(4000);
        assert!(h.check(waiting, t).is_ok(), "commits just moved");
        assert!(h.check(waiting, t + Duration::from_secs(30)).is_ok());
        assert!(h
            .check(waiting, t + Duration::from_secs(61))
            .unwrap_err()
            .contains("rows"));
        let retried = Sample {
            commit_attempts: 6,
            ..waiting
        };
        assert!(
            h.check(retried, t + Duration::from_secs(62)).is_ok(),
            "a failing commit is retried, not stuck"
        );
    }
}
