//! Interrupts ffmpeg's blocking I/O: when the appliance stops, and when a
//! network source goes quiet for too long (a stall). ffmpeg polls the
//! callback while it waits on a socket, so neither a dead camera nor a
//! server that accepts and never answers can hold a source thread.

use std::ffi::CString;
use std::os::raw::{c_int, c_void};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ff::ffi;
use ffmpeg_next as ff;

pub(crate) struct Watchdog {
    started: Instant,
    /// Milliseconds after `started` when data last arrived.
    last_data_ms: AtomicU64,
    stall_after: Option<Duration>,
    stop: Option<Arc<AtomicBool>>,
}

impl Watchdog {
    pub fn new(stall_after: Option<Duration>, stop: Option<Arc<AtomicBool>>) -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            last_data_ms: AtomicU64::new(0),
            stall_after,
            stop,
        })
    }

    /// Data arrived: the stall timer starts again.
    pub fn touch(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_data_ms.store(now, Ordering::Relaxed);
    }

    /// Whether the source has been quiet longer than allowed.
    pub fn stalled(&self) -> bool {
        self.stall_after.is_some_and(|limit| {
            let quiet_ms = self.started.elapsed().as_millis() as u64
                - self.last_data_ms.load(Ordering::Relaxed);
            quiet_ms > limit.as_millis() as u64
        })
    }

    fn should_interrupt(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
            || self.stalled()
    }
}

extern "C" fn interrupt(opaque: *mut c_void) -> c_int {
    // SAFETY: `opaque` is the Watchdog the input was opened with; the
    // VideoInput holding the input keeps it alive until after closing.
    let watchdog = unsafe { &*(opaque as *const Watchdog) };
    c_int::from(watchdog.should_interrupt())
}

/// `avformat_open_input` + `avformat_find_stream_info` with the watchdog as
/// interrupt callback. The caller keeps `watchdog` alive at least as long
/// as the returned input. Also returns the options nothing took.
pub(crate) fn open_input(
    location: &str,
    format: Option<&str>,
    options: ff::Dictionary,
    watchdog: &Arc<Watchdog>,
) -> Result<(ff::format::context::Input, ff::Dictionary<'static>), ff::Error> {
    let path = CString::new(location).map_err(|_| ff::Error::InvalidData)?;
    let format = format
        .map(|f| CString::new(f).map_err(|_| ff::Error::InvalidData))
        .transpose()?;
    // SAFETY: the context is allocated here and either handed to `Input`
    // (which closes it) or freed by avformat_open_input / close_input on
    // failure; the options dictionary goes back into Rust ownership.
    unsafe {
        let mut ps = ffi::avformat_alloc_context();
        if ps.is_null() {
            return Err(ff::Error::Other {
                errno: ff::util::error::ENOMEM,
            });
        }
        (*ps).interrupt_callback = ffi::AVIOInterruptCB {
            callback: Some(interrupt),
            opaque: Arc::as_ptr(watchdog) as *mut c_void,
        };
        let input_format = match &format {
            Some(name) => {
                let found = ffi::av_find_input_format(name.as_ptr());
                if found.is_null() {
                    ffi::avformat_free_context(ps);
                    return Err(ff::Error::DemuxerNotFound);
                }
                found
            }
            None => ptr::null(),
        };
        let mut opts = options.disown();
        let res = ffi::avformat_open_input(&mut ps, path.as_ptr(), input_format, &mut opts);
        let left = ff::Dictionary::own(opts);
        if res < 0 {
            return Err(ff::Error::from(res));
        }
        match ffi::avformat_find_stream_info(ps, ptr::null_mut()) {
            r if r >= 0 => Ok((ff::format::context::Input::wrap(ps), left)),
            e => {
                ffi::avformat_close_input(&mut ps);
                Err(ff::Error::from(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalls_after_the_limit_and_data_resets_it() {
        let w = Watchdog::new(Some(Duration::from_millis(30)), None);
        assert!(!w.stalled());
        std::thread::sleep(Duration::from_millis(50));
        assert!(w.stalled());
        w.touch();
        assert!(!w.stalled());
        let never = Watchdog::new(None, None);
        std::thread::sleep(Duration::from_millis(5));
        assert!(!never.stalled());
    }

    #[test]
    fn stopping_interrupts() {
        let stop = Arc::new(AtomicBool::new(false));
        let w = Watchdog::new(None, Some(stop.clone()));
        assert!(!w.should_interrupt());
        stop.store(true, Ordering::Relaxed);
        assert!(w.should_interrupt());
    }
}
