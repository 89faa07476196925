//! Hardware decoding through the same `VideoInput` as software decoding.
//! On a machine with an NVIDIA GPU the CUDA path must decode the same
//! pictures as software; on one without (CI), asking for CUDA must fall
//! back to software and still decode.

use std::path::PathBuf;

use vigil_ingest::{DecodeOptions, DecoderKind, GpuTarget, HwAccel, SourceUrl, VideoInput};

fn bikes() -> SourceUrl {
    let assets = std::env::var_os("VIGIL_TEST_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/assets"));
    SourceUrl::File {
        path: assets.join("video/bikes.mp4"), // H.264, 640x272, 250 frames
        looping: false,
        realtime: false,
    }
}

/// Timestamps of every frame, and frames 10 and 200 as RGB.
fn decode(hwaccel: HwAccel) -> (DecoderKind, Vec<i64>, Vec<Vec<u8>>) {
    let mut input = VideoInput::open_with(
        &bikes(),
        DecodeOptions {
            hwaccel,
            threads: 1,
            ..Default::default()
        },
    )
    .expect("open bikes.mp4");
    let kind = input.decoder_kind();
    let (mut pts, mut pictures) = (Vec::new(), Vec::new());
    while let Some(t) = input.next_frame().expect("decode") {
        if pts.len() == 10 || pts.len() == 200 {
            let (w, h, rgb) = input.convert_to_rgb().expect("rgb");
            assert_eq!((w, h), (640, 272));
            pictures.push(rgb);
        }
        pts.push(t);
    }
    (kind, pts, pictures)
}

#[test]
fn cuda_decodes_the_same_pictures_as_software_or_falls_back() {
    vigil_ingest::init().unwrap();
    let (soft_kind, soft_pts, soft) = decode(HwAccel::None);
    assert_eq!(soft_kind, DecoderKind::Software);
    assert_eq!(soft_pts.len(), 250);

    let (kind, pts, pictures) = decode(HwAccel::Cuda);
    eprintln!("asked for cuda, got {kind}");
    let has_gpu = std::path::Path::new("/dev/nvidiactl").exists();
    assert_eq!(
        kind,
        if has_gpu {
            DecoderKind::Cuda
        } else {
            DecoderKind::Software
        }
    );
    assert_eq!(pts, soft_pts, "same frames, same timestamps");
    for (hw, sw) in pictures.iter().zip(&soft) {
        let diff: u64 = hw.iter().zip(sw).map(|(a, b)| a.abs_diff(*b) as u64).sum();
        let mean = diff as f64 / hw.len() as f64;
        eprintln!("mean |cuda - software| = {mean:.3} levels");
        // H.264 decoding is bit-exact; only the colour conversion path of
        // the downloaded NV12 may differ by rounding.
        assert!(mean < 1.0, "{mean}");
    }
}

#[test]
fn a_codec_without_hardware_support_decodes_in_software_under_auto() {
    vigil_ingest::init().unwrap();
    let assets = std::env::var_os("VIGIL_TEST_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/assets"));
    let path = assets.join("video/vtest.avi"); // MS-MPEG4 v3: no NVDEC, no VA-API
    if !path.exists() {
        return; // the device run carries only bikes.mp4
    }
    let url = SourceUrl::File {
        path,
        looping: false,
        realtime: false,
    };
    let mut input = VideoInput::open_with(&url, DecodeOptions::default()).unwrap();
    assert_eq!(input.decoder_kind(), DecoderKind::Software);
    assert!(input.next_frame().unwrap().is_some());
}

/// A model's CUDA context offered to a camera on a machine without NVDEC
/// (CI) changes nothing: software decoding, frames handed on as RGB. (On a
/// GPU, `appliance/tests/gpu_frames.rs` checks the frames that stay there.)
#[test]
fn a_gpu_target_without_nvdec_leaves_frames_in_host_memory() {
    if std::path::Path::new("/dev/nvidiactl").exists() {
        eprintln!("skipped: this machine has an NVIDIA GPU (see appliance/tests/gpu_frames.rs)");
        return;
    }
    vigil_ingest::init().unwrap();
    let options = DecodeOptions {
        hwaccel: HwAccel::Auto,
        gpu_target: Some(GpuTarget {
            ordinal: 0,
            context: 0x1000,
        }),
        ..Default::default()
    };
    let mut input = VideoInput::open_with(&bikes(), options).expect("open bikes.mp4");
    assert!(!input.frames_stay_on_gpu());
    input.next_frame().unwrap().expect("a frame");
    assert!(input.gpu_frame().is_none());
    let (w, h, rgb) = input.convert_to_rgb().unwrap();
    assert_eq!(rgb.len(), (w * h * 3) as usize);
}
