//! The in-process camera clip maker: a real H.264 file that our own decoder
//! reads back at the asked size, rate and length, looping a short source.

mod support;

use support::assets;
use vigil_ingest::clip::{make_camera_clip, ClipSpec};
use vigil_ingest::{DecodeOptions, HwAccel, SourceUrl, VideoInput};

#[test]
fn a_camera_clip_has_the_asked_size_rate_and_length_and_loops_its_source() {
    vigil_ingest::init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A 1 s cut of the street clip (10 fps), made into 3 s at 15 fps:
    // the source must loop and its frames repeat.
    let short = dir.path().join("short.mp4");
    support::ffmpeg(&[
        "-i",
        assets().join("video/vtest.avi").to_str().unwrap(),
        "-t",
        "1",
        "-c:v",
        "libx264",
        short.to_str().unwrap(),
    ]);
    let out = dir.path().join("cam.mp4");
    let spec = ClipSpec {
        width: 320,
        height: 180,
        fps: 15,
        seconds: 3,
        bit_rate: 400_000,
    };
    make_camera_clip(&short, &out, spec).unwrap();
    assert!(!dir.path().join("cam.mp4.partial").exists());

    let url = SourceUrl::File {
        path: out.clone(),
        looping: false,
        realtime: false,
    };
    let decode = DecodeOptions {
        hwaccel: HwAccel::None,
        ..Default::default()
    };
    let mut input = VideoInput::open_with(&url, decode).unwrap();
    assert_eq!(input.codec_name(), "h264");
    assert_eq!(input.frame_duration_us(), 1_000_000 / 15);
    let mut frames = 0;
    let mut last_pts = -1;
    while let Some(pts) = input.next_frame().unwrap() {
        assert!(pts > last_pts, "timestamps rise: {pts} after {last_pts}");
        last_pts = pts;
        if frames == 0 {
            let (w, h, rgb) = input.convert_to_rgb().unwrap();
            assert_eq!((w, h), (320, 180));
            // The street scene, not a blank picture.
            let mean = rgb.iter().map(|&v| v as f64).sum::<f64>() / rgb.len() as f64;
            assert!((40.0..220.0).contains(&mean), "mean pixel {mean}");
        }
        frames += 1;
    }
    assert_eq!(frames, 45, "3 s at 15 fps");
    let bytes = std::fs::metadata(&out).unwrap().len();
    // 400 kbit/s for 3 s is 150 kB; allow the rate control its slack.
    assert!((50_000..400_000).contains(&bytes), "{bytes} bytes");
}

#[test]
fn a_source_that_is_not_video_is_a_clear_error_and_leaves_no_file() {
    vigil_ingest::init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.mp4");
    std::fs::write(&junk, b"not a video at all").unwrap();
    let out = dir.path().join("cam.mp4");
    let err = make_camera_clip(&junk, &out, ClipSpec::camera_1080p30(1)).unwrap_err();
    assert!(err.to_string().contains("junk.mp4"), "{err}");
    assert!(!out.exists());
}
