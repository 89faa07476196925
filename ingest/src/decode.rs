//! One open video input: demux, decode, convert sampled frames to RGB.

use ff::format::Pixel;
use ff::software::scaling;
use ff::util::error::EAGAIN;
use ff::{Dictionary, Rational, Rescale};
use ffmpeg_next as ff;

use crate::source::SourceUrl;
use crate::IngestError;

/// Microseconds, the unit of every timestamp we hand on.
const MICROS: Rational = Rational(1, 1_000_000);
/// Socket timeout for network sources, so a dead camera cannot block a read forever.
const NETWORK_TIMEOUT_US: &str = "5000000";

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
    eof_sent: bool,
    scaler: Option<Scaler>,
}

struct Scaler {
    ctx: scaling::Context,
    key: (Pixel, u32, u32),
    rgb: ff::frame::Video,
}

impl VideoInput {
    pub fn open(url: &SourceUrl) -> Result<Self, IngestError> {
        let location = url.ffmpeg_location();
        let mut options = Dictionary::new();
        if url.is_network() {
            options.set("rtsp_transport", "tcp");
            options.set("timeout", NETWORK_TIMEOUT_US);
            options.set("rw_timeout", NETWORK_TIMEOUT_US);
        }
        let input = ff::format::input_with_dictionary(&location, options).map_err(|e| {
            IngestError::Open {
                url: location.clone(),
                source: e,
            }
        })?;
        let stream = input
            .streams()
            .best(ff::media::Type::Video)
            .ok_or_else(|| IngestError::NoVideo {
                url: location.clone(),
            })?;
        let stream_index = stream.index();
        let time_base = stream.time_base();
        let rate = stream.avg_frame_rate();
        let frame_duration_us = if rate.numerator() > 0 && rate.denominator() > 0 {
            1_000_000 * rate.denominator() as i64 / rate.numerator() as i64
        } else {
            40_000
        };
        let mut ctx =
            ff::codec::context::Context::from_parameters(stream.parameters()).map_err(|e| {
                IngestError::Decode {
                    url: location.clone(),
                    source: e,
                }
            })?;
        // Slice threading keeps latency at one frame; two threads suit the edge box.
        ctx.set_threading(ff::threading::Config {
            kind: ff::threading::Type::Slice,
            count: 2,
            ..Default::default()
        });
        let codec_id = ctx.id();
        let no_decoder = || IngestError::NoDecoder {
            url: location.clone(),
            codec: format!("{codec_id:?}"),
        };
        let decoder = ctx.decoder().video().map_err(|_| no_decoder())?;
        Ok(Self {
            url: location,
            input,
            decoder,
            stream_index,
            time_base,
            frame_duration_us,
            last_pts_us: None,
            frame: ff::frame::Video::empty(),
            eof_sent: false,
            scaler: None,
        })
    }

    pub fn frame_duration_us(&self) -> i64 {
        self.frame_duration_us
    }

    /// Decodes the next frame; returns its stream time in microseconds, or
    /// `None` at the end of the stream. The frame is kept for [`Self::convert_to_rgb`].
    pub fn next_frame(&mut self) -> Result<Option<i64>, IngestError> {
        loop {
            match self.decoder.receive_frame(&mut self.frame) {
                Ok(()) => return Ok(Some(self.frame_pts_us())),
                Err(ff::Error::Other { errno }) if errno == EAGAIN => {}
                Err(ff::Error::Eof) => return Ok(None),
                Err(e) => return Err(self.decode_error(e)),
            }
            if self.eof_sent {
                return Ok(None);
            }
            let mut packet = ff::Packet::empty();
            match packet.read(&mut self.input) {
                Ok(()) if packet.stream() == self.stream_index => {
                    match self.decoder.send_packet(&packet) {
                        Ok(()) => {}
                        // A damaged packet costs a frame, not the stream.
                        Err(ff::Error::InvalidData) => {
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
                Err(e) => return Err(self.decode_error(e)),
            }
        }
    }

    fn decode_error(&self, e: ff::Error) -> IngestError {
        IngestError::Decode {
            url: self.url.clone(),
            source: e,
        }
    }

    fn frame_pts_us(&mut self) -> i64 {
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
        let (w, h, fmt) = (self.frame.width(), self.frame.height(), self.frame.format());
        let key = (fmt, w, h);
        if self.scaler.as_ref().is_none_or(|s| s.key != key) {
            let ctx =
                scaling::Context::get(fmt, w, h, Pixel::RGB24, w, h, scaling::Flags::BILINEAR)
                    .map_err(|e| self.decode_error(e))?;
            self.scaler = Some(Scaler {
                ctx,
                key,
                rgb: ff::frame::Video::empty(),
            });
        }
        let scaler = self.scaler.as_mut().expect("scaler set above");
        scaler
            .ctx
            .run(&self.frame, &mut scaler.rgb)
            .map_err(|e| IngestError::Decode {
                url: self.url.clone(),
                source: e,
            })?;
        let stride = scaler.rgb.stride(0);
        let row = w as usize * 3;
        let data = scaler.rgb.data(0);
        let mut rgb = Vec::with_capacity(row * h as usize);
        for y in 0..h as usize {
            rgb.extend_from_slice(&data[y * stride..y * stride + row]);
        }
        Ok((w, h, rgb))
    }
}
