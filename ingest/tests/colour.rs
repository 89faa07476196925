//! Frames become RGB with the matrix and range the stream says it has: HD
//! cameras label their streams BT.709, and swscale on its own would decode
//! them as BT.601 (a red of 233 instead of 255), unlike the GPU's
//! conversion of the same frames. Clips made with the ffmpeg CLI.

use std::path::{Path, PathBuf};
use std::process::Command;

use vigil_ingest::{SourceUrl, VideoInput};

/// A short H.264 clip of one `colour`, encoded with `matrix` and `range`
/// and labelled so.
fn clip(dir: &Path, name: &str, colour: &str, matrix: &str, range: &str) -> PathBuf {
    let out = dir.join(format!("{name}.mp4"));
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("color=c={colour}:s=64x64:d=0.2"))
        .arg("-vf")
        .arg(format!(
            "scale=out_color_matrix={matrix}:out_range={range},format=yuv420p"
        ))
        .args([
            "-c:v",
            "libx264",
            "-colorspace",
            matrix,
            "-color_range",
            range,
        ])
        .arg(&out)
        .status()
        .expect("the ffmpeg CLI (make test installs it)");
    assert!(status.success(), "ffmpeg made {name}");
    out
}

/// The first frame's mean R, G and B.
fn mean_rgb(path: &Path) -> [f64; 3] {
    let url = SourceUrl::File {
        path: path.to_path_buf(),
        looping: false,
        realtime: false,
    };
    let mut input = VideoInput::open(&url).unwrap();
    input.next_frame().unwrap().expect("a frame");
    let (_, _, rgb) = input.convert_to_rgb().unwrap();
    let mut sums = [0f64; 3];
    for pixel in rgb.chunks_exact(3) {
        for (sum, &v) in sums.iter_mut().zip(pixel) {
            *sum += v as f64;
        }
    }
    sums.map(|s| s / (rgb.len() / 3) as f64)
}

#[test]
fn frames_are_converted_with_the_matrix_and_range_they_are_labelled_with() {
    vigil_ingest::init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let red = mean_rgb(&clip(dir.path(), "red709", "red", "bt709", "tv"));
    assert!(
        red[0] >= 250.0 && red[1] <= 6.0 && red[2] <= 6.0,
        "BT.709 red read as {red:?}"
    );
    let grey = mean_rgb(&clip(
        dir.path(),
        "grey601full",
        "0x202020",
        "bt470bg",
        "pc",
    ));
    for v in grey {
        assert!(
            (v - 32.0).abs() <= 2.0,
            "full-range grey 32 read as {grey:?}"
        );
    }
}
