//! Makes camera-like H.264 test clips from a recorded one, in process (no
//! ffmpeg CLI needed): `vigil bench` uses it for its 1080p30 cameras.
//!
//! Real IP cameras send H.264 at a fixed bit rate, a key frame every couple
//! of seconds and no B-frames, and their pictures carry sensor noise, which
//! is what keeps every frame expensive to decode. The clip copies that: the
//! source is scaled, resampled to the target rate by repeating frames, and
//! given a little noise so the repeats are not free to code or decode.

use std::path::{Path, PathBuf};

use ff::format::Pixel;
use ff::software::scaling;
use ff::util::error::EAGAIN;
use ff::{Dictionary, Rational};
use ffmpeg_next as ff;

use crate::IngestError;

/// What to make.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClipSpec {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub seconds: u32,
    /// Target bit rate, bits per second.
    pub bit_rate: usize,
}

impl ClipSpec {
    /// A typical 1080p30 camera stream: 4 Mbit/s, a key frame every 2 s.
    pub fn camera_1080p30(seconds: u32) -> Self {
        Self {
            width: 1920,
            height: 1080,
            fps: 30,
            seconds,
            bit_rate: 4_000_000,
        }
    }
}

/// Writes `spec` made from the video of `source` to `out` (MP4), looping the
/// source if it is shorter. The file appears only when complete.
pub fn make_camera_clip(source: &Path, out: &Path, spec: ClipSpec) -> Result<(), IngestError> {
    let partial = PathBuf::from(format!("{}.partial", out.display()));
    let fail = |source| IngestError::Encode {
        path: out.display().to_string(),
        source,
    };
    let mut writer = ClipWriter::create(&partial, spec).map_err(fail)?;
    let mut reader = Resampler::new(source, spec)?;
    for k in 0..i64::from(spec.fps * spec.seconds) {
        let picture = reader.picture_at(k)?;
        writer.write(picture, k).map_err(fail)?;
    }
    writer.finish().map_err(fail)?;
    std::fs::rename(&partial, out).map_err(|e| IngestError::Io {
        path: out.display().to_string(),
        source: e,
    })
}

/// Decodes the source (looping) and hands out, for each output frame, the
/// source picture showing at that time, scaled to the output size.
struct Resampler {
    path: PathBuf,
    spec: ClipSpec,
    input: ff::format::context::Input,
    decoder: ff::decoder::Video,
    stream: usize,
    time_base: Rational,
    /// Source seconds added for each completed loop.
    offset: f64,
    /// End of the last frame seen in this loop, for the next loop's offset.
    loop_end: f64,
    /// The current source picture (scaled) and when the next one starts.
    current: Option<(ff::frame::Video, f64)>,
    scaler: Option<scaling::Context>,
    noise: Noise,
    eof: bool,
}

impl Resampler {
    fn new(path: &Path, spec: ClipSpec) -> Result<Self, IngestError> {
        let shown = path.display().to_string();
        let open = |source| IngestError::Open {
            url: shown.clone(),
            source,
        };
        let input = ff::format::input(path).map_err(open)?;
        let stream = input
            .streams()
            .best(ff::media::Type::Video)
            .ok_or_else(|| IngestError::NoVideo { url: shown.clone() })?;
        let decoder = ff::codec::context::Context::from_parameters(stream.parameters())
            .and_then(|c| c.decoder().video())
            .map_err(open)?;
        Ok(Self {
            path: path.to_path_buf(),
            spec,
            stream: stream.index(),
            time_base: stream.time_base(),
            input,
            decoder,
            offset: 0.0,
            loop_end: 0.0,
            current: None,
            scaler: None,
            noise: Noise(0x9e37_79b9_7f4a_7c15),
            eof: false,
        })
    }

    /// The picture for output frame `k` (at `k / fps` seconds), with fresh noise.
    fn picture_at(&mut self, k: i64) -> Result<ff::frame::Video, IngestError> {
        let t = k as f64 / f64::from(self.spec.fps);
        // Advance while the next source frame starts at or before `t`.
        while self.current.as_ref().is_none_or(|(_, next)| *next <= t) {
            let (picture, start) = self.next_source_picture()?;
            let next = start + self.source_frame_seconds();
            self.current = Some((picture, next));
        }
        let (clean, _) = self.current.as_ref().expect("set above");
        let mut picture = clean.clone();
        self.noise.apply(&mut picture);
        Ok(picture)
    }

    fn source_frame_seconds(&self) -> f64 {
        let rate = self.decoder.frame_rate().unwrap_or(Rational(25, 1));
        f64::from(rate.denominator()) / f64::from(rate.numerator().max(1))
    }

    /// The next decoded source picture, scaled, and its start in seconds
    /// (continuing across loops).
    fn next_source_picture(&mut self) -> Result<(ff::frame::Video, f64), IngestError> {
        let mut decoded = ff::frame::Video::empty();
        loop {
            match self.decoder.receive_frame(&mut decoded) {
                Ok(()) => {
                    let start = self.offset
                        + decoded
                            .timestamp()
                            .map_or(self.loop_end, |ts| ts as f64 * f64::from(self.time_base));
                    self.loop_end = start - self.offset + self.source_frame_seconds();
                    return Ok((self.scale(&decoded)?, start));
                }
                Err(ff::Error::Other { errno }) if errno == EAGAIN => self.feed()?,
                Err(ff::Error::Eof) => self.rewind()?,
                Err(e) => return Err(self.decode_error(e)),
            }
        }
    }

    /// Sends the decoder its next packet, or end of stream.
    fn feed(&mut self) -> Result<(), IngestError> {
        if self.eof {
            return Ok(());
        }
        for (stream, packet) in self.input.packets() {
            if stream.index() == self.stream {
                return self
                    .decoder
                    .send_packet(&packet)
                    .map_err(|e| self.decode_error(e));
            }
        }
        self.eof = true;
        self.decoder.send_eof().map_err(|e| self.decode_error(e))
    }

    /// Starts the source again from its beginning.
    fn rewind(&mut self) -> Result<(), IngestError> {
        if self.loop_end <= 0.0 {
            return Err(IngestError::NoVideo {
                url: self.path.display().to_string(),
            });
        }
        self.offset += self.loop_end;
        self.loop_end = 0.0;
        self.input.seek(0, ..).map_err(|e| self.decode_error(e))?;
        self.decoder.flush();
        self.eof = false;
        Ok(())
    }

    fn scale(&mut self, decoded: &ff::frame::Video) -> Result<ff::frame::Video, IngestError> {
        if self.scaler.is_none() {
            let ctx = scaling::Context::get(
                decoded.format(),
                decoded.width(),
                decoded.height(),
                Pixel::YUV420P,
                self.spec.width,
                self.spec.height,
                scaling::Flags::BICUBIC,
            )
            .map_err(|e| self.decode_error(e))?;
            self.scaler = Some(ctx);
        }
        let mut out = ff::frame::Video::empty();
        let scaler = self.scaler.as_mut().expect("set above");
        if let Err(e) = scaler.run(decoded, &mut out) {
            return Err(self.decode_error(e));
        }
        Ok(out)
    }

    fn decode_error(&self, source: ff::Error) -> IngestError {
        IngestError::Decode {
            url: self.path.display().to_string(),
            source,
        }
    }
}

/// Camera-like luma noise: moves every pixel by a fresh random amount in
/// [-2, 2] (applied to a copy of the clean picture, so it never accumulates).
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        // xorshift64: plenty for noise, no dependency.
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn apply(&mut self, picture: &mut ff::frame::Video) {
        let (w, h, stride) = (
            picture.width() as usize,
            picture.height() as usize,
            picture.stride(0),
        );
        let luma = picture.data_mut(0);
        for y in 0..h {
            // Three random bits per pixel, 21 pixels per draw.
            for chunk in luma[y * stride..y * stride + w].chunks_mut(21) {
                let mut bits = self.next();
                for p in chunk {
                    const DELTA: [i16; 8] = [-2, -1, -1, 0, 0, 1, 1, 2];
                    let delta = DELTA[(bits & 7) as usize];
                    bits >>= 3;
                    *p = (*p as i16 + delta).clamp(0, 255) as u8;
                }
            }
        }
    }
}

/// An H.264 encoder writing MP4.
struct ClipWriter {
    output: ff::format::context::Output,
    encoder: ff::encoder::Video,
    time_base: Rational,
    stream_time_base: Rational,
}

impl ClipWriter {
    fn create(path: &Path, spec: ClipSpec) -> Result<Self, ff::Error> {
        let mut output = ff::format::output_as(path, "mp4")?;
        let codec = ff::encoder::find(ff::codec::Id::H264).ok_or(ff::Error::EncoderNotFound)?;
        let global_header = output
            .format()
            .flags()
            .contains(ff::format::Flags::GLOBAL_HEADER);
        let mut stream = output.add_stream(codec)?;
        let mut encoder = ff::codec::context::Context::new_with_codec(codec)
            .encoder()
            .video()?;
        let time_base = Rational(1, spec.fps as i32);
        encoder.set_width(spec.width);
        encoder.set_height(spec.height);
        encoder.set_format(Pixel::YUV420P);
        encoder.set_time_base(time_base);
        encoder.set_frame_rate(Some(Rational(spec.fps as i32, 1)));
        encoder.set_bit_rate(spec.bit_rate);
        encoder.set_max_bit_rate(spec.bit_rate);
        encoder.set_gop(2 * spec.fps);
        encoder.set_max_b_frames(0);
        if global_header {
            encoder.set_flags(ff::codec::Flags::GLOBAL_HEADER);
        }
        let mut options = Dictionary::new();
        options.set("preset", "veryfast");
        // VBV buffer of one second: a camera's constant-rate stream.
        options.set("bufsize", &spec.bit_rate.to_string());
        let encoder = encoder.open_as_with(codec, options)?;
        stream.set_parameters(&encoder);
        stream.set_time_base(time_base);
        output.write_header()?;
        let stream_time_base = output.stream(0).map_or(time_base, |s| s.time_base());
        Ok(Self {
            output,
            encoder,
            time_base,
            stream_time_base,
        })
    }

    fn write(&mut self, mut frame: ff::frame::Video, k: i64) -> Result<(), ff::Error> {
        frame.set_pts(Some(k));
        self.encoder.send_frame(&frame)?;
        self.drain()
    }

    fn drain(&mut self) -> Result<(), ff::Error> {
        let mut packet = ff::Packet::empty();
        loop {
            match self.encoder.receive_packet(&mut packet) {
                Ok(()) => {
                    packet.set_stream(0);
                    // One frame long, so the container's duration and rate are exact.
                    packet.set_duration(1);
                    packet.rescale_ts(self.time_base, self.stream_time_base);
                    packet.write_interleaved(&mut self.output)?;
                }
                Err(ff::Error::Other { errno }) if errno == EAGAIN => return Ok(()),
                Err(ff::Error::Eof) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    fn finish(mut self) -> Result<(), ff::Error> {
        self.encoder.send_eof()?;
        self.drain()?;
        self.output.write_trailer()
    }
}
