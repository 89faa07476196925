//! Detector speed on the CPU.
//!
//! `depthwise_conv2d`: our fused depthwise kernel (bias and ReLU6 included)
//! against what candle alone does for the same layer (the anchor): grouped
//! convolution, bias add, clamp; on MobileNetV2's largest depthwise layers
//! and two of its narrow ones.
//! `ssdlite`: the whole detector, pre- and post-processing included, on a
//! real street frame at batch 1 and 4.

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vigil_inference::ops::{depthwise_conv2d, Activation, Padding};
use vigil_inference::{Detector, ImageView};

fn depthwise(c: &mut Criterion) {
    let dev = Device::Cpu;
    let mut group = c.benchmark_group("depthwise_conv2d");
    // (channels, size, stride): block 1 (stride 2) and block 2 of MobileNetV2
    // at 300x300, a 19-wide block and a 10-wide one.
    for (channels, size, stride) in [
        (96usize, 150usize, 2usize),
        (144, 75, 1),
        (576, 19, 1),
        (960, 10, 1),
    ] {
        let x = Tensor::randn(0f32, 1., (1, channels, size, size), &dev).unwrap();
        let k = Tensor::randn(0f32, 1., (channels, 1, 3, 3), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1., channels, &dev).unwrap();
        let bias4 = bias.reshape((1, channels, 1, 1)).unwrap();
        let pad = Padding::same(size, size, 3, stride);
        let id = format!("{channels}x{size}x{size}_s{stride}");
        group.bench_with_input(BenchmarkId::new("vigil", &id), &(), |b, _| {
            b.iter(|| depthwise_conv2d(&x, &k, &bias, stride, pad, Activation::Relu6).unwrap())
        });
        group.bench_with_input(
            BenchmarkId::new("candle_grouped_anchor", &id),
            &(),
            |b, _| {
                b.iter(|| {
                    x.pad_with_zeros(2, pad.top, pad.bottom)
                        .unwrap()
                        .pad_with_zeros(3, pad.left, pad.right)
                        .unwrap()
                        .conv2d(&k, 0, stride, 1, channels)
                        .unwrap()
                        .broadcast_add(&bias4)
                        .unwrap()
                        .clamp(0f32, 6f32)
                        .unwrap()
                })
            },
        );
    }
    group.finish();
}

fn ssdlite(c: &mut Criterion) {
    let detector = vigil_benches::ssdlite();
    let (w, h, rgb) = vigil_benches::street_frame();
    let mut group = c.benchmark_group("ssdlite_cpu");
    group.sample_size(20);
    for batch in [1usize, 4] {
        let views: Vec<ImageView> = (0..batch)
            .map(|_| ImageView::new(w, h, &rgb).unwrap())
            .collect();
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("frames", batch), &views, |b, views| {
            b.iter(|| detector.detect(views).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, depthwise, ssdlite);
criterion_main!(benches);
