//! Analytics cost per frame: filter, tracker (three assignment passes,
//! Kalman), zones, a counting line and event bookkeeping, for a crowd of N
//! people walking across a 1920x1080 frame at 5 analysed frames per second.
//! The detector is ~45 ms per frame on this CPU; analytics must stay a
//! rounding error beside it even in a crowd.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vigil_analytics::{
    CameraAnalytics, CountLine, Detected, FrameInfo, Polygon, Scene, Segment, TrackerConfig, Zone,
};

const W: u32 = 1920;
const H: u32 = 1080;
const FRAMES: usize = 100;

/// A tiny deterministic generator: the same crowd every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// `people` walkers over `FRAMES` frames, with detector-like jitter, a few
/// misses and a low-score box now and then.
fn crowd(people: usize) -> Vec<Vec<(f32, [f32; 4])>> {
    let mut rng = Lcg(7);
    let walkers: Vec<(f32, f32, f32, f32)> = (0..people)
        .map(|_| {
            let (x, y) = (rng.next() * W as f32, 200.0 + rng.next() * 800.0);
            let (vx, vy) = ((rng.next() - 0.5) * 40.0, (rng.next() - 0.5) * 10.0);
            (x, y, vx, vy)
        })
        .collect();
    (0..FRAMES)
        .map(|f| {
            walkers
                .iter()
                .filter_map(|&(x, y, vx, vy)| {
                    let roll = rng.next();
                    if roll < 0.05 {
                        return None; // missed by the detector
                    }
                    let score = if roll < 0.15 { 0.3 } else { 0.8 };
                    let (cx, cy) = (x + vx * f as f32, y + vy * f as f32);
                    let j = (rng.next() - 0.5) * 6.0;
                    Some((score, [cx - 20.0 + j, cy - 100.0, cx + 20.0 + j, cy]))
                })
                .collect()
        })
        .collect()
}

fn scene() -> Scene {
    Scene {
        labels: vec!["person".into()],
        min_score: 0.5,
        track_min_score: 0.2,
        zones: vec![Zone {
            name: "plaza".into(),
            polygon: Polygon::new(vec![[0.2, 0.3], [0.8, 0.3], [0.8, 0.9], [0.2, 0.9]]).unwrap(),
        }],
        lines: vec![CountLine {
            name: "gate".into(),
            segment: Segment::new([0.5, 0.1], [0.5, 0.95]).unwrap(),
        }],
        ..Default::default()
    }
}

fn analytics(c: &mut Criterion) {
    let mut group = c.benchmark_group("analytics_per_frame");
    for people in [10usize, 50, 200] {
        let frames = crowd(people);
        group.throughput(Throughput::Elements(FRAMES as u64));
        group.bench_with_input(BenchmarkId::new("people", people), &frames, |b, frames| {
            b.iter(|| {
                let mut a = CameraAnalytics::new(scene(), TrackerConfig::default());
                for (i, dets) in frames.iter().enumerate() {
                    let detected: Vec<Detected> = dets
                        .iter()
                        .map(|(score, bbox)| Detected {
                            label: "person",
                            score: *score,
                            bbox: *bbox,
                        })
                        .collect();
                    let frame = FrameInfo {
                        width: W,
                        height: H,
                        wall_ms: 200 * i as i64,
                    };
                    std::hint::black_box(a.process(frame, &detected));
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, analytics);
criterion_main!(benches);
