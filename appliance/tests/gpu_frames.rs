//! On an NVIDIA GPU (a `cuda` build): NVDEC decodes into the model's CUDA
//! context, sampled frames reach the model in GPU memory, and the model
//! finds there what it finds in the same frames copied through the host.
//! Without a GPU every test fails, saying so. `scripts/gpu-bundle.sh
//! frames` packs this test and the ffmpeg libraries for a GPU machine
//! without a Rust toolchain.

#![cfg(feature = "cuda")]

mod common;

use vigil::frame_view::gpu_frame_view;
use vigil_inference::convert::{save_safetensors, ssdlite_tfjs};
use vigil_inference::metrics::mean_average_precision;
use vigil_inference::tfjs::TfjsGraph;
use vigil_inference::{Detection, ImageView, ModelFiles, Precision};
use vigil_ingest::{DecodeOptions, DecoderKind, GpuTarget, HwAccel, SourceUrl, VideoInput};

/// Frames compared, one in `EVERY` of the clip's.
const FRAMES: usize = 30;
const EVERY: usize = 4;

#[test]
fn nvdec_frames_reach_the_model_in_gpu_memory_and_give_the_host_paths_detections() {
    vigil_ingest::init().unwrap();
    let device = vigil_inference::select_device("cuda")
        .expect("this test needs an NVIDIA GPU and its driver");
    let context = vigil_inference::gpu_context(&device).expect("a CUDA device");
    let models = tempfile::tempdir().unwrap();
    let model = models.path().join("ssdlite.safetensors");
    let graph =
        TfjsGraph::load(&common::assets().join("models/ssdlite_mobilenet_v2_coco_tfjs/model.json"))
            .unwrap();
    save_safetensors(&ssdlite_tfjs::import(&graph).unwrap(), &model).unwrap();
    let detector = ModelFiles::Safetensors(model)
        .load(&device, Precision::F32)
        .unwrap();

    let clip = common::assets().join("video/bikes.mp4");
    let url = SourceUrl::parse(&format!("file://{}", clip.display())).unwrap();
    let options = DecodeOptions {
        hwaccel: HwAccel::Cuda,
        gpu_target: Some(GpuTarget {
            ordinal: context.ordinal,
            context: context.context,
        }),
        ..Default::default()
    };
    let mut input = VideoInput::open_with(&url, options).unwrap();
    assert_eq!(input.decoder_kind(), DecoderKind::Cuda, "NVDEC decodes");
    assert!(
        input.frames_stay_on_gpu(),
        "NVDEC shares the model's CUDA context (the log says why not)"
    );

    let (mut on_gpu, mut on_host) = (Vec::new(), Vec::new());
    let mut decoded = 0;
    while on_gpu.len() < FRAMES {
        input
            .next_frame()
            .unwrap()
            .expect("the clip has enough frames");
        decoded += 1;
        if decoded % EVERY != 0 {
            continue;
        }
        let frame = input
            .gpu_frame()
            .expect("an NV12 frame in the model's context");
        let (w, h, rgb) = input.convert_to_rgb().unwrap();
        assert_eq!(frame.size(), (w, h));
        assert_eq!(
            frame.to_rgb().unwrap(),
            rgb,
            "the on-demand picture is the host path's"
        );
        on_gpu.push(frame);
        on_host.push((w as usize, h as usize, rgb));
    }

    let host_views: Vec<ImageView> = on_host
        .iter()
        .map(|(w, h, rgb)| ImageView::new(*w, *h, rgb).unwrap())
        .collect();
    let gpu_views: Vec<ImageView> = on_gpu.iter().map(|f| gpu_frame_view(f).unwrap()).collect();
    let mut from_host: Vec<Vec<Detection>> = Vec::new();
    let mut from_gpu: Vec<Vec<Detection>> = Vec::new();
    // Batches of 8, as the analysis stage forms them.
    for (host, gpu) in host_views.chunks(8).zip(gpu_views.chunks(8)) {
        from_host.extend(detector.detect(host).unwrap());
        from_gpu.extend(detector.detect(gpu).unwrap());
    }
    let objects: usize = from_host.iter().map(Vec::len).sum();
    assert!(objects >= FRAMES, "the street clip has objects: {objects}");
    let map = mean_average_precision(&from_host, &from_gpu, 0.5);
    eprintln!(
        "{FRAMES} frames, {objects} objects via the host; mAP@0.5 of the GPU frames: {map:.4}"
    );
    assert!(map >= 0.95, "mAP@0.5 {map:.4}");
}
