//! The history endpoints' query strings: the first byte picks the endpoint,
//! the rest is the query string. A string the API accepts must run on a real
//! database (a failure there would be a 503 the client cannot fix) and
//! return at most the page it asked for.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vigil_storage::{
    prepare, spawn_writer, DetectionRecord, EventRecord, Reader, WriteOp, WriterConfig,
};
use vigil_web_ui::query::{parse_history_query, HistoryEndpoint, HistoryQuery};

/// A database with a few detections and events, made once per process.
fn reader() -> &'static Reader {
    static READER: OnceLock<(tempfile::TempDir, Reader)> = OnceLock::new();
    let (_, reader) = READER.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = prepare(dir.path()).unwrap();
        let writer = spawn_writer(&path, WriterConfig::default()).unwrap();
        let tx = writer.sender();
        let at = 1_700_000_000_000;
        let detections = (0..50)
            .map(|i| DetectionRecord {
                camera: ["gate", "yard"][i % 2].into(),
                frame_seq: i as u64,
                frame_pts_us: i as i64 * 200_000,
                frame_wall_ms: at + i as i64 * 200,
                label: ["person", "car", "bicycle"][i % 3].into(),
                score: 0.5 + i as f32 / 100.0,
                bbox: [1.0, 2.0, 30.0, 40.0],
            })
            .collect();
        tx.send(WriteOp::Detections(detections)).unwrap();
        for i in 0..5u64 {
            tx.send(WriteOp::Event(EventRecord {
                uid: format!("fuzz-{i}"),
                camera: "gate".into(),
                track_id: i,
                label: "person".into(),
                start_ms: at + i as i64 * 1000,
                end_ms: (i % 2 == 0).then_some(at + i as i64 * 1000 + 500),
                max_score: 0.9,
                best_box: [1.0, 2.0, 30.0, 40.0],
                zones: vec!["door".into()],
                snapshot: None,
            }))
            .unwrap();
        }
        // The writer stops once every sender is gone.
        drop(tx);
        writer.finish();
        (dir, Reader::new(&path))
    });
    reader
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(raw) = std::str::from_utf8(rest) else {
        return;
    };
    let endpoint = match which % 3 {
        0 => HistoryEndpoint::Detections,
        1 => HistoryEndpoint::Events,
        _ => HistoryEndpoint::Counts,
    };
    let Ok(query) = parse_history_query(endpoint, raw) else {
        return;
    };
    let reader = reader();
    match query {
        HistoryQuery::Detections(q) => {
            let rows = reader.detections(&q).expect("an accepted query runs");
            assert!(rows.len() <= q.limit, "more rows than the limit");
        }
        HistoryQuery::Events(q) => {
            let rows = reader.events(&q).expect("an accepted query runs");
            assert!(rows.len() <= q.limit, "more rows than the limit");
        }
        HistoryQuery::Counts(q) => {
            reader.counts(&q).expect("an accepted query runs");
        }
    }
});
