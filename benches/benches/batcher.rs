//! The cross-camera batcher: cost of handing the model one batch gathered
//! from N camera lanes (sampled 1280x720 RGB frames, moved, never copied).
//! Beside a model call of tens of milliseconds this must stay microseconds.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vigil_ingest::{frame_queue, Frame, Pixels};

fn frame(camera: &Arc<str>, seq: u64, rgb: Vec<u8>) -> Frame {
    Frame {
        camera_id: camera.clone(),
        seq,
        pts_us: seq as i64 * 200_000,
        wall_time: SystemTime::now(),
        width: 1280,
        height: 720,
        pixels: Pixels::Rgb(rgb),
    }
}

fn batcher(c: &mut Criterion) {
    let mut group = c.benchmark_group("batcher");
    for cameras in [1usize, 8, 32] {
        let max_batch = cameras.min(8);
        let ids: Vec<Arc<str>> = (0..cameras).map(|i| format!("cam{i}").into()).collect();
        let (tx, rx) = frame_queue(2);
        // Frame buffers circulate between the bench and the queue, so the
        // figure is the queue's own work, not allocation.
        let mut buffers: Vec<Vec<u8>> = (0..cameras).map(|_| vec![0u8; 1280 * 720 * 3]).collect();
        group.throughput(Throughput::Elements(cameras as u64));
        group.bench_function(BenchmarkId::new("send_and_batch", cameras), |b| {
            let mut seq = 0;
            b.iter(|| {
                for (id, rgb) in ids.iter().zip(buffers.drain(..)) {
                    tx.send(frame(id, seq, rgb));
                }
                seq += 1;
                while buffers.len() < cameras {
                    let batch = rx
                        .next_batch(max_batch, Duration::ZERO)
                        .expect("frames were sent");
                    buffers.extend(batch.into_iter().map(|f| match f.pixels {
                        Pixels::Rgb(rgb) => rgb,
                        Pixels::Gpu(_) => unreachable!("the bench sends RGB frames"),
                    }));
                }
            });
        });
    }
    group.finish();
}

criterion_group!(benches, batcher);
criterion_main!(benches);
