//! The CUDA kernels (`cuda/ops.cu`) and the detectors on the GPU must give
//! what the CPU gives. Built with `--features cuda` and run on a machine
//! with an NVIDIA GPU; without one every test fails, saying so.

#![cfg(feature = "cuda")]

mod common;

use candle_core::{DType, Device, Tensor};
use common::{assets, level_diff, resize_rules, JpegDecoder, Nv12, Reference, ACTIVATIONS, COLORS};
use vigil_inference::convert::{save_safetensors, ssdlite_tfjs};
use vigil_inference::metrics::mean_average_precision;
use vigil_inference::ops::{bias_activation, depthwise_conv2d, Padding};
use vigil_inference::preprocess::{planar_batch, ResizePlan};
use vigil_inference::tfjs::TfjsGraph;
use vigil_inference::{Detection, Detector, ImageView, ModelFiles, Precision};

fn gpu() -> Device {
    vigil_inference::select_device("cuda").expect("these tests need an NVIDIA GPU and its driver")
}

/// The float types this build runs on the GPU: bf16 only when built for
/// compute capability 8.0 or newer (candle's bf16 kernels need it).
fn gpu_dtypes() -> Vec<DType> {
    let mut dtypes = vec![DType::F32, DType::F16];
    if vigil_inference::bf16_on_gpu() {
        dtypes.push(DType::BF16);
    } else {
        eprintln!(
            "bf16 not checked: this build targets {:?}",
            vigil_inference::cuda_built_for()
        );
    }
    dtypes
}

/// Largest difference between `gpu` (any dtype) and the CPU's f32 `cpu`,
/// relative to the largest CPU value (at least 1).
fn relative_diff(gpu: &Tensor, cpu: &Tensor) -> f32 {
    assert_eq!(gpu.dims(), cpu.dims());
    let gpu = gpu
        .to_dtype(DType::F32)
        .and_then(|t| t.to_device(&Device::Cpu))
        .unwrap();
    let diff = (gpu - cpu).unwrap().abs().unwrap().max_all().unwrap();
    let scale = cpu.abs().unwrap().max_all().unwrap();
    diff.to_scalar::<f32>().unwrap() / scale.to_scalar::<f32>().unwrap().max(1.0)
}

/// How far each storage type may stray from f32: f16 keeps 11 significant
/// bits, bf16 8, and the inputs themselves are rounded to them.
fn tolerance(dtype: DType) -> f32 {
    match dtype {
        DType::F32 => 1e-5,
        DType::F16 => 4e-3,
        _ => 3e-2,
    }
}

#[test]
fn depthwise_matches_the_cpu() {
    let gpu = gpu();
    // The unit test's edge cases, and MobileNetV2's layer shapes.
    let shapes = [
        (2, 5, 7, 8, 1),
        (2, 5, 9, 10, 2),
        (1, 3, 1, 2, 2),
        (2, 32, 150, 150, 1),
        (1, 96, 150, 150, 2),
        (4, 960, 10, 10, 1),
        (1, 8, 19, 19, 2),
    ];
    for (n, c, h, w, stride) in shapes {
        let input = Tensor::randn(0f32, 1., (n, c, h, w), &Device::Cpu).unwrap();
        let kernel = Tensor::randn(0f32, 1., (c, 1, 3, 3), &Device::Cpu).unwrap();
        let bias = Tensor::randn(0f32, 1., c, &Device::Cpu).unwrap();
        let pad = Padding::same(h, w, 3, stride);
        for act in ACTIVATIONS {
            let cpu = depthwise_conv2d(&input, &kernel, &bias, stride, pad, act).unwrap();
            for dtype in gpu_dtypes() {
                let on_gpu = |t: &Tensor| t.to_dtype(dtype).unwrap().to_device(&gpu).unwrap();
                let ours = depthwise_conv2d(
                    &on_gpu(&input),
                    &on_gpu(&kernel),
                    &on_gpu(&bias),
                    stride,
                    pad,
                    act,
                )
                .unwrap();
                assert_eq!(ours.dtype(), dtype);
                let diff = relative_diff(&ours, &cpu);
                assert!(
                    diff <= tolerance(dtype),
                    "{n}x{c}x{h}x{w} stride {stride} {act:?} {dtype:?}: {diff}"
                );
            }
        }
    }
}

#[test]
fn bias_activation_matches_the_cpu() {
    let gpu = gpu();
    for dims in [vec![2, 16, 13, 13], vec![3, 7, 5], vec![1, 255, 52, 52]] {
        let x = Tensor::randn(0f32, 4., dims.as_slice(), &Device::Cpu).unwrap();
        let bias = Tensor::randn(0f32, 1., dims[1], &Device::Cpu).unwrap();
        for act in ACTIVATIONS {
            let cpu = bias_activation(&x, &bias, act).unwrap();
            for dtype in gpu_dtypes() {
                let on_gpu = |t: &Tensor| t.to_dtype(dtype).unwrap().to_device(&gpu).unwrap();
                let ours = bias_activation(&on_gpu(&x), &on_gpu(&bias), act).unwrap();
                let diff = relative_diff(&ours, &cpu);
                assert!(
                    diff <= tolerance(dtype),
                    "{dims:?} {act:?} {dtype:?}: {diff}"
                );
            }
        }
    }
}

/// Photos of several sizes, decoded as OpenCV would.
fn photos() -> Vec<common::Photo> {
    Reference::load("yolov3_tiny.opencv.json").photos(JpegDecoder::LibjpegTurbo)
}

fn views(photos: &[common::Photo]) -> Vec<ImageView<'_>> {
    photos
        .iter()
        .map(|p| ImageView::new(p.width, p.height, &p.rgb).unwrap())
        .collect()
}

/// NV12 frames in GPU memory, as NVDEC leaves them, resize as the CPU
/// resizes the same frames converted to RGB (within a level, in every
/// matrix and range); in a batch with RGB images each lands in its place.
#[test]
fn nv12_frames_in_gpu_memory_resize_as_the_cpu_path() {
    use candle_core::cuda_backend::cudarc::driver::DevicePtr;
    let gpu = gpu();
    let Device::Cuda(cuda) = &gpu else {
        unreachable!("gpu() is a CUDA device")
    };
    let context = vigil_inference::gpu_context(&gpu)
        .expect("a CUDA device")
        .context;
    let stream = cuda.cuda_stream();
    let photos = photos();
    for (seed, (w, h)) in [(640usize, 360usize), (101, 57)].into_iter().enumerate() {
        let frame = Nv12::noise(w, h, seed as u64 + 11);
        let luma = cuda.clone_htod(&frame.luma[..]).unwrap();
        let chroma = cuda.clone_htod(&frame.chroma[..]).unwrap();
        let (luma_at, _luma_read) = luma.device_ptr(&stream);
        let (chroma_at, _chroma_read) = chroma.device_ptr(&stream);
        for color in COLORS {
            let planes = frame.planes(context, luma_at, chroma_at, color);
            // SAFETY: the planes are alive until the end of this iteration.
            let on_gpu = unsafe { ImageView::cuda_nv12(w, h, planes) }.unwrap();
            let rgb = frame.to_rgb(color);
            let converted = ImageView::new(w, h, &rgb).unwrap();
            let photo = ImageView::new(photos[0].width, photos[0].height, &photos[0].rgb).unwrap();
            for (name, size, plan) in resize_rules() {
                let plans = vec![plan(&photo), plan(&converted)];
                let cpu = planar_batch(&[photo, converted], &plans, size, &Device::Cpu, DType::F32)
                    .unwrap();
                let ours = planar_batch(&[photo, on_gpu], &plans, size, &gpu, DType::F32)
                    .unwrap()
                    .to_device(&Device::Cpu)
                    .unwrap();
                let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let scale = plans[0].scale();
                let levels = level_diff(&values(&ours), &values(&cpu), scale);
                assert!(
                    levels <= 1.01,
                    "{w}x{h} {name} {color:?}: {levels} levels off"
                );
            }
        }
    }
}

/// The GPU runs the CPU's plans with the same arithmetic in the same
/// order: every value is the same, in every storage type.
#[test]
fn preprocessing_matches_the_cpu_exactly() {
    let gpu = gpu();
    let photos = photos();
    let images = views(&photos);
    for (name, size, plan) in resize_rules() {
        let plans: Vec<ResizePlan> = images.iter().map(plan).collect();
        for dtype in gpu_dtypes() {
            let cpu = planar_batch(&images, &plans, size, &Device::Cpu, dtype).unwrap();
            let ours = planar_batch(&images, &plans, size, &gpu, dtype)
                .unwrap()
                .to_device(&Device::Cpu)
                .unwrap();
            assert_eq!(ours.dims(), cpu.dims());
            let as_f32 = |t: &Tensor| {
                t.to_dtype(DType::F32)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            };
            let (ours, cpu) = (as_f32(&ours), as_f32(&cpu));
            let differing = ours.iter().zip(&cpu).filter(|(a, b)| a != b).count();
            assert_eq!(differing, 0, "{name} {dtype:?}: {differing} values differ");
        }
    }
}

fn detect_all(detector: &dyn Detector, photos: &[common::Photo]) -> Vec<Vec<Detection>> {
    detector.detect(&views(photos)).expect("detect")
}

/// The model on the GPU in `precision` against the CPU's f32: mAP@0.5,
/// f32's detections from 0.3 taken as ground truth.
fn check_model(files: &ModelFiles, name: &str, precisions: &[(Precision, f32)]) {
    let photos = photos();
    let load = |device: &Device, p: Precision, score: f32| {
        let mut d = files.load(device, p).expect("load");
        d.set_score_threshold(score);
        d
    };
    let truth = detect_all(load(&Device::Cpu, Precision::F32, 0.3).as_ref(), &photos);
    let objects: usize = truth.iter().map(Vec::len).sum();
    assert!(objects >= 10, "{name}: only {objects} objects on the CPU");
    for &(precision, min) in precisions {
        if precision == Precision::Bf16 && !vigil_inference::bf16_on_gpu() {
            continue;
        }
        let ranked = detect_all(load(&gpu(), precision, 0.1).as_ref(), &photos);
        let map = mean_average_precision(&truth, &ranked, 0.5);
        eprintln!(
            "{name} on CUDA in {precision:?}: mAP@0.5 vs CPU f32 = {map:.4} ({objects} objects)"
        );
        assert!(map >= min, "{name} {precision:?} on CUDA: mAP {map}");
    }
}

/// f32 on the GPU is the same model; f16 and bf16 must pass the bar the
/// CPU's reduced precisions pass.
const ON_GPU: [(Precision, f32); 3] = [
    (Precision::F32, 0.99),
    (Precision::F16, 0.95),
    (Precision::Bf16, 0.95),
];

#[test]
fn ssdlite_on_the_gpu_finds_what_the_cpu_finds() {
    let graph = TfjsGraph::load(&assets().join("models/ssdlite_mobilenet_v2_coco_tfjs/model.json"))
        .expect("TF.js graph");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ssdlite.safetensors");
    save_safetensors(&ssdlite_tfjs::import(&graph).expect("import"), &path).unwrap();
    check_model(&ModelFiles::Safetensors(path), "ssdlite", &ON_GPU);
}

#[test]
fn yolov3_tiny_on_the_gpu_finds_what_the_cpu_finds() {
    let dir = assets().join("models/yolov3_tiny_darknet");
    let files = ModelFiles::Darknet {
        cfg: dir.join("yolov3-tiny.cfg"),
        weights: dir.join("yolov3-tiny.weights"),
        names: Some(dir.join("coco.names")),
    };
    check_model(&files, "yolov3-tiny", &ON_GPU);
}
