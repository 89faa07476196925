//! `vigil poll`: the reference central poller. Follows the event changes of
//! many boxes through `GET /api/v1/events?after=` and appends them to one
//! JSON-lines file, resuming from saved cursors: what `docs/api.md`
//! promises, used the way a central server would.
//!
//! Per page: the lines are written and synced first, the cursor saved
//! after. A crash in between re-fetches that page; on start the tail of the
//! output is read back, so those changes are not written twice.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::cli::PollArgs;

/// Changes per request: the API's maximum.
const PAGE: usize = 1000;
/// How much of the output's end is read back at start.
const TAIL_BYTES: u64 = 8 << 20;
const TIMEOUT: Duration = Duration::from_secs(10);

/// What is kept per box between runs.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Cursor {
    source: String,
    /// The box's database id, as its pages report it.
    #[serde(rename = "box")]
    box_id: Option<String>,
    after: i64,
}

struct Followed {
    source: String,
    token: String,
    state_file: PathBuf,
    cursor: Cursor,
}

#[derive(Debug, Deserialize)]
struct Page {
    #[serde(rename = "box")]
    box_id: String,
    events: Vec<Value>,
    next_after: Option<i64>,
    gap: Option<Value>,
}

pub fn run(args: PollArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.from.is_empty(),
        "name at least one box with --from URL"
    );
    anyhow::ensure!(
        args.token.len() == 1 || args.token.len() == args.from.len(),
        "give one --token for every box, or one for all"
    );
    std::fs::create_dir_all(&args.state)
        .with_context(|| format!("creating {}", args.state.display()))?;
    let resumed = last_written(&args.out)?;
    let mut boxes = Vec::new();
    for (i, source) in args.from.iter().enumerate() {
        let source = source.trim_end_matches('/').to_string();
        let token = args.token[if args.token.len() == 1 { 0 } else { i }].clone();
        let state_file = args.state.join(format!("{}.json", file_name(&source)));
        let mut cursor: Cursor = std::fs::read(&state_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        cursor.source = source.clone();
        if let Some(&written) = resumed.get(&source) {
            cursor.after = cursor.after.max(written);
        }
        boxes.push(Followed {
            source,
            token,
            state_file,
            cursor,
        });
    }
    let agent = agent(args.ca.as_deref())?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone())?;
    }
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.out)
        .with_context(|| format!("opening {}", args.out.display()))?;
    let interval = Duration::from_secs_f64(args.interval.max(0.05));
    loop {
        let mut all_drained = true;
        for b in &mut boxes {
            if let Err(e) = drain(&agent, b, &mut out, &stop) {
                all_drained = false;
                tracing::warn!(source = %b.source, error = format!("{e:#}"), "cannot poll; retrying");
            }
        }
        if stop.load(Ordering::Relaxed) || (args.once && all_drained) {
            return Ok(());
        }
        let mut slept = Duration::ZERO;
        while slept < interval && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
            slept += Duration::from_millis(50);
        }
    }
}

/// Fetches and writes pages until the box has nothing newer.
fn drain(
    agent: &ureq::Agent,
    b: &mut Followed,
    out: &mut std::fs::File,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    while !stop.load(Ordering::Relaxed) {
        let url = format!(
            "{}/api/v1/events?after={}&limit={PAGE}",
            b.source, b.cursor.after
        );
        let mut response = agent
            .get(&url)
            .header("Authorization", format!("Bearer {}", b.token))
            .call()
            .with_context(|| format!("GET {url}"))?;
        let page: Page = serde_json::from_str(&response.body_mut().read_to_string()?)
            .context("not an events page")?;
        let mut lines = String::new();
        let line = |v: Value| format!("{v}\n");
        if b.cursor
            .box_id
            .as_ref()
            .is_some_and(|id| *id != page.box_id)
        {
            // A new database behind the same address: its revisions start
            // over, so ours means nothing there. Say so, start from 0.
            lines.push_str(&line(json!({
                "box": page.box_id, "source": b.source,
                "gap": { "reason": "new database", "previous_box": b.cursor.box_id, "after": b.cursor.after },
            })));
            b.cursor = Cursor {
                source: b.source.clone(),
                box_id: Some(page.box_id),
                after: 0,
            };
            write_synced(out, &lines)?;
            save(&b.state_file, &b.cursor)?;
            continue;
        }
        if let Some(gap) = page.gap {
            lines.push_str(&line(
                json!({ "box": page.box_id, "source": b.source, "gap": gap }),
            ));
        }
        let full = page.events.len() >= PAGE;
        for event in page.events {
            lines.push_str(&line(
                json!({ "box": page.box_id, "source": b.source, "event": event }),
            ));
        }
        write_synced(out, &lines)?;
        b.cursor.box_id = Some(page.box_id);
        b.cursor.after = page.next_after.unwrap_or(b.cursor.after);
        save(&b.state_file, &b.cursor)?;
        if !full {
            break;
        }
    }
    Ok(())
}

fn write_synced(out: &mut std::fs::File, lines: &str) -> anyhow::Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    out.write_all(lines.as_bytes())?;
    out.sync_data()?;
    Ok(())
}

/// Replaces the state file atomically.
fn save(path: &Path, cursor: &Cursor) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    serde_json::to_writer(&mut tmp, cursor)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)?;
    Ok(())
}

/// The highest revision already written per source, from the output's end.
fn last_written(out: &Path) -> anyhow::Result<HashMap<String, i64>> {
    let mut found = HashMap::new();
    let Ok(mut file) = std::fs::File::open(out) else {
        return Ok(found);
    };
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    // The seek may split a character: lossy, the cut line is skipped anyway.
    let tail = String::from_utf8_lossy(&bytes);
    // The first line may be cut by the seek; a last one cut by a crash does
    // not parse: both are skipped.
    for line in tail.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if let (Some(source), Some(revision)) =
            (v["source"].as_str(), v["event"]["revision"].as_i64())
        {
            let e = found.entry(source.to_string()).or_insert(revision);
            *e = (*e).max(revision);
        }
    }
    Ok(found)
}

/// A file name for a source URL: readable, and unique by a hash.
fn file_name(source: &str) -> String {
    let readable: String = source
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(60)
        .collect();
    let hash = source.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    format!("{readable}-{hash:016x}")
}

fn agent(ca: Option<&Path>) -> anyhow::Result<ureq::Agent> {
    let mut config = ureq::Agent::config_builder().timeout_global(Some(TIMEOUT));
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        let certs = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect::<Vec<_>>();
        anyhow::ensure!(!certs.is_empty(), "{}: no certificate in it", ca.display());
        config = config.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                .build(),
        );
    }
    Ok(config.build().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_output_tail_tells_where_each_source_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("events.jsonl");
        std::fs::write(
            &out,
            "{\"source\":\"http://a\",\"event\":{\"revision\":4}}\n\
             {\"source\":\"http://b\",\"event\":{\"revision\":9}}\n\
             {\"source\":\"http://a\",\"gap\":{\"after\":1}}\n\
             {\"source\":\"http://a\",\"event\":{\"revision\":7}}\n\
             {\"source\":\"http://a\",\"event\":{\"revi",
        )
        .unwrap();
        let found = last_written(&out).unwrap();
        assert_eq!(found["http://a"], 7);
        assert_eq!(found["http://b"], 9);
        assert!(last_written(&dir.path().join("none")).unwrap().is_empty());
    }

    #[test]
    fn state_files_differ_per_source() {
        assert_ne!(file_name("http://a:8080"), file_name("http://a:8081"));
        assert!(file_name("https://box-1.example:8443/")
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
    }
}
