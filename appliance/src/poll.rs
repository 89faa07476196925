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
    cut_partial_line(&args.out)?;
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
        // Lines past the saved cursor (a crash between the write and the
        // save) count, but only if they came from the database the cursor
        // is about: another's revisions mean nothing here.
        if let Some(written) = resumed.get(&source) {
            let same_box = cursor.box_id.as_ref().is_none_or(|b| *b == written.box_id);
            if same_box {
                cursor.box_id = Some(written.box_id.clone());
                cursor.after = cursor.after.max(written.revision);
            }
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
        if let Some(gap) = &page.gap {
            lines.push_str(&line(
                json!({ "box": page.box_id, "source": b.source, "gap": gap }),
            ));
        }
        let full = page.events.len() >= PAGE;
        let after = cursor_after(&page, b.cursor.after);
        for event in page.events {
            lines.push_str(&line(
                json!({ "box": page.box_id, "source": b.source, "event": event }),
            ));
        }
        write_synced(out, &lines)?;
        b.cursor.box_id = Some(page.box_id);
        b.cursor.after = after;
        save(&b.state_file, &b.cursor)?;
        if !full {
            break;
        }
    }
    Ok(())
}

/// Where the cursor goes after `page`: its `next_after`, and past a gap
/// even when no change survived it (else the same gap would be reported
/// again every round).
fn cursor_after(page: &Page, current: i64) -> i64 {
    let past_gap = page.gap.as_ref().and_then(|g| g["deleted_up_to"].as_i64());
    page.next_after
        .unwrap_or(current)
        .max(past_gap.unwrap_or(i64::MIN))
}

/// Appends `lines` whole or not at all: a write cut short (a full disk)
/// is taken back, so the retried page is not written twice and no line is
/// left half-written for the next one to join.
fn write_synced(out: &mut std::fs::File, lines: &str) -> anyhow::Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let before = out.metadata()?.len();
    let written = out
        .write_all(lines.as_bytes())
        .and_then(|()| out.sync_data());
    if let Err(e) = written {
        out.set_len(before)
            .context("taking back a write that failed")?;
        return Err(e.into());
    }
    Ok(())
}

/// Removes a last line a crash cut short, so the next write starts on a
/// line of its own.
fn cut_partial_line(out: &Path) -> anyhow::Result<()> {
    let Ok(mut file) = std::fs::OpenOptions::new().read(true).write(true).open(out) else {
        return Ok(());
    };
    let len = file.metadata()?.len();
    let mut end = len;
    let mut chunk = vec![0u8; 64 << 10];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let part = &mut chunk[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(part)?;
        if let Some(at) = part.iter().rposition(|&b| b == b'\n') {
            end = start + at as u64 + 1;
            break;
        }
        end = start;
    }
    if end < len {
        tracing::warn!(output = %out.display(), bytes = len - end, "removing a line a crash cut short");
        file.set_len(end)?;
        file.sync_data()?;
    }
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

/// Where a source's output stopped: its latest database, and the highest
/// revision written from it.
#[derive(Debug, PartialEq)]
struct Written {
    box_id: String,
    revision: i64,
}

/// Where each source's lines stopped, from the output's end.
fn last_written(out: &Path) -> anyhow::Result<HashMap<String, Written>> {
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
        let (Some(source), Some(box_id)) = (v["source"].as_str(), v["box"].as_str()) else {
            continue;
        };
        let revision = v["event"]["revision"].as_i64().unwrap_or(0);
        let w = found.entry(source.to_string()).or_insert(Written {
            box_id: box_id.to_string(),
            revision,
        });
        if w.box_id != box_id {
            // A new database: its revisions start over.
            *w = Written {
                box_id: box_id.to_string(),
                revision,
            };
        }
        w.revision = w.revision.max(revision);
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
            "{\"box\":\"A\",\"source\":\"http://a\",\"event\":{\"revision\":4}}\n\
             {\"box\":\"B\",\"source\":\"http://b\",\"event\":{\"revision\":9}}\n\
             {\"box\":\"A\",\"source\":\"http://a\",\"gap\":{\"after\":1}}\n\
             {\"box\":\"A\",\"source\":\"http://a\",\"event\":{\"revision\":7}}\n\
             {\"box\":\"A\",\"source\":\"http://a\",\"event\":{\"revi",
        )
        .unwrap();
        let found = last_written(&out).unwrap();
        let written = |b: &str, revision| Written {
            box_id: b.into(),
            revision,
        };
        assert_eq!(found["http://a"], written("A", 7));
        assert_eq!(found["http://b"], written("B", 9));
        assert!(last_written(&dir.path().join("none")).unwrap().is_empty());
    }

    #[test]
    fn a_new_database_behind_a_source_starts_its_revisions_over() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("events.jsonl");
        std::fs::write(
            &out,
            "{\"box\":\"old\",\"source\":\"http://a\",\"event\":{\"revision\":5000}}\n\
             {\"box\":\"new\",\"source\":\"http://a\",\"gap\":{\"reason\":\"new database\"}}\n\
             {\"box\":\"new\",\"source\":\"http://a\",\"event\":{\"revision\":120}}\n",
        )
        .unwrap();
        let found = last_written(&out).unwrap();
        assert_eq!(
            found["http://a"],
            Written {
                box_id: "new".into(),
                revision: 120
            }
        );
    }

    #[test]
    fn a_line_cut_by_a_crash_is_removed_before_writing_on() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("events.jsonl");
        std::fs::write(&out, "{\"a\":1}\n{\"b\":2}\n{\"c\":").unwrap();
        cut_partial_line(&out).unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "{\"a\":1}\n{\"b\":2}\n"
        );
        cut_partial_line(&out).unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "{\"a\":1}\n{\"b\":2}\n"
        );
        std::fs::write(&out, "no newline at all").unwrap();
        cut_partial_line(&out).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "");
    }

    #[test]
    fn a_write_cut_short_by_a_full_disk_is_taken_back_whole() {
        // A 64 KiB tmpfs (mounting needs root, as CI runs): 100 KiB of
        // lines fit in part, then the disk is full.
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount(8)");
        assert!(mounted.success(), "mounting a tmpfs needs root");
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, "{\"a\":1}\n").unwrap();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        let lines = "{\"event\":\"x\"}\n".repeat(100 << 10 >> 4);
        let failed = write_synced(&mut file, &lines).is_err();
        let left = std::fs::read_to_string(&path).unwrap();
        drop(file);
        let result = (failed, left);
        let _ = std::process::Command::new("umount")
            .arg(dir.path())
            .status();
        assert!(result.0, "the write failed");
        assert!(
            result.1 == "{\"a\":1}\n",
            "and left nothing of itself: {} bytes",
            result.1.len()
        );
    }

    #[test]
    fn a_gap_with_nothing_after_it_is_passed_once() {
        let page = |json: &str| serde_json::from_str::<Page>(json).unwrap();
        let gap_only =
            page(r#"{"box":"A","events":[],"next_after":1,"gap":{"after":1,"deleted_up_to":9}}"#);
        assert_eq!(cursor_after(&gap_only, 1), 9);
        let events = page(r#"{"box":"A","events":[],"next_after":12,"gap":null}"#);
        assert_eq!(cursor_after(&events, 9), 12);
        let empty = page(r#"{"box":"A","events":[],"next_after":null,"gap":null}"#);
        assert_eq!(cursor_after(&empty, 12), 12);
    }

    #[test]
    fn state_files_differ_per_source() {
        assert_ne!(file_name("http://a:8080"), file_name("http://a:8081"));
        assert!(file_name("https://box-1.example:8443/")
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
    }
}
