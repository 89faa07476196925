//! Hardware decoding through ffmpeg's hwaccel API: NVDEC (CUDA) and VA-API.
//!
//! The decoder gets a hardware device before it opens; libavcodec then
//! decodes on the device and hands out frames that live in GPU memory. Only
//! the frames the sampler takes are copied back for scaling, so a camera
//! decoded at 30 fps and analysed at 5 crosses the bus 5 times a second;
//! and none is when NVDEC decodes into the model's own CUDA context
//! ([`GpuTarget`]): the model then reads the frames where they are.

use std::fmt;
use std::ptr;
use std::sync::Mutex;

use ff::ffi;
use ffmpeg_next as ff;
use serde::{Deserialize, Serialize};

/// What a camera asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HwAccel {
    /// CUDA, then VA-API, then software: the first that works.
    #[default]
    Auto,
    Cuda,
    Vaapi,
    /// Software decoding only.
    None,
}

/// What a decoder actually runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DecoderKind {
    Software,
    Cuda,
    Vaapi,
}

impl fmt::Display for DecoderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecoderKind::Software => "software",
            DecoderKind::Cuda => "cuda",
            DecoderKind::Vaapi => "vaapi",
        })
    }
}

impl DecoderKind {
    /// Whether this machine could have the device at all: checked first so
    /// a box without one does not try (and log a failure) per camera.
    fn device_present(self) -> bool {
        match self {
            DecoderKind::Software => true,
            DecoderKind::Cuda => std::path::Path::new("/dev/nvidiactl").exists(),
            DecoderKind::Vaapi => std::fs::read_dir("/dev/dri").is_ok_and(|mut d| {
                d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("renderD")))
            }),
        }
    }

    fn device_type(self) -> Option<ffi::AVHWDeviceType> {
        match self {
            DecoderKind::Software => None,
            DecoderKind::Cuda => Some(ffi::AVHWDeviceType::AV_HWDEVICE_TYPE_CUDA),
            DecoderKind::Vaapi => Some(ffi::AVHWDeviceType::AV_HWDEVICE_TYPE_VAAPI),
        }
    }
}

impl HwAccel {
    /// Hardware to try, in order; software is always the last resort.
    pub fn candidates(self) -> &'static [DecoderKind] {
        match self {
            HwAccel::Auto => &[DecoderKind::Cuda, DecoderKind::Vaapi],
            HwAccel::Cuda => &[DecoderKind::Cuda],
            HwAccel::Vaapi => &[DecoderKind::Vaapi],
            HwAccel::None => &[],
        }
    }
}

/// A CUDA context to decode into: the model's (its GPU's number and its
/// primary context, `CUcontext`, as an address), so that sampled frames
/// reach it in GPU memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuTarget {
    pub ordinal: usize,
    pub context: usize,
}

/// Whether `codec` can decode on `kind`'s device type.
fn codec_supports(codec: &ff::Codec, device: ffi::AVHWDeviceType) -> bool {
    let by_device = ffi::AV_CODEC_HW_CONFIG_METHOD_HW_DEVICE_CTX as i32;
    (0..)
        .map(|i| unsafe { ffi::avcodec_get_hw_config(codec.as_ptr(), i) })
        .take_while(|c| !c.is_null())
        .any(|c| unsafe { (*c).methods & by_device != 0 && (*c).device_type == device })
}

/// The decoder `ctx` should open with, and where it decodes.
pub(crate) struct Chosen {
    pub kind: DecoderKind,
    /// `None`: the codec's default (software or hwaccel) decoder.
    pub codec: Option<ff::Codec>,
    /// For each candidate that did not work out, why.
    pub unavailable: Vec<String>,
    /// Whether the device is the [`GpuTarget`]'s CUDA context.
    pub in_target_context: bool,
}

/// NVIDIA's own decoders (`h264_cuvid`, ...) keep a queue of frames in
/// flight on the decode engine; libavcodec's generic NVDEC hwaccel waits for
/// each frame, which halves single-stream throughput. Use them when there is
/// one for the codec.
fn cuvid_decoder(ctx: &ff::codec::context::Context) -> Option<ff::Codec> {
    let name = ff::decoder::find(ctx.id())?.name().to_string();
    ff::decoder::find_by_name(&format!("{name}_cuvid"))
}

/// Gives `ctx` (not yet opened) a device of the first candidate that both
/// the codec and this machine support; a CUDA device in `target`'s context
/// where it can.
pub(crate) fn attach(
    ctx: &mut ff::codec::context::Context,
    wanted: HwAccel,
    target: Option<GpuTarget>,
) -> Chosen {
    let mut unavailable = Vec::new();
    let software = |unavailable| Chosen {
        kind: DecoderKind::Software,
        codec: None,
        unavailable,
        in_target_context: false,
    };
    let Some(default_codec) = ff::decoder::find(ctx.id()) else {
        return software(unavailable);
    };
    for &kind in wanted.candidates() {
        let device_type = kind.device_type().expect("hardware kinds have a device");
        if !kind.device_present() {
            unavailable.push(format!("{kind}: no such device on this machine"));
            continue;
        }
        let special = match kind {
            DecoderKind::Cuda => cuvid_decoder(ctx),
            _ => None,
        };
        let codec = special.unwrap_or(default_codec);
        if !codec_supports(&codec, device_type) {
            unavailable.push(format!("{kind}: not available for {:?}", ctx.id()));
            continue;
        }
        let target = target.filter(|_| kind == DecoderKind::Cuda);
        let (device, in_target_context) = match shared_device(kind, device_type, target) {
            Ok(d) => d,
            Err(e) => {
                unavailable.push(format!("{kind}: {e}"));
                continue;
            }
        };
        // SAFETY: the context is not open yet; it takes this new reference
        // and frees it with itself. With a device attached the decoder
        // hands out frames in device memory.
        unsafe { (*ctx.as_mut_ptr()).hw_device_ctx = device };
        return Chosen {
            kind,
            codec: special,
            unavailable,
            in_target_context,
        };
    }
    software(unavailable)
}

/// A device context opened once per process (per GPU) and shared by every
/// decoder: one CUDA context rather than one per camera (each costs GPU
/// memory, and decoders in separate contexts contend for the engines).
struct SharedDevice {
    kind: DecoderKind,
    /// The GPU's number, for CUDA devices opened for a [`GpuTarget`].
    ordinal: Option<usize>,
    buffer: *mut ffi::AVBufferRef,
    /// For CUDA devices, their `CUcontext`, as an address.
    cuda_context: Option<usize>,
}

// SAFETY: the buffer is only ever read (av_buffer_ref is thread-safe) and
// is never freed: it lives as long as the process.
unsafe impl Send for SharedDevice {}

static DEVICES: Mutex<Vec<SharedDevice>> = Mutex::new(Vec::new());

/// A new reference to the process's device of `kind` (in `target`'s
/// context if possible), opening it the first time, and whether it is in
/// that context. Failures are not cached: a driver that comes up later is
/// picked up at the next reconnect.
fn shared_device(
    kind: DecoderKind,
    device_type: ffi::AVHWDeviceType,
    target: Option<GpuTarget>,
) -> Result<(*mut ffi::AVBufferRef, bool), ff::Error> {
    let mut devices = DEVICES.lock().unwrap_or_else(|p| p.into_inner());
    let ordinal = target.map(|t| t.ordinal);
    let index = devices
        .iter()
        .position(|d| d.kind == kind && d.ordinal == ordinal);
    let index = match index {
        Some(i) => i,
        None => {
            let buffer = match target {
                Some(target) => open_in_context(device_type, target)?,
                None => open_device(device_type, None, false)?,
            };
            let cuda_context = (kind == DecoderKind::Cuda)
                .then(|| cuda_context(buffer))
                .flatten();
            devices.push(SharedDevice {
                kind,
                ordinal,
                buffer,
                cuda_context,
            });
            devices.len() - 1
        }
    };
    let device = &devices[index];
    // SAFETY: `device.buffer` is a live buffer owned by DEVICES.
    let reference = unsafe { ffi::av_buffer_ref(device.buffer) };
    if reference.is_null() {
        return Err(ff::Error::Other {
            errno: ff::util::error::ENOMEM,
        });
    }
    let in_target_context =
        target.is_some_and(|t| t.context != 0 && device.cuda_context == Some(t.context));
    Ok((reference, in_target_context))
}

/// Opens a device: the default one (GPU 0, /dev/dri/renderD128) or GPU
/// `ordinal`; with `primary`, a CUDA device in that GPU's primary context.
fn open_device(
    device_type: ffi::AVHWDeviceType,
    ordinal: Option<usize>,
    primary: bool,
) -> Result<*mut ffi::AVBufferRef, ff::Error> {
    let name = ordinal.map(|n| std::ffi::CString::new(n.to_string()).expect("digits"));
    let mut options = ff::Dictionary::new();
    if primary {
        options.set("primary_ctx", "1");
    }
    // SAFETY: the dictionary is handed to ffmpeg and freed below.
    let mut options = unsafe { options.disown() };
    let mut device: *mut ffi::AVBufferRef = ptr::null_mut();
    // SAFETY: a fresh out-pointer, a NUL-terminated name or null, and a
    // dictionary we own and free below.
    let ret = unsafe {
        let ret = ffi::av_hwdevice_ctx_create(
            &mut device,
            device_type,
            name.as_ref().map_or(ptr::null(), |n| n.as_ptr()),
            options,
            0,
        );
        ffi::av_dict_free(&mut options);
        ret
    };
    if ret < 0 {
        return Err(ff::Error::from(ret));
    }
    Ok(device)
}

/// A CUDA device in `target`'s GPU: in its primary context where ffmpeg
/// accepts it (the model's context, see `vigil_inference::device`), else in
/// a context of its own, whose frames are copied through the host.
fn open_in_context(
    device_type: ffi::AVHWDeviceType,
    target: GpuTarget,
) -> Result<*mut ffi::AVBufferRef, ff::Error> {
    match open_device(device_type, Some(target.ordinal), true) {
        Ok(device) => {
            if cuda_context(device) == Some(target.context) {
                tracing::info!(
                    gpu = target.ordinal,
                    "NVDEC decodes into the model's CUDA context: frames stay on the GPU"
                );
            } else {
                tracing::warn!(
                    gpu = target.ordinal,
                    "NVDEC's CUDA context is not the model's; frames are copied through the host"
                );
            }
            Ok(device)
        }
        Err(e) => {
            tracing::warn!(gpu = target.ordinal, error = %e,
                "NVDEC cannot share the model's CUDA context; frames are copied through the host");
            open_device(device_type, Some(target.ordinal), false)
        }
    }
}

/// The `CUcontext` of a CUDA device, as an address.
fn cuda_context(device: *mut ffi::AVBufferRef) -> Option<usize> {
    // SAFETY: a CUDA device buffer holds an AVHWDeviceContext whose
    // `hwctx` is an AVCUDADeviceContext, and that struct's first field is
    // the CUcontext (libavutil/hwcontext_cuda.h, stable since it appeared).
    unsafe {
        let device = (*device).data as *const ffi::AVHWDeviceContext;
        let hwctx = (*device).hwctx as *const *mut std::ffi::c_void;
        (!hwctx.is_null()).then(|| *hwctx as usize)
    }
}

/// Whether `frame` lives in device memory.
pub(crate) fn on_device(frame: &ff::frame::Video) -> bool {
    // SAFETY: reading a field of a valid frame.
    unsafe { !(*frame.as_ptr()).hw_frames_ctx.is_null() }
}

/// Copies a device frame into `host` (NV12 or similar) for scaling.
pub(crate) fn download(
    frame: &ff::frame::Video,
    host: &mut ff::frame::Video,
) -> Result<(), ff::Error> {
    // SAFETY: both frames are valid; `host` is (re)allocated by ffmpeg.
    let ret = unsafe {
        ffi::av_frame_unref(host.as_mut_ptr());
        ffi::av_hwframe_transfer_data(host.as_mut_ptr(), frame.as_ptr(), 0)
    };
    if ret < 0 {
        Err(ff::Error::from(ret))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_tries_cuda_then_vaapi_and_none_tries_nothing() {
        assert_eq!(
            HwAccel::Auto.candidates(),
            &[DecoderKind::Cuda, DecoderKind::Vaapi]
        );
        assert!(HwAccel::None.candidates().is_empty());
        assert_eq!(HwAccel::default(), HwAccel::Auto);
        let parsed: HwAccel = serde_json::from_str("\"vaapi\"").unwrap();
        assert_eq!(parsed, HwAccel::Vaapi);
    }
}
