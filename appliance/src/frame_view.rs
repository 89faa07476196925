//! A camera frame as the detector reads it: ingest and inference know
//! nothing of each other, so the appliance translates between their types.

use vigil_inference::{CudaNv12, ImageView, InferenceError, YuvColor};
use vigil_ingest::{Frame, GpuFrame, Pixels};

/// `frame`'s RGB bytes, or its NV12 planes in GPU memory.
pub fn frame_view(frame: &Frame) -> Result<ImageView<'_>, InferenceError> {
    match &frame.pixels {
        Pixels::Rgb(rgb) => ImageView::new(frame.width as usize, frame.height as usize, rgb),
        Pixels::Gpu(gpu) => gpu_frame_view(gpu),
    }
}

/// A frame in GPU memory, seen at the size the pipeline sees it.
pub fn gpu_frame_view(frame: &GpuFrame) -> Result<ImageView<'_>, InferenceError> {
    let p = frame.planes();
    let (width, height) = frame.size();
    let planes = CudaNv12 {
        context: p.context,
        width: p.width as usize,
        height: p.height as usize,
        luma: p.luma,
        luma_pitch: p.luma_pitch as usize,
        chroma: p.chroma,
        chroma_pitch: p.chroma_pitch as usize,
        color: YuvColor {
            bt709: p.bt709,
            full_range: p.full_range,
        },
    };
    // SAFETY: `frame` holds the decoder's buffer for as long as the view
    // borrows it, and a detection reading the view returns only once the
    // GPU is done with it (its results are copied back).
    unsafe { ImageView::cuda_nv12(width as usize, height as usize, planes) }
}
