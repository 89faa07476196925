//! A camera's own ffmpeg input options: what its demuxer or protocol needs
//! beyond the URL. A USB camera's `input_format`, `video_size` and
//! `framerate` (else the driver's current mode, often raw 640x480), an
//! HTTP camera's `user_agent` or `headers`, an RTSP camera's `buffer_size`.

use std::collections::BTreeMap;

use crate::IngestError;

/// Options the source sets itself, from the camera's typed settings.
const SET_BY_VIGIL: &[(&str, &str)] = &[("rtsp_transport", "set the camera's `transport`")];

/// Options checked once at the start and handed to ffmpeg at every open.
/// Any that ffmpeg does not take for the input is an error
/// ([`IngestError::UnknownOptions`]), never silently ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputOptions(BTreeMap<String, String>);

impl InputOptions {
    /// Refuses names that are empty, not ffmpeg's option-name characters,
    /// or set from the camera's typed settings, and values with a NUL.
    pub fn new(options: BTreeMap<String, String>) -> Result<Self, IngestError> {
        let bad = |name: &str, reason: String| IngestError::BadOption {
            name: name.to_string(),
            reason,
        };
        for (name, value) in &options {
            let name_ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !name_ok {
                return Err(bad(name, "not an ffmpeg option name".into()));
            }
            if let Some((_, instead)) = SET_BY_VIGIL.iter().find(|(n, _)| n == name) {
                return Err(bad(name, format!("set by vigil: {instead}")));
            }
            if value.contains('\0') {
                return Err(bad(name, "the value holds a NUL byte".into()));
            }
        }
        Ok(Self(options))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Of these options, those still in `left` after ffmpeg opened the
    /// input: the ones nothing took.
    pub(crate) fn not_taken(&self, left: &ffmpeg_next::Dictionary) -> Vec<String> {
        self.0
            .keys()
            .filter(|name| left.get(name).is_some())
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pairs: &[(&str, &str)]) -> Result<InputOptions, IngestError> {
        InputOptions::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn device_and_protocol_options_pass_and_ours_are_refused() {
        let ok = options(&[("video_size", "1920x1080"), ("input_format", "mjpeg")]).unwrap();
        assert_eq!(ok.iter().count(), 2);
        let ours = options(&[("rtsp_transport", "udp")]).unwrap_err();
        assert!(ours.to_string().contains("transport"), "{ours}");
        for name in ["", "video size", "a=b"] {
            assert!(options(&[(name, "1")]).is_err(), "{name:?}");
        }
        assert!(options(&[("headers", "a\0b")]).is_err());
    }

    #[test]
    fn names_left_in_the_dictionary_were_not_taken() {
        let ours = options(&[("framerate", "30"), ("video_sise", "1x1")]).unwrap();
        let mut left = ffmpeg_next::Dictionary::new();
        left.set("video_sise", "1x1");
        left.set("rw_timeout", "5"); // one of the source's own: not reported
        assert_eq!(ours.not_taken(&left), vec!["video_sise".to_string()]);
    }
}
