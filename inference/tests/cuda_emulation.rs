//! The CUDA kernels' source (`cuda/ops.cu`), compiled for the host by the
//! `cuda-emulation` feature, must compute what the CPU ops compute: so that
//! a machine with no GPU (CI) still checks the kernels' indexing, padding,
//! activations and the packing of a preprocessing batch. `tests/cuda.rs`
//! runs the same comparisons on a real GPU.

#![cfg(feature = "cuda-emulation")]

mod common;

use candle_core::{DType, Device, Tensor};
use common::{level_diff, resize_rules, Nv12, ACTIVATIONS, COLORS};
use half::{bf16, f16};
use vigil_inference::ops::{bias_activation, depthwise_conv2d, Activation, Padding};
use vigil_inference::preprocess::{
    planar_batch, GpuResizeBatch, Nv12ResizeBatch, ResizePlan, TapTables,
};
use vigil_inference::{CudaNv12, ImageView, YuvColor};

/// The kernels as `extern "C"` host functions; the same parameters as on
/// the GPU, the storage types as `half`'s.
macro_rules! kernels {
    ($($t:ty => $depthwise:ident, $bias_activation:ident, $resize:ident, $resize_nv12:ident;)*) => {
        extern "C" {
            $(
                fn $depthwise(
                    input: *const $t, kernel: *const $t, bias: *const $t, out: *mut $t,
                    planes: usize, channels: u32, h: u32, w: u32, kh: u32, kw: u32,
                    oh: u32, ow: u32, stride: u32, pad_top: u32, pad_left: u32, act: i32,
                );
                fn $bias_activation(
                    input: *const $t, bias: *const $t, out: *mut $t,
                    total: usize, channels: u32, plane: usize, act: i32,
                );
                fn $resize(
                    rgb: *const u8, geometry: *const u32, tap_index: *const u32,
                    tap_frac: *const f32, out: *mut $t, images: u32, out_w: u32, out_h: u32,
                    scale: f32, offset: f32, fill: f32, round_to_byte: i32,
                );
                fn $resize_nv12(
                    planes: *const u64, geometry: *const u32, tap_index: *const u32,
                    tap_frac: *const f32, out: *mut $t, images: u32, out_w: u32, out_h: u32,
                    scale: f32, offset: f32, fill: f32, round_to_byte: i32,
                );
            )*
        }
    };
}

kernels! {
    f32 => depthwise_conv2d_f32, bias_activation_f32, resize_planar_f32, resize_nv12_planar_f32;
    f16 => depthwise_conv2d_f16, bias_activation_f16, resize_planar_f16, resize_nv12_planar_f16;
    bf16 => depthwise_conv2d_bf16, bias_activation_bf16, resize_planar_bf16,
        resize_nv12_planar_bf16;
}

/// `ops::Activation::cuda_code` is crate-private; the order is the same.
fn code(act: Activation) -> i32 {
    ACTIVATIONS.iter().position(|a| *a == act).unwrap() as i32
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// A storage type the kernels take, converted as candle converts.
trait Storage: Copy {
    const NAME: &'static str;
    /// How far from the CPU's f32 a result may be, relative to the largest.
    const TOLERANCE: f32;
    fn from_f32(v: f32) -> Self;
    fn to_f32(self) -> f32;
}

impl Storage for f32 {
    const NAME: &'static str = "f32";
    const TOLERANCE: f32 = 1e-6;
    fn from_f32(v: f32) -> Self {
        v
    }
    fn to_f32(self) -> f32 {
        self
    }
}

impl Storage for f16 {
    const NAME: &'static str = "f16";
    const TOLERANCE: f32 = 4e-3;
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

impl Storage for bf16 {
    const NAME: &'static str = "bf16";
    const TOLERANCE: f32 = 3e-2;
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

fn convert<T: Storage>(v: &[f32]) -> Vec<T> {
    v.iter().map(|&x| T::from_f32(x)).collect()
}

/// Largest difference relative to the largest expected value (at least 1).
fn relative_diff<T: Storage>(ours: &[T], expected: &[f32]) -> f32 {
    assert_eq!(ours.len(), expected.len());
    let scale = expected.iter().fold(1f32, |m, v| m.max(v.abs()));
    let diff = ours
        .iter()
        .zip(expected)
        .fold(0f32, |m, (a, b)| m.max((a.to_f32() - b).abs()));
    diff / scale
}

type Depthwise<T> = unsafe extern "C" fn(
    *const T,
    *const T,
    *const T,
    *mut T,
    usize,
    u32,
    u32,
    u32,
    u32,
    u32,
    u32,
    u32,
    u32,
    u32,
    u32,
    i32,
);

fn check_depthwise<T: Storage>(kernel_fn: Depthwise<T>) {
    let cpu = Device::Cpu;
    // The op's unit-test edge cases (1-pixel planes, odd sizes, both
    // strides) and a MobileNet-like layer.
    for (n, c, h, w, stride) in [
        (2, 5, 7, 8, 1),
        (2, 5, 9, 10, 2),
        (2, 5, 8, 9, 2),
        (1, 3, 1, 2, 2),
        (2, 3, 2, 2, 2),
        (1, 4, 1, 1, 1),
        (1, 32, 30, 31, 1),
        (1, 16, 19, 19, 2),
    ] {
        let input = Tensor::randn(0f32, 1., (n, c, h, w), &cpu).unwrap();
        let kernel = Tensor::randn(0f32, 1., (c, 1, 3, 3), &cpu).unwrap();
        let bias = Tensor::randn(0f32, 1., c, &cpu).unwrap();
        let pad = Padding::same(h, w, 3, stride);
        let (x, k, b) = (
            convert::<T>(&values(&input)),
            convert::<T>(&values(&kernel)),
            convert::<T>(&values(&bias)),
        );
        for act in ACTIVATIONS {
            let expected = depthwise_conv2d(&input, &kernel, &bias, stride, pad, act).unwrap();
            let (_, _, oh, ow) = expected.dims4().unwrap();
            let mut out = vec![T::from_f32(f32::NAN); n * c * oh * ow];
            // SAFETY: the buffers have the sizes the parameters say.
            unsafe {
                kernel_fn(
                    x.as_ptr(),
                    k.as_ptr(),
                    b.as_ptr(),
                    out.as_mut_ptr(),
                    n * c,
                    c as u32,
                    h as u32,
                    w as u32,
                    3,
                    3,
                    oh as u32,
                    ow as u32,
                    stride as u32,
                    pad.top as u32,
                    pad.left as u32,
                    code(act),
                )
            };
            let diff = relative_diff(&out, &values(&expected));
            assert!(
                diff <= T::TOLERANCE,
                "{n}x{c}x{h}x{w} stride {stride} {act:?} in {}: {diff}",
                T::NAME
            );
        }
    }
}

#[test]
fn depthwise_kernel_computes_what_the_cpu_op_computes() {
    check_depthwise::<f32>(depthwise_conv2d_f32);
    check_depthwise::<f16>(depthwise_conv2d_f16);
    check_depthwise::<bf16>(depthwise_conv2d_bf16);
}

type BiasActivation<T> = unsafe extern "C" fn(*const T, *const T, *mut T, usize, u32, usize, i32);

fn check_bias_activation<T: Storage>(kernel_fn: BiasActivation<T>) {
    for dims in [vec![2usize, 16, 13, 13], vec![3, 7, 5], vec![4, 3]] {
        let x = Tensor::randn(0f32, 4., dims.as_slice(), &Device::Cpu).unwrap();
        let bias = Tensor::randn(0f32, 1., dims[1], &Device::Cpu).unwrap();
        let (xs, bs) = (convert::<T>(&values(&x)), convert::<T>(&values(&bias)));
        for act in ACTIVATIONS {
            let expected = bias_activation(&x, &bias, act).unwrap();
            let mut out = vec![T::from_f32(f32::NAN); xs.len()];
            // SAFETY: the buffers have the sizes the parameters say.
            unsafe {
                kernel_fn(
                    xs.as_ptr(),
                    bs.as_ptr(),
                    out.as_mut_ptr(),
                    xs.len(),
                    dims[1] as u32,
                    dims[2..].iter().product(),
                    code(act),
                )
            };
            let diff = relative_diff(&out, &values(&expected));
            assert!(
                diff <= T::TOLERANCE,
                "{dims:?} {act:?} in {}: {diff}",
                T::NAME
            );
        }
    }
}

#[test]
fn bias_activation_kernel_computes_what_the_cpu_op_computes() {
    check_bias_activation::<f32>(bias_activation_f32);
    check_bias_activation::<f16>(bias_activation_f16);
    check_bias_activation::<bf16>(bias_activation_bf16);
}

/// A resize kernel reading pixels of type `P`: RGB bytes, or NV12 planes'
/// addresses.
type Resize<P, T> = unsafe extern "C" fn(
    *const P,
    *const u32,
    *const u32,
    *const f32,
    *mut T,
    u32,
    u32,
    u32,
    f32,
    f32,
    f32,
    i32,
);

/// What `kernel_fn` writes for a batch's pixels, geometry and tables.
fn run_resize<P, T: Storage>(
    kernel_fn: Resize<P, T>,
    pixels: &[P],
    geometry: &[u32],
    t: &TapTables,
) -> Vec<T> {
    let mut out = vec![T::from_f32(f32::NAN); t.outputs()];
    // SAFETY: the buffers are the batch's, sized as its fields say, and
    // NV12 planes' addresses point into buffers the caller holds.
    unsafe {
        kernel_fn(
            pixels.as_ptr(),
            geometry.as_ptr(),
            t.tap_index.as_ptr(),
            t.tap_frac.as_ptr(),
            out.as_mut_ptr(),
            t.images,
            t.out_w,
            t.out_h,
            t.scale,
            t.offset,
            t.fill,
            t.round,
        )
    };
    out
}

/// Noise images of sizes that shrink, stretch and letterbox each way.
fn noise_images() -> Vec<(usize, usize, Vec<u8>)> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    [(640, 360), (768, 576), (101, 57), (300, 300), (33, 200)]
        .into_iter()
        .map(|(w, h)| {
            let bytes = (0..w * h * 3)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 56) as u8
                })
                .collect();
            (w, h, bytes)
        })
        .collect()
}

/// The batch the GPU would get, run through the kernel: the same values as
/// the CPU's, bit for bit (the arithmetic is the same, in the same order).
fn check_resize<T: Storage>(kernel_fn: Resize<u8, T>, dtype: DType) {
    let images = noise_images();
    let views: Vec<ImageView> = images
        .iter()
        .map(|(w, h, rgb)| ImageView::new(*w, *h, rgb).unwrap())
        .collect();
    for (name, size, plan) in resize_rules() {
        let plans: Vec<ResizePlan> = views.iter().map(plan).collect();
        let expected = planar_batch(&views, &plans, size, &Device::Cpu, dtype).unwrap();
        let expected = values(&expected.to_dtype(DType::F32).unwrap());
        let b = GpuResizeBatch::new(&views, &plans, size).unwrap();
        let out = run_resize(kernel_fn, &b.rgb, &b.geometry, &b.tables);
        assert_eq!(out.len(), expected.len());
        let differing = out
            .iter()
            .zip(&expected)
            .filter(|(a, e)| a.to_f32().to_bits() != e.to_bits())
            .count();
        assert_eq!(differing, 0, "{name} in {}: values differ", T::NAME);
    }
}

#[test]
fn resize_kernel_gives_the_cpu_preprocessing_bit_for_bit() {
    check_resize::<f32>(resize_planar_f32, DType::F32);
    check_resize::<f16>(resize_planar_f16, DType::F16);
    check_resize::<bf16>(resize_planar_bf16, DType::BF16);
}

/// `frame` in host memory, as the emulated kernel reads it, seen at
/// `width` x `height`.
fn host_view(frame: &Nv12, width: usize, height: usize, color: YuvColor) -> ImageView<'_> {
    let (luma, chroma) = (frame.luma.as_ptr() as u64, frame.chroma.as_ptr() as u64);
    // SAFETY: the planes are the frame's, alive while the view is used.
    unsafe { ImageView::cuda_nv12(width, height, frame.planes(1, luma, chroma, color)) }.unwrap()
}

/// Frames decoded to NV12 in GPU memory, resized by the kernel, against the
/// CPU path (the same frames converted to RGB first, then resized): each
/// tap's pixels converted as a decoder converts them, so within a level.
#[test]
fn nv12_kernel_gives_the_cpu_preprocessing_of_the_converted_frame() {
    let frames: Vec<Nv12> = [(640, 360), (101, 57), (33, 200)]
        .into_iter()
        .enumerate()
        .map(|(seed, (w, h))| Nv12::noise(w, h, seed as u64 + 7))
        .collect();
    for color in COLORS {
        let views: Vec<ImageView> = frames
            .iter()
            .map(|f| host_view(f, f.width, f.height, color))
            .collect();
        let rgb: Vec<Vec<u8>> = frames.iter().map(|f| f.to_rgb(color)).collect();
        let rgb_views: Vec<ImageView> = frames
            .iter()
            .zip(&rgb)
            .map(|(f, rgb)| ImageView::new(f.width, f.height, rgb).unwrap())
            .collect();
        for (name, size, plan) in resize_rules() {
            let plans: Vec<ResizePlan> = rgb_views.iter().map(plan).collect();
            let expected = planar_batch(&rgb_views, &plans, size, &Device::Cpu, DType::F32);
            let expected = values(&expected.unwrap());
            let b = Nv12ResizeBatch::new(&views, &plans, size).unwrap();
            assert_eq!(b.context, 1);
            let ours: Vec<f32> =
                run_resize(resize_nv12_planar_f32, &b.planes, &b.geometry, &b.tables);
            let levels = level_diff(&ours, &expected, b.tables.scale);
            assert!(levels <= 1.01, "{name}, {color:?}: {levels} levels off");
            let half: Vec<f16> =
                run_resize(resize_nv12_planar_f16, &b.planes, &b.geometry, &b.tables);
            let brain: Vec<bf16> =
                run_resize(resize_nv12_planar_bf16, &b.planes, &b.geometry, &b.tables);
            assert!(relative_diff(&half, &ours) <= f16::TOLERANCE, "{name}: f16");
            assert!(
                relative_diff(&brain, &ours) <= bf16::TOLERANCE,
                "{name}: bf16"
            );
        }
    }
}

/// A frame larger than the view the model sees (a camera's width limit) is
/// sampled where the view's pixels fall on it: a luma ramp across a
/// 1.5x wider frame gives what the CPU gives for the ideal smaller image.
#[test]
fn nv12_kernel_samples_a_larger_frame_at_the_views_pixel_centres() {
    let (real_w, real_h, w, h) = (600usize, 90usize, 400usize, 60usize);
    let ramp = |x: f32| 20.0 + 200.0 * x / (real_w - 1) as f32;
    let frame = Nv12::new(real_w, real_h, |plane, x, _| match plane {
        0 => ramp(x as f32).round() as u8,
        _ => 128,
    });
    let color = COLORS[2]; // full range: grey levels are the luma itself
    let ratio = real_w as f32 / w as f32;
    // The ideal view: each pixel the ramp's value at its centre on the frame.
    let ideal: Vec<u8> = (0..h)
        .flat_map(|_| {
            (0..w).flat_map(move |x| {
                let p = (x as f32 + 0.5) * ratio - 0.5;
                [ramp(p).round() as u8; 3]
            })
        })
        .collect();
    let ideal = ImageView::new(w, h, &ideal).unwrap();
    for (name, size, plan) in resize_rules() {
        let plans = vec![plan(&ideal)];
        let expected = planar_batch(&[ideal], &plans, size, &Device::Cpu, DType::F32).unwrap();
        let b = Nv12ResizeBatch::new(&[host_view(&frame, w, h, color)], &plans, size).unwrap();
        let ours: Vec<f32> = run_resize(resize_nv12_planar_f32, &b.planes, &b.geometry, &b.tables);
        let levels = level_diff(&ours, &values(&expected), b.tables.scale);
        assert!(levels <= 1.01, "{name}: {levels} levels off");
    }
}

#[test]
fn a_view_larger_than_its_frame_or_mixed_contexts_are_refused() {
    let frame = Nv12::new(64, 32, |_, _, _| 100);
    let color = YuvColor::default();
    let planes = frame.planes(1, frame.luma.as_ptr() as u64, 0, color);
    // SAFETY: refused before anything reads the planes.
    assert!(unsafe { ImageView::cuda_nv12(65, 32, planes) }.is_err());
    let other = CudaNv12 {
        context: 2,
        ..planes
    };
    // SAFETY: as above; the batch is refused before the kernel runs.
    let views = [host_view(&frame, 64, 32, color), unsafe {
        ImageView::cuda_nv12(64, 32, other).unwrap()
    }];
    let plans: Vec<ResizePlan> = views
        .iter()
        .map(|v| ResizePlan::tensorflow(v, 30, 30, 1.0, 0.0))
        .collect();
    let err = Nv12ResizeBatch::new(&views, &plans, (30, 30)).unwrap_err();
    assert!(err.to_string().contains("two CUDA contexts"), "{err}");
    let cpu = planar_batch(&views[..1], &plans[..1], (30, 30), &Device::Cpu, DType::F32);
    assert!(cpu.unwrap_err().to_string().contains("GPU memory"));
}
