//! Hardware decoding through ffmpeg's hwaccel API: NVDEC (CUDA) and VA-API.
//!
//! The decoder gets a hardware device before it opens; libavcodec then
//! decodes on the device and hands out frames that live in GPU memory. Only
//! the frames the sampler takes are copied back for scaling, so a camera
//! decoded at 30 fps and analysed at 5 crosses the bus 5 times a second.

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
/// the codec and this machine support.
pub(crate) fn attach(ctx: &mut ff::codec::context::Context, wanted: HwAccel) -> Chosen {
    let mut unavailable = Vec::new();
    let Some(default_codec) = ff::decoder::find(ctx.id()) else {
        return Chosen {
            kind: DecoderKind::Software,
            codec: None,
            unavailable,
        };
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
        let device = match shared_device(kind, device_type) {
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
        };
    }
    Chosen {
        kind: DecoderKind::Software,
        codec: None,
        unavailable,
    }
}

/// A device context opened once per process and shared by every decoder:
/// one CUDA context rather than one per camera (each costs GPU memory, and
/// decoders in separate contexts contend for the engines).
struct SharedDevice(*mut ffi::AVBufferRef);

// SAFETY: the buffer is only ever read (av_buffer_ref is thread-safe) and
// is never freed: it lives as long as the process.
unsafe impl Send for SharedDevice {}

static DEVICES: Mutex<Vec<(DecoderKind, SharedDevice)>> = Mutex::new(Vec::new());

/// A new reference to the process's device of `kind`, opening it the
/// first time. Failures are not cached: a driver that comes up later is
/// picked up at the next reconnect.
fn shared_device(
    kind: DecoderKind,
    device_type: ffi::AVHWDeviceType,
) -> Result<*mut ffi::AVBufferRef, ff::Error> {
    let mut devices = DEVICES.lock().unwrap_or_else(|p| p.into_inner());
    let existing = devices.iter().find(|(k, _)| *k == kind).map(|(_, d)| d.0);
    let device = match existing {
        Some(d) => d,
        None => {
            let mut device: *mut ffi::AVBufferRef = ptr::null_mut();
            // SAFETY: a fresh out-pointer; null device name and options
            // mean the default device (GPU 0, /dev/dri/renderD128).
            let ret = unsafe {
                ffi::av_hwdevice_ctx_create(
                    &mut device,
                    device_type,
                    ptr::null(),
                    ptr::null_mut(),
                    0,
                )
            };
            if ret < 0 {
                return Err(ff::Error::from(ret));
            }
            devices.push((kind, SharedDevice(device)));
            device
        }
    };
    // SAFETY: `device` is a live buffer owned by DEVICES.
    let reference = unsafe { ffi::av_buffer_ref(device) };
    if reference.is_null() {
        return Err(ff::Error::Other {
            errno: ff::util::error::ENOMEM,
        });
    }
    Ok(reference)
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
