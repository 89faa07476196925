//! Frames that stay in GPU memory: NVDEC's NV12 output, decoded into the
//! model's CUDA context, handed to the model where it is. The host gets a
//! copy only when someone needs the picture (an event snapshot, a browser
//! watching the live view).

use std::fmt;

use ff::ffi;
use ffmpeg_next as ff;

use crate::decode::{scale_to_rgb, Scaler};
use crate::hwaccel;
use crate::IngestError;

/// Where an NV12 frame's planes are in GPU memory: a luma plane and an
/// interleaved chroma plane (U V) of half the height, rows `pitch` bytes
/// apart, in CUDA context `context`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevicePlanes {
    /// The `CUcontext` the memory belongs to, as an address.
    pub context: usize,
    pub width: u32,
    pub height: u32,
    pub luma: u64,
    pub luma_pitch: u32,
    pub chroma: u64,
    pub chroma_pitch: u32,
    /// BT.709 colours (HD); otherwise BT.601, what unlabelled streams get.
    pub bt709: bool,
    /// Values span 0-255 rather than video's 16-235.
    pub full_range: bool,
}

/// A decoded frame held in GPU memory (a reference to the decoder's
/// buffer, released when the last holder lets go).
pub struct GpuFrame {
    frame: ff::frame::Video,
    planes: DevicePlanes,
    /// The size the rest of the pipeline sees the frame at (the camera's
    /// width limit applied), which [`Self::to_rgb`] gives.
    size: (u32, u32),
    url: String,
}

// SAFETY: the frame is a counted reference to device memory that nothing
// writes while it is held (the decoder takes a buffer only once every
// reference is gone); reading it (a copy to the host) is safe from any
// thread, as ffmpeg makes its CUDA context current for the copy.
unsafe impl Send for GpuFrame {}
unsafe impl Sync for GpuFrame {}

impl fmt::Debug for GpuFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GpuFrame")
            .field("planes", &self.planes)
            .field("size", &self.size)
            .finish()
    }
}

impl GpuFrame {
    /// A new reference to `frame` if it is NV12 in CUDA `context`'s memory.
    pub(crate) fn take(
        frame: &ff::frame::Video,
        context: usize,
        size: (u32, u32),
        url: &str,
    ) -> Option<Self> {
        if !hwaccel::on_device(frame) || sw_format(frame)? != ffi::AVPixelFormat::AV_PIX_FMT_NV12 {
            return None;
        }
        // SAFETY: reading fields of a valid frame; the clone is a new
        // reference to the same buffers, freed when `Video` drops.
        let (raw, planes) = unsafe {
            let f = frame.as_ptr();
            let planes = DevicePlanes {
                context,
                width: (*f).width as u32,
                height: (*f).height as u32,
                luma: (*f).data[0] as u64,
                luma_pitch: (*f).linesize[0] as u32,
                chroma: (*f).data[1] as u64,
                chroma_pitch: (*f).linesize[1] as u32,
                bt709: (*f).colorspace == ffi::AVColorSpace::AVCOL_SPC_BT709,
                full_range: (*f).color_range == ffi::AVColorRange::AVCOL_RANGE_JPEG,
            };
            (ffi::av_frame_clone(f), planes)
        };
        if raw.is_null() || planes.luma == 0 || planes.chroma == 0 {
            return None;
        }
        Some(Self {
            // SAFETY: a fresh frame from av_frame_clone, now owned here.
            frame: unsafe { ff::frame::Video::wrap(raw) },
            planes,
            size,
            url: url.to_string(),
        })
    }

    pub fn planes(&self) -> DevicePlanes {
        self.planes
    }

    /// The size the pipeline sees the frame at (`Frame::width`, `height`).
    pub fn size(&self) -> (u32, u32) {
        self.size
    }

    /// The picture as packed RGB24 at the size the pipeline sees it:
    /// copied to the host and converted there, as a software-decoded frame
    /// is.
    pub fn to_rgb(&self) -> Result<Vec<u8>, IngestError> {
        let decode = |source| IngestError::Decode {
            url: self.url.clone(),
            source,
        };
        let mut host = ff::frame::Video::empty();
        hwaccel::download(&self.frame, &mut host).map_err(decode)?;
        let mut scaler: Option<Scaler> = None;
        let (_, _, rgb) = scale_to_rgb(&host, Some(self.size.0), &mut scaler).map_err(decode)?;
        Ok(rgb)
    }
}

/// The format of a device frame's pixels in memory.
fn sw_format(frame: &ff::frame::Video) -> Option<ffi::AVPixelFormat> {
    // SAFETY: a device frame's hw_frames_ctx holds an AVHWFramesContext.
    unsafe {
        let frames = (*frame.as_ptr()).hw_frames_ctx;
        if frames.is_null() {
            return None;
        }
        Some((*((*frames).data as *const ffi::AVHWFramesContext)).sw_format)
    }
}
