//! The latest frames of each camera with their detections, for the live view.
//!
//! The pipeline publishes every analysed frame here as raw RGB, or as a way
//! to get it (a frame still in GPU memory); the picture is fetched and a
//! JPEG encoded only when a browser asks for it, once per frame.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, OnceLock, RwLock};

use serde::{Deserialize, Serialize};

/// Frames kept per camera, so a browser that read the detections of frame N
/// can still fetch frame N's picture after N+1 arrived. Each is a full RGB
/// frame: keep the ring short.
const KEPT_PER_CAMERA: usize = 2;
const JPEG_QUALITY: u8 = 80;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LiveDetection {
    pub label: String,
    pub score: f32,
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// The tracked object this detection belongs to, once confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<u64>,
}

/// What the hot store keeps per camera (JSON), so the latest detections
/// outlive a restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatestDetections {
    pub seq: u64,
    pub frame_wall_ms: i64,
    pub width: u32,
    pub height: u32,
    pub detections: Vec<LiveDetection>,
}

/// A frame's picture: packed RGB (`height` rows of `width * 3` bytes), or
/// how to get it when someone looks (`None` if that fails; logged there).
pub enum FramePixels {
    Rgb(Vec<u8>),
    OnDemand(Box<dyn Fn() -> Option<Vec<u8>> + Send + Sync>),
}

impl std::fmt::Debug for FramePixels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FramePixels::Rgb(rgb) => write!(f, "Rgb({} bytes)", rgb.len()),
            FramePixels::OnDemand(_) => f.write_str("OnDemand"),
        }
    }
}

/// One analysed frame.
#[derive(Debug)]
pub struct Snapshot {
    pub seq: u64,
    pub frame_wall_ms: i64,
    pub width: u32,
    pub height: u32,
    pub detections: Vec<LiveDetection>,
    pixels: FramePixels,
    /// The picture fetched on demand, kept for the frame's other uses.
    fetched: OnceLock<Option<Vec<u8>>>,
    jpeg: OnceLock<Option<Vec<u8>>>,
    /// The same frame with its detections drawn on it.
    annotated: OnceLock<Option<Vec<u8>>>,
}

impl Snapshot {
    pub fn new(
        seq: u64,
        frame_wall_ms: i64,
        width: u32,
        height: u32,
        pixels: FramePixels,
        detections: Vec<LiveDetection>,
    ) -> Self {
        Self {
            seq,
            frame_wall_ms,
            width,
            height,
            detections,
            pixels,
            fetched: OnceLock::new(),
            jpeg: OnceLock::new(),
            annotated: OnceLock::new(),
        }
    }

    fn rgb(&self) -> Option<&[u8]> {
        match &self.pixels {
            FramePixels::Rgb(rgb) => Some(rgb),
            FramePixels::OnDemand(fetch) => self.fetched.get_or_init(fetch).as_deref(),
        }
    }

    /// The frame as JPEG, encoded on first use.
    pub fn jpeg(&self) -> Option<&[u8]> {
        self.jpeg
            .get_or_init(|| encode_jpeg(self.rgb()?, self.width, self.height))
            .as_deref()
    }

    /// The frame with boxes drawn around its detections, as JPEG.
    pub fn annotated_jpeg(&self) -> Option<&[u8]> {
        self.annotated
            .get_or_init(|| {
                let mut rgb = self.rgb()?.to_vec();
                crate::stream::draw_boxes(&mut rgb, self.width, self.height, &self.detections);
                encode_jpeg(&rgb, self.width, self.height)
            })
            .as_deref()
    }
}

fn encode_jpeg(rgb: &[u8], width: u32, height: u32) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY);
    match enc.encode(rgb, width, height, image::ExtendedColorType::Rgb8) {
        Ok(()) => Some(out),
        Err(e) => {
            tracing::warn!(error = %e, "jpeg encoding failed");
            None
        }
    }
}

#[derive(Default)]
pub struct LiveFrames {
    cameras: RwLock<BTreeMap<String, VecDeque<Arc<Snapshot>>>>,
}

impl LiveFrames {
    pub fn publish(&self, camera: &str, snapshot: Snapshot) {
        let mut cams = self.cameras.write().unwrap_or_else(|p| p.into_inner());
        let ring = cams.entry(camera.to_string()).or_default();
        if ring.len() >= KEPT_PER_CAMERA {
            ring.pop_front();
        }
        ring.push_back(Arc::new(snapshot));
    }

    pub fn latest(&self, camera: &str) -> Option<Arc<Snapshot>> {
        let cams = self.cameras.read().unwrap_or_else(|p| p.into_inner());
        cams.get(camera)?.back().cloned()
    }

    /// Frame `seq` of `camera` if still kept, else the latest.
    pub fn get(&self, camera: &str, seq: Option<u64>) -> Option<Arc<Snapshot>> {
        let cams = self.cameras.read().unwrap_or_else(|p| p.into_inner());
        let ring = cams.get(camera)?;
        match seq {
            Some(s) => ring.iter().find(|f| f.seq == s).cloned(),
            None => ring.back().cloned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(seq: u64) -> Snapshot {
        Snapshot::new(seq, 0, 2, 2, FramePixels::Rgb(vec![128; 12]), vec![])
    }

    #[test]
    fn keeps_the_last_frames_and_encodes_a_real_jpeg() {
        let live = LiveFrames::default();
        for seq in 0..6 {
            live.publish("cam", snap(seq));
        }
        assert_eq!(live.latest("cam").unwrap().seq, 5);
        assert!(live.get("cam", Some(3)).is_none());
        let s = live.get("cam", Some(4)).unwrap();
        let jpeg = s.jpeg().unwrap();
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "JPEG start-of-image marker");
        assert!(live.latest("other").is_none());
    }

    #[test]
    fn a_picture_on_demand_is_fetched_once_and_only_when_asked_for() {
        let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = fetches.clone();
        let fetch = move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Some(vec![200; 12])
        };
        let detection = LiveDetection {
            label: "car".into(),
            score: 0.9,
            bbox: [0.0, 0.0, 1.0, 1.0],
            track: None,
        };
        let s = Snapshot::new(
            1,
            0,
            2,
            2,
            FramePixels::OnDemand(Box::new(fetch)),
            vec![detection],
        );
        assert_eq!(fetches.load(std::sync::atomic::Ordering::Relaxed), 0);
        assert_eq!(&s.jpeg().unwrap()[..2], &[0xFF, 0xD8]);
        assert_eq!(&s.annotated_jpeg().unwrap()[..2], &[0xFF, 0xD8]);
        assert_eq!(fetches.load(std::sync::atomic::Ordering::Relaxed), 1);
        let failing = Snapshot::new(2, 0, 2, 2, FramePixels::OnDemand(Box::new(|| None)), vec![]);
        assert!(failing.jpeg().is_none(), "no picture, no JPEG, no panic");
    }
}
