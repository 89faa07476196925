//! SIGINT/SIGTERM turn into one orderly shutdown.

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Takes over SIGINT and SIGTERM. Call before starting any work, so a signal
/// during start-up is not lost.
pub fn install() -> anyhow::Result<Signals> {
    Ok(Signals::new([SIGINT, SIGTERM])?)
}

/// Blocks until SIGINT or SIGTERM arrives; returns the signal's name.
pub fn wait(signals: &mut Signals) -> &'static str {
    signals
        .forever()
        .next()
        .map(|s| if s == SIGINT { "SIGINT" } else { "SIGTERM" })
        .unwrap_or("signal")
}
