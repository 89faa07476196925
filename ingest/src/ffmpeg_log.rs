//! ffmpeg's own messages, sent to our logs instead of its stderr: each
//! carries the span of the source thread it came from (so, the camera),
//! and each thread may log only a few a minute. A camera that loses
//! packets all day makes ffmpeg complain about every damaged frame; on
//! stderr, that would flood the journal, which then drops our own lines.

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::time::{Duration, Instant};

use ffmpeg_next::ffi;

/// Messages one thread may log per window; the rest are counted.
const PER_WINDOW: u32 = 10;
const WINDOW: Duration = Duration::from_secs(60);

thread_local! {
    /// (window start, logged in it, suppressed in it)
    static BUDGET: Cell<(Option<Instant>, u32, u32)> = const { Cell::new((None, 0, 0)) };
}

/// Routes ffmpeg's messages, at its log level or worse, through `tracing`.
pub(crate) fn install() {
    // SAFETY: the callback is a plain function valid for the process's life.
    unsafe { ffi::av_log_set_callback(Some(forward)) }
}

/// Whether this thread may log now; says how many were dropped before.
fn take_budget(now: Instant) -> Option<u32> {
    BUDGET
        .try_with(|b| {
            let (start, logged, suppressed) = b.get();
            match start {
                Some(s) if now.duration_since(s) < WINDOW => {
                    if logged < PER_WINDOW {
                        b.set((start, logged + 1, suppressed));
                        Some(0)
                    } else {
                        b.set((start, logged, suppressed + 1));
                        None
                    }
                }
                _ => {
                    b.set((Some(now), 1, 0));
                    Some(suppressed)
                }
            }
        })
        .ok()
        .flatten()
}

unsafe extern "C" fn forward(
    class: *mut c_void,
    level: c_int,
    format: *const c_char,
    args: *mut ffi::__va_list_tag,
) {
    if level > ffi::av_log_get_level() {
        return;
    }
    let Some(suppressed) = take_budget(Instant::now()) else {
        return;
    };
    let mut line = [0 as c_char; 512];
    let mut print_prefix: c_int = 1;
    // SAFETY: ffmpeg passes a valid format and argument list; the buffer's
    // size is given, and ffmpeg always terminates what it writes.
    let text = unsafe {
        ffi::av_log_format_line2(
            class,
            level,
            format,
            args,
            line.as_mut_ptr(),
            line.len() as c_int,
            &mut print_prefix,
        );
        CStr::from_ptr(line.as_ptr())
    };
    let text = text.to_string_lossy();
    let text = text.trim_end();
    if text.is_empty() {
        return;
    }
    if suppressed > 0 {
        tracing::warn!(target: "ffmpeg", suppressed, "ffmpeg messages left out in the last minute");
    }
    tracing::warn!(target: "ffmpeg", "{text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_logs_a_few_messages_a_minute_and_counts_the_rest() {
        let t0 = Instant::now();
        let allowed = (0..25).filter(|_| take_budget(t0).is_some()).count();
        assert_eq!(allowed, PER_WINDOW as usize);
        // The next window says how many were left out.
        assert_eq!(take_budget(t0 + WINDOW), Some(15));
        assert_eq!(take_budget(t0 + WINDOW), Some(0));
    }
}
