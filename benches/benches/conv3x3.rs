//! YOLOv3-tiny's 3x3 stride-1 layers (416x416 input, batch 1), each run
//! through every kernel that can serve it: in f32 the tiled GEMM
//! convolution (`gemm`, `ops::conv2d`) and Winograd F(4x4, 3x3)
//! (`winograd`, `ops::winograd`); in int8 Winograd F(2x2, 3x3)
//! (`int8-winograd`, `ops::winograd_int8`) and im2col (`int8`,
//! `ops::int8`). The GEMM rows are the anchor. These rows decide which
//! kernel a layer gets (`winograd::MIN_CHANNELS`, `int8::MIN_INT8_DEPTH`).
//!
//! `cargo bench -p vigil-benches --bench conv3x3`

use std::time::Duration;

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vigil_inference::ops::int8::QuantizedConv;
use vigil_inference::ops::winograd::WinogradConv;
use vigil_inference::ops::winograd_int8::QuantizedWinogradConv;
use vigil_inference::ops::{conv2d, Activation};

/// (input channels, output channels, side) of each 3x3 layer, in order
/// (the 256-to-512 layer at 13x13 appears twice in the model, once here).
const LAYERS: [(usize, usize, usize); 8] = [
    (3, 16, 416),
    (16, 32, 208),
    (32, 64, 104),
    (64, 128, 52),
    (128, 256, 26),
    (256, 512, 13),
    (512, 1024, 13),
    (384, 256, 26),
];

fn conv3x3(c: &mut Criterion) {
    vigil_inference::memory::reuse_large_buffers();
    let dev = Device::Cpu;
    let mut group = c.benchmark_group("conv3x3");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (cin, cout, side) in LAYERS {
        let x = Tensor::randn(0f32, 1., (1, cin, side, side), &dev).expect("input");
        let weight = Tensor::randn(0f32, 1., (cout, cin, 3, 3), &dev).expect("weight");
        let bias = Tensor::randn(0f32, 1., cout, &dev).expect("bias");
        let winograd = WinogradConv::new(&weight, &bias, Activation::Leaky).expect("transform");
        // Multiply-adds of the direct convolution, so every row reports the
        // same work and their element rates compare directly.
        group.throughput(Throughput::Elements((cin * cout * 9 * side * side) as u64));
        let layer = format!("{cin}x{side}x{side}-to-{cout}");
        group.bench_function(BenchmarkId::new("gemm", &layer), |b| {
            b.iter(|| conv2d(&x, &weight, &bias, 1, 1, Activation::Leaky).expect("conv"))
        });
        group.bench_function(BenchmarkId::new("winograd", &layer), |b| {
            b.iter(|| winograd.forward(&x).expect("conv"))
        });
        let int8_winograd =
            QuantizedWinogradConv::new(&weight, &bias, Activation::Leaky).expect("quantize");
        group.bench_function(BenchmarkId::new("int8-winograd", &layer), |b| {
            b.iter(|| int8_winograd.forward(&x).expect("conv"))
        });
        let int8 = QuantizedConv::new(&weight, &bias, 1, 1, Activation::Leaky).expect("quantize");
        group.bench_function(BenchmarkId::new("int8", &layer), |b| {
            b.iter(|| int8.forward(&x).expect("conv"))
        });
    }
    group.finish();
}

criterion_group!(benches, conv3x3);
criterion_main!(benches);
