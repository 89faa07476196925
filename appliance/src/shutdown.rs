//! Signals become requests to the main loop: SIGINT/SIGTERM an orderly
//! shutdown, SIGHUP a reload of the configuration file (systemd's
//! `ExecReload`).

use crossbeam_channel::Sender;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::reload::Request;

/// Takes over SIGINT, SIGTERM and SIGHUP. Call before starting any work, so
/// a signal during start-up is not lost.
pub fn install() -> anyhow::Result<Signals> {
    Ok(Signals::new([SIGINT, SIGTERM, SIGHUP])?)
}

/// Forwards signals to `requests` from a thread of their own.
pub fn forward(mut signals: Signals, requests: Sender<Request>) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for s in signals.forever() {
                let request = match s {
                    SIGHUP => Request::ReloadFile,
                    SIGINT => Request::Stop("SIGINT"),
                    _ => Request::Stop("SIGTERM"),
                };
                if requests.send(request).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}
