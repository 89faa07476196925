//! One open video input: demux, decode, convert sampled frames to RGB.

use ff::format::Pixel;
use ff::software::scaling;
use ff::util::error::EAGAIN;
use ff::{Dictionary, Rational, Rescale};
use ffmpeg_next as ff;

use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::gpu_frame::GpuFrame;
use crate::hwaccel::{self, DecoderKind, GpuTarget, HwAccel};
use crate::input_options::InputOptions;
use crate::source::SourceUrl;
use crate::watchdog::{open_input, Watchdog};
use crate::IngestError;

/// Microseconds, the unit of every timestamp we hand on.
const MICROS: Rational = Rational(1, 1_000_000);
/// Socket timeout for network sources, so a dead camera cannot block a read forever.
const NETWORK_TIMEOUT_US: &str = "5000000";
/// A network source that delivers no packet for this long is reconnected,
/// whatever the protocol (a server can keep a connection alive and send
/// nothing).
pub const STALL_AFTER: Duration = Duration::from_secs(10);

/// An opened decoder, where it decodes, and whether into the
/// [`DecodeOptions::gpu_target`]'s context.
struct OpenedDecoder {
    decoder: ff::decoder::Video,
    kind: DecoderKind,
    in_target_context: bool,
}

/// Opens a decoder for `params` on the hardware `decode` allows, falling
/// back to software when the hardware decoder will not open.
fn open_decoder(
    params: &ff::codec::Parameters,
    decode: DecodeOptions,
    shown: &str,
) -> Result<OpenedDecoder, ff::Error> {
    let mut ctx = ff::codec::context::Context::from_parameters(params.clone())?;
    let chosen = hwaccel::attach(&mut ctx, decode.hwaccel, decode.gpu_target);
    if chosen.in_target_context {
        // Frames handed on in GPU memory are held downstream (the queue, a
        // batch, the live view) while the decoder goes on: room for them
        // where its frame pool has a fixed size.
        // SAFETY: the context is not open yet.
        unsafe { (*ctx.as_mut_ptr()).extra_hw_frames = HELD_GPU_FRAMES };
    }
    for why in &chosen.unavailable {
        tracing::debug!(url = %shown, "hardware decoding unavailable: {why}");
    }
    // Frame threading is what parallelises a typical one-slice camera
    // stream (slice threading alone leaves it on one core); it costs one
    // frame of latency per extra thread, nothing for analytics. A hardware
    // decoder needs no CPU threads.
    ctx.set_threading(ff::threading::Config {
        kind: ff::threading::Type::Frame,
        count: match chosen.kind {
            DecoderKind::Software => decode.threads,
            _ => 1,
        },
        ..Default::default()
    });
    let opened = match chosen.codec {
        Some(codec) => ctx.decoder().open_as(codec).and_then(|d| d.video()),
        None => ctx.decoder().video(),
    };
    match opened {
        Ok(decoder) => Ok(OpenedDecoder {
            decoder,
            kind: chosen.kind,
            in_target_context: chosen.in_target_context,
        }),
        Err(e) if chosen.kind != DecoderKind::Software => {
            tracing::warn!(url = %shown, decoder = %chosen.kind, error = %e,
                "hardware decoder would not open; decoding in software");
            let software = DecodeOptions {
                hwaccel: HwAccel::None,
                ..decode
            };
            open_decoder(params, software, shown)
        }
        Err(e) => Err(e),
    }
}

/// How to decode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeOptions {
    pub hwaccel: HwAccel,
    /// Software decoding threads; 0 lets ffmpeg choose (one per core).
    pub threads: usize,
    /// Frames per second the caller will use. When the stream runs at
    /// least [`SKIP_NONREF_RATIO`] times faster, the decoder skips
    /// non-reference frames (nothing else depends on them).
    pub needed_fps: Option<f64>,
    /// Frames wider than this are scaled down (aspect kept) when converted
    /// to RGB: the model needs far less than 4K, and the copy serves
    /// snapshots and the live view.
    pub max_width: Option<u32>,
    /// The model's CUDA context: NVDEC decodes into it where it can, and
    /// sampled frames are handed on in GPU memory ([`VideoInput::gpu_frame`]).
    pub gpu_target: Option<GpuTarget>,
}

/// Decoder frames the rest of the pipeline may hold at once per camera.
const HELD_GPU_FRAMES: i32 = 8;

/// Bound on timestamps remembered for counting skipped frames.
const MAX_PENDING_PTS: usize = 256;

/// How much faster than needed a stream must be before frames are skipped.
pub const SKIP_NONREF_RATIO: f64 = 2.0;

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            hwaccel: HwAccel::Auto,
            threads: 0,
            needed_fps: None,
            max_width: None,
            gpu_target: None,
        }
    }
}

pub struct VideoInput {
    url: String,
    input: ff::format::context::Input,
    decoder: ff::decoder::Video,
    stream_index: usize,
    time_base: Rational,
    /// Nominal frame duration, for frames without a timestamp.
    frame_duration_us: i64,
    last_pts_us: Option<i64>,
    frame: ff::frame::Video,
    /// A device frame copied to host memory, for scaling.
    host: ff::frame::Video,
    eof_sent: bool,
    scaler: Option<Scaler>,
    decoder_kind: DecoderKind,
    /// The CUDA context frames are decoded into, when it is the model's.
    gpu_context: Option<usize>,
    codec_name: String,
    counts: InputCounts,
    max_width: Option<u32>,
    /// Timestamps of packets sent to the decoder and not yet seen as
    /// frames: how skipped frames are counted exactly.
    pending_pts: BTreeSet<i64>,
    skipping: bool,
    /// Set for live inputs whose format carries no timestamps: frames are
    /// then timed by when they arrive, from this instant.
    wall_clock: Option<Instant>,
    /// See [`Self::is_recording`].
    recording: bool,
    /// Declared last: it must outlive `input`, whose callback points at it.
    watchdog: Arc<Watchdog>,
}

pub(crate) struct Scaler {
    ctx: scaling::Context,
    /// The input's format, size, BT.709 matrix and full range.
    key: (Pixel, u32, u32, bool, bool),
    out: (u32, u32),
    rgb: ff::frame::Video,
}

impl VideoInput {
    /// Opens `url` for software decoding.
    pub fn open(url: &SourceUrl) -> Result<Self, IngestError> {
        Self::open_with(
            url,
            DecodeOptions {
                hwaccel: HwAccel::None,
                ..Default::default()
            },
        )
    }

    /// Opens `url`, decoding on the first device `options.hwaccel` allows
    /// that this machine and the codec support, else in software.
    pub fn open_with(url: &SourceUrl, decode: DecodeOptions) -> Result<Self, IngestError> {
        Self::open_watched(url, &InputOptions::default(), decode, None)
    }

    /// Like [`Self::open_with`], with the camera's own input options;
    /// setting `stop` interrupts any blocking read at once, and a network
    /// source that sends nothing for [`STALL_AFTER`] fails with
    /// [`IngestError::Stalled`].
    pub fn open_watched(
        url: &SourceUrl,
        input_options: &InputOptions,
        decode: DecodeOptions,
        stop: Option<Arc<AtomicBool>>,
    ) -> Result<Self, IngestError> {
        let stall_after = url.is_network().then_some(STALL_AFTER);
        let watchdog = Watchdog::new(stall_after, stop);
        // `location` (credentials included) goes to ffmpeg only; `shown`
        // is what errors and logs carry.
        let (location, shown) = (url.ffmpeg_location(), url.shown());
        let mut options = Dictionary::new();
        if let Some(transport) = url.ffmpeg_transport() {
            options.set("rtsp_transport", transport);
        }
        if url.is_network() {
            options.set("timeout", NETWORK_TIMEOUT_US);
            options.set("rw_timeout", NETWORK_TIMEOUT_US);
        }
        for (name, value) in input_options.iter() {
            options.set(name, value);
        }
        let (input, left) = open_input(&location, url.ffmpeg_format(), options, &watchdog)
            .map_err(|e| {
                if watchdog.stalled() {
                    stalled(&shown)
                } else {
                    IngestError::Open {
                        url: shown.clone(),
                        source: e,
                    }
                }
            })?;
        let not_taken = input_options.not_taken(&left);
        if !not_taken.is_empty() {
            return Err(IngestError::UnknownOptions {
                url: shown,
                format: format!("ffmpeg's {} input", input.format().name()),
                names: not_taken,
            });
        }
        let stream = input
            .streams()
            .best(ff::media::Type::Video)
            .ok_or_else(|| IngestError::NoVideo { url: shown.clone() })?;
        let stream_index = stream.index();
        let time_base = stream.time_base();
        // SAFETY: the input format outlives `input`, which is open here.
        let format_flags = unsafe { (*input.format().as_ptr()).flags };
        let wall_clock = (url.is_network() && format_flags & ff::ffi::AVFMT_NOTIMESTAMPS != 0)
            .then(Instant::now);
        // Over HTTP, a known length means a recording (a progressive MP4, a
        // finished HLS playlist): it comes as fast as the link allows.
        let recording = url.is_http() && wall_clock.is_none() && input.duration() > 0;
        // The average rate, else the base rate; many live streams lack one.
        let known = |r: &Rational| r.numerator() > 0 && r.denominator() > 0;
        let rate = [stream.avg_frame_rate(), stream.rate()]
            .into_iter()
            .find(known);
        let frame_duration_us = rate.map_or(40_000, |r| {
            1_000_000 * r.denominator() as i64 / r.numerator() as i64
        });
        let stream_fps = rate.map(f64::from);
        let codec_id = stream.parameters().id();
        let codec_name = format!("{codec_id:?}").to_lowercase();
        let opened = open_decoder(&stream.parameters(), decode, &shown).map_err(|e| match e {
            ff::Error::DecoderNotFound => IngestError::NoDecoder {
                url: shown.clone(),
                codec: format!("{codec_id:?}"),
            },
            e => IngestError::Decode {
                url: shown.clone(),
                source: e,
            },
        })?;
        let (mut decoder, decoder_kind) = (opened.decoder, opened.kind);
        let gpu_context = decode
            .gpu_target
            .filter(|_| opened.in_target_context)
            .map(|t| t.context);
        let skipping = matches!((stream_fps, decode.needed_fps),
            (Some(have), Some(need)) if have >= SKIP_NONREF_RATIO * need);
        if skipping {
            decoder.skip_frame(ff::codec::discard::Discard::NonReference);
        }
        Ok(Self {
            url: shown,
            input,
            decoder,
            stream_index,
            time_base,
            frame_duration_us,
            last_pts_us: None,
            frame: ff::frame::Video::empty(),
            host: ff::frame::Video::empty(),
            eof_sent: false,
            scaler: None,
            decoder_kind,
            gpu_context,
            codec_name,
            counts: InputCounts::default(),
            max_width: decode.max_width,
            pending_pts: BTreeSet::new(),
            skipping,
            wall_clock,
            recording,
            watchdog,
        })
    }

    /// Whether this is a recording read over the network, which arrives
    /// faster than real time unless it is paced.
    pub fn is_recording(&self) -> bool {
        self.recording
    }

    /// Where frames are decoded.
    pub fn decoder_kind(&self) -> DecoderKind {
        self.decoder_kind
    }

    /// Whether frames are decoded into the model's CUDA context, so that
    /// [`Self::gpu_frame`] hands them on without a copy.
    pub fn frames_stay_on_gpu(&self) -> bool {
        self.gpu_context.is_some()
    }

    /// The last decoded frame, kept in GPU memory, if it was decoded into
    /// the model's CUDA context as NV12; otherwise use [`Self::convert_to_rgb`].
    pub fn gpu_frame(&self) -> Option<GpuFrame> {
        let context = self.gpu_context?;
        let size = output_size(self.frame.width(), self.frame.height(), self.max_width);
        GpuFrame::take(&self.frame, context, size, &self.url)
    }

    /// The stream's codec, e.g. `h264`.
    pub fn codec_name(&self) -> &str {
        &self.codec_name
    }

    pub fn frame_duration_us(&self) -> i64 {
        self.frame_duration_us
    }

    /// Whether the decoder skips non-reference frames (see [`DecodeOptions::needed_fps`]).
    pub fn skips_nonref(&self) -> bool {
        self.skipping
    }

    /// What this input has read and decoded so far.
    pub fn counts(&self) -> InputCounts {
        self.counts
    }

    /// Decodes the next frame; returns its stream time in microseconds, or
    /// `None` at the end of the stream. The frame is kept for [`Self::convert_to_rgb`].
    pub fn next_frame(&mut self) -> Result<Option<i64>, IngestError> {
        loop {
            match self.decoder.receive_frame(&mut self.frame) {
                Ok(()) => {
                    self.count_output();
                    return Ok(Some(self.frame_pts_us()));
                }
                Err(ff::Error::Other { errno }) if errno == EAGAIN => {}
                Err(ff::Error::Eof) => return Ok(None),
                Err(e) => return Err(self.decode_error(e)),
            }
            if self.eof_sent {
                return Ok(None);
            }
            let mut packet = ff::Packet::empty();
            let read = packet.read(&mut self.input);
            if read.is_ok() {
                self.watchdog.touch();
            }
            match read {
                Ok(()) if packet.stream() == self.stream_index => {
                    self.counts.packets += 1;
                    match self.decoder.send_packet(&packet) {
                        Ok(()) => {
                            if let Some(pts) = packet.pts() {
                                self.pending_pts.insert(pts);
                                if self.pending_pts.len() > MAX_PENDING_PTS {
                                    self.pending_pts.pop_first();
                                }
                            }
                        }
                        // A damaged packet costs a frame, not the stream.
                        Err(ff::Error::InvalidData) => {
                            self.counts.skipped += 1;
                            tracing::debug!(url = %self.url, "skipping corrupt packet")
                        }
                        Err(e) => return Err(self.decode_error(e)),
                    }
                }
                Ok(()) => {}
                Err(ff::Error::Eof) => {
                    self.decoder.send_eof().map_err(|e| self.decode_error(e))?;
                    self.eof_sent = true;
                }
                Err(e) => return Err(self.read_error(e)),
            }
        }
    }

    /// Counts the frame just decoded, and every packet before it in
    /// presentation order that never became a frame: decoders emit frames
    /// in presentation order, so those were skipped (or broken).
    fn count_output(&mut self) {
        self.counts.decoded += 1;
        match self.frame.pts() {
            Some(pts) => {
                let later = self.pending_pts.split_off(&pts);
                self.counts.skipped += self.pending_pts.len() as u64;
                self.pending_pts = later;
                self.pending_pts.remove(&pts);
            }
            // A decoder that drops timestamps: skipped frames cannot be told apart.
            None => self.pending_pts.clear(),
        }
    }

    fn decode_error(&self, e: ff::Error) -> IngestError {
        self.unless_stalled(IngestError::Decode {
            url: self.url.clone(),
            source: e,
        })
    }

    fn read_error(&self, e: ff::Error) -> IngestError {
        self.unless_stalled(IngestError::Read {
            url: self.url.clone(),
            source: e,
        })
    }

    /// A stall the watchdog cut short explains any error that followed.
    fn unless_stalled(&self, error: IngestError) -> IngestError {
        if self.watchdog.stalled() {
            stalled(&self.url)
        } else {
            error
        }
    }

    fn frame_pts_us(&mut self) -> i64 {
        if let Some(opened) = self.wall_clock {
            // The format has no clock of its own (MJPEG over HTTP): its
            // made-up 25 fps would sample a 10 fps camera at the wrong rate.
            return opened.elapsed().as_micros() as i64;
        }
        let pts = match self.frame.timestamp() {
            Some(ts) => ts.rescale(self.time_base, MICROS),
            None => self
                .last_pts_us
                .map_or(0, |last| last + self.frame_duration_us),
        };
        self.last_pts_us = Some(pts);
        pts
    }

    /// The last decoded frame as packed RGB24: `(width, height, bytes)`.
    pub fn convert_to_rgb(&mut self) -> Result<(u32, u32, Vec<u8>), IngestError> {
        let on_device = hwaccel::on_device(&self.frame);
        if on_device {
            hwaccel::download(&self.frame, &mut self.host).map_err(|e| self.decode_error(e))?;
        }
        let src = if on_device { &self.host } else { &self.frame };
        scale_to_rgb(src, self.max_width, &mut self.scaler).map_err(|e| IngestError::Decode {
            url: self.url.clone(),
            source: e,
        })
    }
}

/// `src` (host memory) as packed RGB24 no wider than `max_width`:
/// `(width, height, bytes)`. `scaler` is reused while the input's format
/// and size stay the same.
pub(crate) fn scale_to_rgb(
    src: &ff::frame::Video,
    max_width: Option<u32>,
    scaler: &mut Option<Scaler>,
) -> Result<(u32, u32, Vec<u8>), ff::Error> {
    let (w, h, fmt) = (src.width(), src.height(), src.format());
    let bt709 = src.color_space() == ff::color::Space::BT709;
    let full_range = src.color_range() == ff::color::Range::JPEG;
    let key = (fmt, w, h, bt709, full_range);
    if scaler.as_ref().is_none_or(|s| s.key != key) {
        let (ow, oh) = output_size(w, h, max_width);
        // Area averaging when shrinking (no aliasing), bilinear otherwise.
        let flags = if ow < w {
            scaling::Flags::AREA
        } else {
            scaling::Flags::BILINEAR
        };
        let mut ctx = scaling::Context::get(fmt, w, h, Pixel::RGB24, ow, oh, flags)?;
        convert_as_labelled(&mut ctx, bt709, full_range);
        *scaler = Some(Scaler {
            ctx,
            key,
            out: (ow, oh),
            rgb: ff::frame::Video::empty(),
        });
    }
    let scaler = scaler.as_mut().expect("scaler set above");
    scaler.ctx.run(src, &mut scaler.rgb)?;
    let (w, h) = scaler.out;
    let stride = scaler.rgb.stride(0);
    let row = w as usize * 3;
    let data = scaler.rgb.data(0);
    let mut rgb = Vec::with_capacity(row * h as usize);
    for y in 0..h as usize {
        rgb.extend_from_slice(&data[y * stride..y * stride + row]);
    }
    Ok((w, h, rgb))
}

fn stalled(shown: &str) -> IngestError {
    IngestError::Stalled {
        url: shown.to_string(),
        seconds: STALL_AFTER.as_secs(),
    }
}

/// Converts YUV with the matrix and range the frame says it has: swscale
/// assumes BT.601 and video range whatever a frame says, which tints HD
/// cameras' pictures (BT.709) and differs from the GPU's conversion of the
/// same frames. Formats swscale keeps no YUV details for are left as they are.
fn convert_as_labelled(ctx: &mut scaling::Context, bt709: bool, full_range: bool) {
    let matrix = if bt709 {
        ff::ffi::SWS_CS_ITU709
    } else {
        ff::ffi::SWS_CS_DEFAULT
    };
    // SAFETY: a live context; the out-pointers are locals, and the tables
    // come from swscale itself.
    unsafe {
        let ctx = ctx.as_mut_ptr();
        let (mut from, mut from_range, mut to, mut to_range) =
            (std::ptr::null_mut(), 0, std::ptr::null_mut(), 0);
        let (mut brightness, mut contrast, mut saturation) = (0, 0, 0);
        let known = ff::ffi::sws_getColorspaceDetails(
            ctx,
            &mut from,
            &mut from_range,
            &mut to,
            &mut to_range,
            &mut brightness,
            &mut contrast,
            &mut saturation,
        );
        if known < 0 {
            return;
        }
        ff::ffi::sws_setColorspaceDetails(
            ctx,
            ff::ffi::sws_getCoefficients(matrix),
            from_range | i32::from(full_range),
            to,
            to_range,
            brightness,
            contrast,
            saturation,
        );
    }
}

/// Running totals of one input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InputCounts {
    /// Packets of the video stream read (one per coded frame).
    pub packets: u64,
    /// Frames out of the decoder.
    pub decoded: u64,
    /// Coded frames that never became pictures: skipped non-reference
    /// frames and damaged packets.
    pub skipped: u64,
}

/// The RGB size for a `w`×`h` picture no wider than `max_width`: aspect
/// kept, height even (chroma planes), never enlarged.
fn output_size(w: u32, h: u32, max_width: Option<u32>) -> (u32, u32) {
    match max_width {
        Some(max) if w > max && max >= 2 => {
            let oh = (h as u64 * max as u64 / w as u64) as u32;
            (max, (oh & !1).max(2))
        }
        _ => (w, h),
    }
}

#[cfg(test)]
mod tests {
    use super::output_size;

    #[test]
    fn large_frames_shrink_to_the_width_limit_keeping_their_aspect() {
        assert_eq!(output_size(3840, 2160, Some(1280)), (1280, 720));
        assert_eq!(output_size(1920, 1080, Some(1000)), (1000, 562));
        assert_eq!(
            output_size(768, 576, Some(1280)),
            (768, 576),
            "never enlarged"
        );
        assert_eq!(output_size(1920, 1080, None), (1920, 1080));
    }
}
