//! A camera source: one thread that opens the input, decodes, samples at
//! the detection rate, and reconnects with backoff when the input fails.

use std::path::PathBuf;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::decode::{DecodeOptions, InputCounts, VideoInput};
use crate::hwaccel::{DecoderKind, GpuTarget, HwAccel};
use crate::input_options::InputOptions;
use crate::pacing::{Pacer, Sampler};
use crate::queue::FrameSender;
use crate::stats::{RateMeter, SourceState, SourceStats};
use crate::{Frame, IngestError, Pixels};

/// Characters that must be escaped in a URL's `user:password@` part.
const USERINFO: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Reconnect delays double from the minimum up to the maximum. The cap is
/// low on purpose: a camera that comes back must be picked up within
/// seconds, and a connect attempt costs next to nothing.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// A camera that refuses our credentials is not down: asking every second
/// would lock the account on many cameras. Its delays double from the
/// minimum to the maximum; fixing the password restarts the source anyway.
const REFUSED_BACKOFF_MIN: Duration = Duration::from_secs(5);
const REFUSED_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// After a hardware decoder failed, the camera decodes in software for this
/// long, then tries the hardware again (a driver hiccup is not forever).
const HARDWARE_RETRY_AFTER: Duration = Duration::from_secs(600);
/// A stream clock that goes back more than this (an encoder restarted, an
/// HLS discontinuity) is rebased so stream time keeps rising.
const CLOCK_JUMP_BACK: i64 = 1_000_000;

/// Where frames come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceUrl {
    /// A local file. `looping` restarts it at the end; `realtime` plays it
    /// at the speed it was recorded (off: as fast as it decodes).
    File {
        path: PathBuf,
        looping: bool,
        realtime: bool,
    },
    /// rtsp://, rtsps://, rtmp://, http://, https://: read as it comes,
    /// except a recording over HTTP, played at real time. `transport`
    /// applies to RTSP only.
    Network { url: String, transport: Transport },
    /// A V4L2 capture device such as `/dev/video0`.
    Device { path: PathBuf },
}

/// How RTSP carries the media. TCP (interleaved) passes firewalls and NAT
/// and loses nothing; UDP has less latency on a clean LAN.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Tcp,
    Udp,
}

impl Transport {
    fn as_ffmpeg(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }
}

impl SourceUrl {
    /// Parses `rtsp://…`, `http(s)://…`, `file:///path?loop=0|1&realtime=0|1`,
    /// `/dev/videoN` (or `v4l2:///dev/videoN`) or a plain path. Files loop
    /// and play at real time unless told otherwise.
    pub fn parse(url: &str) -> Result<Self, IngestError> {
        let bad = |reason: &str| IngestError::BadUrl {
            url: redact_credentials(url),
            reason: reason.to_string(),
        };
        let url = url.trim();
        if url.is_empty() {
            return Err(bad("empty"));
        }
        for scheme in ["rtsp://", "rtsps://", "rtmp://", "http://", "https://"] {
            if let Some(rest) = url.strip_prefix(scheme) {
                // An `@` after the host is most often a password with a `/`
                // in it: ffmpeg would take part of it for the host, and it
                // could not be hidden when the URL is shown.
                let path = &rest[authority_len(rest)..];
                let path = path.split(['?', '#']).next().unwrap_or("");
                if path.contains('@') {
                    return Err(IngestError::BadUrl {
                        url: format!("{scheme}…"),
                        reason: "an '@' after the host: percent-encode it as %40 in a path, \
                                 or put the credentials in username and password"
                            .into(),
                    });
                }
                return Ok(Self::Network {
                    url: url.to_string(),
                    transport: Transport::Tcp,
                });
            }
        }
        if let Some(path) = url.strip_prefix("v4l2://") {
            return Ok(Self::Device { path: path.into() });
        }
        if url.starts_with("/dev/video") {
            return Ok(Self::Device { path: url.into() });
        }
        let rest = match url.strip_prefix("file://") {
            Some(rest) => rest,
            None if url.contains("://") => return Err(bad("unsupported scheme")),
            None => url,
        };
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (mut looping, mut realtime) = (true, true);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let flag = match value {
                "1" | "true" => true,
                "0" | "false" => false,
                _ => return Err(bad("file options take 0 or 1")),
            };
            match key {
                "loop" => looping = flag,
                "realtime" => realtime = flag,
                _ => return Err(bad("file options are loop=0|1 and realtime=0|1")),
            }
        }
        if path.is_empty() {
            return Err(bad("no file path"));
        }
        Ok(Self::File {
            path: PathBuf::from(path),
            looping,
            realtime,
        })
    }

    pub fn is_network(&self) -> bool {
        matches!(self, Self::Network { .. })
    }

    /// http:// or https://.
    pub fn is_http(&self) -> bool {
        matches!(self, Self::Network { url, .. } if url.starts_with("http"))
    }

    /// Sets how RTSP media travels; other sources ignore it.
    pub fn with_transport(mut self, transport: Transport) -> Self {
        if let Self::Network { transport: t, .. } = &mut self {
            *t = transport;
        }
        self
    }

    /// Puts credentials kept apart from the URL (in the config) into it,
    /// percent-encoded so any character may appear in a password.
    pub fn with_credentials(self, username: &str, password: &str) -> Result<Self, IngestError> {
        let Self::Network { url, transport } = self else {
            return Ok(self);
        };
        let (scheme, rest) = url.split_once("://").expect("network urls have a scheme");
        if rest[..authority_len(rest)].contains('@') {
            return Err(IngestError::BadUrl {
                url: redact_credentials(&url),
                reason: "credentials both in the URL and in the config".into(),
            });
        }
        let encode = |s: &str| utf8_percent_encode(s, USERINFO).to_string();
        Ok(Self::Network {
            url: format!(
                "{scheme}://{}:{}@{rest}",
                encode(username),
                encode(password)
            ),
            transport,
        })
    }

    /// The RTSP transport, for network sources.
    pub fn transport(&self) -> Option<Transport> {
        match self {
            Self::Network { url, transport } if url.starts_with("rtsp") => Some(*transport),
            _ => None,
        }
    }

    /// The ffmpeg input format to force, for sources it cannot probe.
    pub fn ffmpeg_format(&self) -> Option<&'static str> {
        matches!(self, Self::Device { .. }).then_some("video4linux2")
    }

    pub(crate) fn ffmpeg_transport(&self) -> Option<&'static str> {
        self.transport().map(Transport::as_ffmpeg)
    }

    /// The source as logs, errors and the API may show it: without
    /// `user:password@`.
    pub fn shown(&self) -> String {
        redact_credentials(&self.ffmpeg_location())
    }

    /// What ffmpeg opens (with credentials: never log it).
    pub fn ffmpeg_location(&self) -> String {
        match self {
            Self::File { path, .. } | Self::Device { path } => path.display().to_string(),
            Self::Network { url, .. } => url.clone(),
        }
    }
}

/// The frame just decoded, as the pipeline takes it: in GPU memory when it
/// was decoded into the model's context, else as RGB.
fn sampled_pixels(input: &mut VideoInput) -> Result<(u32, u32, Pixels), IngestError> {
    if let Some(frame) = input.gpu_frame() {
        let (width, height) = frame.size();
        return Ok((width, height, Pixels::Gpu(Arc::new(frame))));
    }
    let (width, height, rgb) = input.convert_to_rgb()?;
    Ok((width, height, Pixels::Rgb(rgb)))
}

/// `d` give or take 20 %, so cameras that failed together (a switch
/// rebooting) do not all reconnect in the same instant.
fn jittered(d: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    // The sub-second clock differs per call and per thread: noise enough.
    let unit = (nanos.wrapping_mul(2_654_435_761) % 1000) as f64 / 1000.0;
    d.mul_f64(0.8 + 0.4 * unit)
}

/// Names of URL parameters whose values are secrets, wherever they sit:
/// in the query (`?pwd=…`) or in the path, as some cameras put them
/// (`rtsp://cam/user=admin&password=…&channel=1`).
const SECRET_PARAMETERS: &[&str] = &[
    "password",
    "passwd",
    "pass",
    "pwd",
    "psw",
    "token",
    "access_token",
    "auth",
    "key",
    "apikey",
    "api_key",
    "secret",
    "sig",
    "signature",
];

/// Hides credentials in a URL before it is shown anywhere: `user:password@`
/// and the values of [`SECRET_PARAMETERS`], each as `***`. Only the
/// authority (up to the first `/`, `?` or `#`, as ffmpeg splits it) holds
/// `user:password@`: an `@` further on is part of the path and stays.
pub fn redact_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = rest.split_at(authority_len(rest));
    let host = match authority.rfind('@') {
        Some(at) => format!("***@{}", &authority[at + 1..]),
        None => authority.to_string(),
    };
    format!("{scheme}://{host}{}", redact_parameters(tail))
}

/// `tail` (path, query, fragment) with secret parameters' values hidden.
fn redact_parameters(tail: &str) -> String {
    let mut out = String::with_capacity(tail.len());
    let mut rest = tail;
    while let Some(eq) = rest.find('=') {
        let (before, after) = (&rest[..eq], &rest[eq + 1..]);
        let name_start = before.rfind(['?', '&', ';', '/']).map_or(0, |i| i + 1);
        let secret = SECRET_PARAMETERS
            .iter()
            .any(|s| before[name_start..].eq_ignore_ascii_case(s));
        let value_len = after.find(['&', ';', '#', '?']).unwrap_or(after.len());
        out.push_str(before);
        out.push('=');
        if secret && value_len > 0 {
            out.push_str("***");
        } else {
            out.push_str(&after[..value_len]);
        }
        rest = &after[value_len..];
    }
    out.push_str(rest);
    out
}

/// The length of the authority (`user:pass@host:port`) at the start of
/// what follows `scheme://`.
fn authority_len(rest: &str) -> usize {
    rest.find(['/', '?', '#']).unwrap_or(rest.len())
}

/// One camera to run.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub camera_id: String,
    pub url: SourceUrl,
    /// Frames per second handed on for detection.
    pub detect_fps: f64,
    /// Where to decode; software when the hardware is missing or fails.
    pub hwaccel: HwAccel,
    /// Software decoding threads; 0 lets ffmpeg choose.
    pub decode_threads: usize,
    /// Frames handed on are at most this wide (aspect kept).
    pub max_width: Option<u32>,
    /// The model's CUDA context, when it runs on a GPU: NVDEC frames are
    /// then handed on in GPU memory.
    pub gpu_target: Option<GpuTarget>,
    /// The camera's own ffmpeg options (a device's format and size).
    pub input_options: InputOptions,
}

/// A running source thread.
pub struct SourceHandle {
    pub camera_id: String,
    pub stats: Arc<SourceStats>,
    thread: JoinHandle<()>,
}

impl SourceHandle {
    /// Waits for the thread to end (after `stop` was set or the input ended).
    pub fn join(self) {
        if self.thread.join().is_err() {
            tracing::error!(camera = %self.camera_id, "source thread panicked");
        }
    }

    /// Like [`Self::join`], giving up at `deadline`: a thread blocked in
    /// the operating system (a FIFO with no writer, a device or network
    /// file system that never answers) cannot be interrupted, and must not
    /// hold up a stop or a reload. Such a thread is left behind; it ends by
    /// itself once the call returns, as `stop` is set. Returns whether the
    /// thread ended.
    pub fn join_by(self, deadline: Instant) -> bool {
        while !self.thread.is_finished() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.join();
        true
    }
}

/// Starts a thread that feeds `queue` from `config` until `stop` is set or
/// a non-looping file ends. The thread's queue handle goes when it ends.
pub fn spawn_source(
    config: SourceConfig,
    queue: FrameSender,
    stop: Arc<AtomicBool>,
) -> std::io::Result<SourceHandle> {
    let stats = Arc::new(SourceStats::default());
    let camera_id = config.camera_id.clone();
    let thread_stats = stats.clone();
    let thread = std::thread::Builder::new()
        .name(format!("src-{}", config.camera_id))
        .spawn(move || {
            let span = tracing::info_span!("source", camera = %config.camera_id);
            let _guard = span.enter();
            SourceRun::new(config, queue, stop, thread_stats).run();
        })?;
    Ok(SourceHandle {
        camera_id,
        stats,
        thread,
    })
}

/// How one input session ended.
enum SessionEnd {
    EndOfStream,
    Stopped,
    Failed(IngestError),
}

struct SourceRun {
    config: SourceConfig,
    camera: Arc<str>,
    queue: FrameSender,
    stop: Arc<AtomicBool>,
    stats: Arc<SourceStats>,
    sampler: Sampler,
    pacer: Option<Pacer>,
    seq: u64,
    /// Stream time at which the next session starts, so time keeps rising
    /// across file loops and reconnects.
    session_base_us: i64,
    /// When a hardware decoder last failed: later sessions decode in
    /// software for [`HARDWARE_RETRY_AFTER`], so a flaky GPU costs a
    /// reconnect, not the camera.
    hardware_failed: Option<Instant>,
}

impl SourceRun {
    fn new(
        config: SourceConfig,
        queue: FrameSender,
        stop: Arc<AtomicBool>,
        stats: Arc<SourceStats>,
    ) -> Self {
        let pacer = matches!(config.url, SourceUrl::File { realtime: true, .. }).then(Pacer::new);
        Self {
            camera: config.camera_id.as_str().into(),
            sampler: Sampler::new(config.detect_fps),
            config,
            queue,
            stop,
            stats,
            pacer,
            seq: 0,
            session_base_us: 0,
            hardware_failed: None,
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn run(mut self) {
        let mut backoff = BACKOFF_MIN;
        while !self.stopping() {
            self.stats.set_state(SourceState::Connecting);
            let software_only = self
                .hardware_failed
                .is_some_and(|at| at.elapsed() < HARDWARE_RETRY_AFTER);
            let hwaccel = if software_only {
                HwAccel::None
            } else {
                self.config.hwaccel
            };
            let mut decoder = DecoderKind::Software;
            let options = DecodeOptions {
                hwaccel,
                threads: self.config.decode_threads,
                needed_fps: Some(self.config.detect_fps),
                max_width: self.config.max_width,
                gpu_target: self.config.gpu_target,
            };
            let end = match VideoInput::open_watched(
                &self.config.url,
                &self.config.input_options,
                options,
                Some(self.stop.clone()),
            ) {
                Ok(input) => {
                    decoder = input.decoder_kind();
                    tracing::info!(
                        url = %self.config.url.shown(),
                        codec = input.codec_name(),
                        %decoder,
                        skips_nonref = input.skips_nonref(),
                        "source opened"
                    );
                    let on_gpu = if input.frames_stay_on_gpu() {
                        ", frames stay on the GPU"
                    } else {
                        ""
                    };
                    self.stats
                        .set_decoder(format!("{} ({decoder}{on_gpu})", input.codec_name()));
                    backoff = BACKOFF_MIN;
                    self.stats.set_state(SourceState::Streaming);
                    self.session(input)
                }
                Err(e) => SessionEnd::Failed(e),
            };
            let decoder_failed = matches!(&end, SessionEnd::Failed(e) if e.blames_decoder());
            if decoder_failed && decoder != DecoderKind::Software {
                tracing::warn!(
                    %decoder,
                    software_for = ?HARDWARE_RETRY_AFTER,
                    "hardware decoding failed; this camera decodes in software for now"
                );
                self.hardware_failed = Some(Instant::now());
            }
            // How long to wait: far longer for a camera that refused us.
            let refused = matches!(&end, SessionEnd::Failed(e) if e.is_refusal());
            let (floor, ceiling) = if refused {
                (REFUSED_BACKOFF_MIN, REFUSED_BACKOFF_MAX)
            } else {
                (BACKOFF_MIN, BACKOFF_MAX)
            };
            backoff = backoff.clamp(floor, ceiling);
            match end {
                SessionEnd::Stopped => break,
                SessionEnd::EndOfStream => match self.config.url {
                    SourceUrl::File { looping: true, .. } => continue,
                    SourceUrl::File { looping: false, .. } => {
                        tracing::info!("file ended");
                        break;
                    }
                    SourceUrl::Network { .. } | SourceUrl::Device { .. } => {
                        tracing::warn!("stream ended; reconnecting");
                        self.stats.set_error("stream ended".into());
                    }
                },
                SessionEnd::Failed(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "source failed");
                    self.stats.set_error(e.to_string());
                }
            }
            self.stats.set_state(SourceState::Retrying);
            self.sleep(jittered(backoff));
            backoff = (backoff * 2).min(ceiling);
            self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.set_state(SourceState::Stopped);
    }

    /// Reads one opened input until it ends, fails or we stop.
    fn session(&mut self, mut input: VideoInput) -> SessionEnd {
        if self.pacer.is_none() && input.is_recording() {
            // Else it would be analysed in a burst, its events compressed
            // into seconds, and then fetched again.
            tracing::info!("a recording over the network: played at real time");
            self.pacer = Some(Pacer::new());
        }
        let mut first_raw: Option<i64> = None;
        let mut last_t = self.session_base_us;
        let mut counted = InputCounts::default();
        let mut meter = RateMeter::new(Instant::now(), (0, 0));
        let end = loop {
            if self.stopping() {
                break SessionEnd::Stopped;
            }
            let next = input.next_frame();
            counted = self.publish_counts(input.counts(), counted, &mut meter);
            let raw = match next {
                Ok(Some(raw)) => raw,
                // An input that opens but never yields a frame would else
                // be reopened (a looping file) in a tight loop, silently.
                Ok(None) if counted.decoded == 0 => {
                    break SessionEnd::Failed(IngestError::NoFrames {
                        url: self.config.url.shown(),
                    })
                }
                Ok(None) => break SessionEnd::EndOfStream,
                Err(e) => break SessionEnd::Failed(e),
            };
            let first = *first_raw.get_or_insert(raw);
            let mut t = self.session_base_us + (raw - first).max(0);
            if t + CLOCK_JUMP_BACK < last_t {
                // Else nothing would be sampled until the clock caught up
                // again, while packets keep the stall watchdog content.
                tracing::warn!(
                    back_by_us = last_t - t,
                    "the stream's clock went back; rebasing"
                );
                t = last_t + input.frame_duration_us();
                first_raw = Some(raw - (t - self.session_base_us));
            }
            last_t = t;
            if let Some(pacer) = &mut self.pacer {
                let wait = pacer.delay(t, Instant::now());
                self.sleep(wait);
            }
            if !self.sampler.take(t) {
                continue;
            }
            let (width, height, pixels) = match sampled_pixels(&mut input) {
                Ok(sampled) => sampled,
                Err(e) => break SessionEnd::Failed(e),
            };
            let frame = Frame {
                camera_id: self.camera.clone(),
                seq: self.seq,
                pts_us: t,
                wall_time: SystemTime::now(),
                width,
                height,
                pixels,
            };
            self.seq += 1;
            self.stats.frames_sampled.fetch_add(1, Ordering::Relaxed);
            // A file read as fast as it decodes is analysed whole, at the
            // model's pace; a live source never waits (its oldest frame goes).
            let dropped =
                if self.pacer.is_none() && matches!(self.config.url, SourceUrl::File { .. }) {
                    self.queue.send_waiting(frame, &self.stop)
                } else {
                    self.queue.send(frame)
                };
            if dropped > 0 {
                self.stats
                    .frames_dropped
                    .fetch_add(dropped, Ordering::Relaxed);
            }
        };
        self.session_base_us = last_t + input.frame_duration_us();
        self.stats.set_rates(0.0, 0.0);
        end
    }

    /// Adds what the input counted since `before` to the shared stats and
    /// refreshes the rates once a second. Returns the new totals.
    fn publish_counts(
        &self,
        now: InputCounts,
        before: InputCounts,
        meter: &mut RateMeter,
    ) -> InputCounts {
        let add = |counter: &std::sync::atomic::AtomicU64, new: u64, old: u64| {
            if new > old {
                counter.fetch_add(new - old, Ordering::Relaxed);
            }
        };
        add(&self.stats.frames_in, now.packets, before.packets);
        add(&self.stats.frames_decoded, now.decoded, before.decoded);
        add(&self.stats.frames_skipped, now.skipped, before.skipped);
        if let Some((input_fps, decoded_fps)) =
            meter.observe(Instant::now(), (now.packets, now.decoded))
        {
            self.stats.set_rates(input_fps, decoded_fps);
        }
        now
    }

    /// Sleeps up to `d`, waking early when asked to stop.
    fn sleep(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stopping() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delays_are_jittered_and_capped_so_a_camera_returns_within_5_s() {
        for _ in 0..100 {
            let d = jittered(BACKOFF_MAX);
            assert!(d >= BACKOFF_MAX.mul_f64(0.8) && d <= BACKOFF_MAX.mul_f64(1.2));
            assert!(d < Duration::from_secs(5));
        }
    }

    #[test]
    fn credentials_never_leave_the_box() {
        assert_eq!(
            redact_credentials("rtsp://admin:secret@10.0.0.2/s1"),
            "rtsp://***@10.0.0.2/s1"
        );
        assert_eq!(
            redact_credentials("rtsp://10.0.0.2/s1"),
            "rtsp://10.0.0.2/s1"
        );
        assert_eq!(redact_credentials("/data/a@b.mp4"), "/data/a@b.mp4");
        // Found by fuzzing: an '@' in the path used to swallow the host.
        assert_eq!(
            redact_credentials("http://cam.lan/snap?user=a@b"),
            "http://cam.lan/snap?user=a@b"
        );
        assert_eq!(
            redact_credentials("rtsp://admin:p@ss@10.0.0.2:554/s1?x=@"),
            "rtsp://***@10.0.0.2:554/s1?x=@"
        );
        // Secrets some cameras take as parameters, in the query or the path.
        assert_eq!(
            redact_credentials("http://cam/videostream.cgi?user=admin&PWD=hunter2&rate=0"),
            "http://cam/videostream.cgi?user=admin&PWD=***&rate=0"
        );
        assert_eq!(
            redact_credentials(
                "rtsp://10.0.0.3:554/user=admin&password=s3cr3t&channel=1&stream=0.sdp?"
            ),
            "rtsp://10.0.0.3:554/user=admin&password=***&channel=1&stream=0.sdp?"
        );
        assert_eq!(
            redact_credentials("https://a:b@cdn/live.m3u8?token=abc/def=&keyframes=1#t=5"),
            "https://***@cdn/live.m3u8?token=***&keyframes=1#t=5"
        );
        let err = SourceUrl::parse("rtsp://admin:pa/ss@10.0.0.2/s1").unwrap_err();
        assert!(!err.to_string().contains("ss@"), "{err}");
        assert!(SourceUrl::parse("rtsp://10.0.0.2/strea@m1").is_err());
        let err = SourceUrl::parse("rtspx://admin:secret@10.0.0.2/").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
        let url = SourceUrl::parse("rtsp://admin:secret@10.0.0.2/s1").unwrap();
        assert!(!url.shown().contains("secret"));
        // An '@' in the query is not a credential: config credentials apply.
        let url = SourceUrl::parse("http://10.0.0.2/snap?user=a@b").unwrap();
        assert!(url.with_credentials("u", "p").is_ok());

        // Credentials from the config are encoded into the URL, and hidden.
        let url = SourceUrl::parse("rtsp://10.0.0.2:554/s1")
            .unwrap()
            .with_credentials("cam op", "p@ss:w/rd")
            .unwrap();
        assert_eq!(
            url.ffmpeg_location(),
            "rtsp://cam%20op:p%40ss%3Aw%2Frd@10.0.0.2:554/s1"
        );
        assert_eq!(url.shown(), "rtsp://***@10.0.0.2:554/s1");
        let twice = SourceUrl::parse("rtsp://a:b@10.0.0.2/s1")
            .unwrap()
            .with_credentials("c", "d");
        assert!(twice.is_err());
    }

    #[test]
    fn parses_the_source_kinds() {
        assert_eq!(
            SourceUrl::parse("rtsp://10.0.0.2/s1").unwrap(),
            SourceUrl::Network {
                url: "rtsp://10.0.0.2/s1".into(),
                transport: Transport::Tcp
            }
        );
        assert_eq!(
            SourceUrl::parse("/dev/video0").unwrap(),
            SourceUrl::Device {
                path: "/dev/video0".into()
            }
        );
        assert_eq!(
            SourceUrl::parse("v4l2:///dev/video2")
                .unwrap()
                .ffmpeg_format(),
            Some("video4linux2")
        );
        assert_eq!(
            SourceUrl::parse("file:///data/a.mp4?loop=0").unwrap(),
            SourceUrl::File {
                path: "/data/a.mp4".into(),
                looping: false,
                realtime: true
            }
        );
        assert_eq!(
            SourceUrl::parse("clips/b.avi").unwrap(),
            SourceUrl::File {
                path: "clips/b.avi".into(),
                looping: true,
                realtime: true
            }
        );
        assert_eq!(
            SourceUrl::parse("file:///c.mp4?realtime=0&loop=0").unwrap(),
            SourceUrl::File {
                path: "/c.mp4".into(),
                looping: false,
                realtime: false
            }
        );
        assert!(SourceUrl::parse("file:///c.mp4?loop=maybe").is_err());
        assert!(SourceUrl::parse("gopher://x").is_err());
        assert!(SourceUrl::parse("file:///a.mp4?speed=2").is_err());
        assert!(SourceUrl::parse("  ").is_err());
    }
}
