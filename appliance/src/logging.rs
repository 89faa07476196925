//! Where log lines go. Under systemd, stderr is a journal stream and
//! systemd says so in `JOURNAL_STREAM`: the log then goes to journald over
//! its native protocol, so every span and event field is a journal field
//! (`journalctl -u vigil CAMERA=door`), levels become priorities, and
//! source locations are kept. Anywhere else it is text on stderr, coloured
//! only for a person at a terminal.

use std::os::unix::fs::MetadataExt;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Starts logging at `default` level (`RUST_LOG` overrides it).
pub fn init(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let journal_refused = if stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(journal) => {
                // Field names as written (CAMERA, not F_CAMERA): none of
                // ours collides with journald's own.
                let journal = journal.with_field_prefix(None);
                tracing_subscriber::registry()
                    .with(filter)
                    .with(journal)
                    .init();
                return;
            }
            Err(err) => Some(err),
        }
    } else {
        None
    };
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .init();
    if let Some(err) = journal_refused {
        tracing::warn!("journald's socket refused the log ({err}): logging plain text to stderr");
    }
}

/// Whether stderr is the journal stream systemd named in `JOURNAL_STREAM`
/// (`device:inode` of the stream), as systemd.exec(5) says to check:
/// the variable alone may have been inherited by a child whose stderr was
/// redirected.
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stderr) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    stream.to_str() == Some(&format!("{}:{}", stderr.dev(), stderr.ino()))
}
