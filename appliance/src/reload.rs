//! Changing the configuration while running. A new configuration (from the
//! API, or the file edited by hand followed by SIGHUP) is validated first;
//! then the pipeline stops and starts again inside the process with it. If
//! it does not start, the old file and pipeline come back.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crossbeam_channel::Sender;

use crate::config::{Config, OptionValue, SECRET_INPUT_OPTIONS};

/// What the main loop is asked to do.
pub enum Request {
    Stop(&'static str),
    /// Re-read the configuration file (SIGHUP).
    ReloadFile,
    /// Run with this configuration, already validated and saved.
    Reload(Box<Config>),
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigUpdateError {
    #[error("this instance runs without a configuration file (the demo); nothing to change")]
    NoFile,
    #[error("{0}")]
    Invalid(String),
    #[error("cannot save {path}: {source}")]
    Save {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the appliance is shutting down")]
    Stopping,
}

/// Shared by the HTTP handlers and the main loop.
pub struct ConfigControl {
    file: Option<PathBuf>,
    current: Mutex<Config>,
    requests: Sender<Request>,
}

/// What credential-free views show in place of secrets (see
/// [`Config::redacted_toml`]): `***` in a URL (`redact_credentials`'s mark),
/// `<redacted>` for a password. Sent back unchanged, they mean "keep".
const HIDDEN_IN_URL: &str = "***";
const HIDDEN_PASSWORD: &str = crate::config::HIDDEN_SECRET;

impl ConfigControl {
    pub fn new(config: Config, requests: Sender<Request>) -> Self {
        Self {
            file: config.file.clone(),
            current: Mutex::new(config),
            requests,
        }
    }

    pub fn current(&self) -> Config {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_current(&self, config: Config) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = config;
    }

    /// Validates `text`, saves it over the file and asks the main loop to
    /// run with it. Secrets shown redacted and sent back as they were keep
    /// their stored values.
    pub fn apply(&self, text: &str) -> Result<(), ConfigUpdateError> {
        let file = self.file.clone().ok_or(ConfigUpdateError::NoFile)?;
        let text = restore_secrets(text, &self.current(), &file)?;
        let config =
            Config::parse(&text, &file).map_err(|e| ConfigUpdateError::Invalid(e.to_string()))?;
        save_atomically(&file, &text)?;
        tracing::info!(file = %file.display(), "configuration changed; restarting the pipeline");
        self.requests
            .send(Request::Reload(Box::new(config)))
            .map_err(|_| ConfigUpdateError::Stopping)
    }

    /// Reads the file again (after SIGHUP).
    pub fn load_file(&self) -> Result<Config, ConfigUpdateError> {
        let file = self.file.as_ref().ok_or(ConfigUpdateError::NoFile)?;
        Config::load(file).map_err(|e| ConfigUpdateError::Invalid(e.to_string()))
    }

    /// Puts `config`'s text back in the file (after a failed start).
    pub fn restore_file(&self, config: &Config) {
        if let Some(file) = &self.file {
            if let Err(e) = save_atomically(file, &config.text) {
                tracing::error!(error = %e, "cannot restore the previous configuration file");
            }
        }
    }
}

/// Replaces `***` credentials and `<redacted>` passwords and secret input
/// options with the running configuration's values for the same camera.
fn restore_secrets(text: &str, current: &Config, file: &Path) -> Result<String, ConfigUpdateError> {
    if !text.contains(HIDDEN_IN_URL) && !text.contains(HIDDEN_PASSWORD) {
        return Ok(text.to_string());
    }
    let draft = Config::parse(text, file).map_err(|e| ConfigUpdateError::Invalid(e.to_string()))?;
    let quote = |v: &str| toml::Value::String(v.to_string()).to_string();
    let mut edits = Vec::new();
    let redact = vigil_ingest::source::redact_credentials;
    let hidden_option = OptionValue::Text(HIDDEN_PASSWORD.into());
    for cam in &draft.cameras {
        let id = cam.id.get_ref();
        let old = current.cameras.iter().find(|c| c.id.get_ref() == id);
        // Stored secrets go only where they went before: else an edited
        // URL would send them to any host the editor names.
        let same_host = old.is_some_and(|o| redact(o.url.get_ref()) == redact(cam.url.get_ref()));
        if cam.url.get_ref().contains(HIDDEN_IN_URL) {
            let old_url = old
                .map(|c| c.url.get_ref())
                .filter(|u| redact(u) == *cam.url.get_ref());
            let Some(old_url) = old_url else {
                return Err(ConfigUpdateError::Invalid(format!(
                    "camera {id:?}: the url has *** for its credentials but something else in it \
                     changed; write the credentials out"
                )));
            };
            edits.push((cam.url.span(), quote(old_url)));
        }
        if let Some(pw) = cam
            .password
            .as_ref()
            .filter(|p| p.get_ref() == HIDDEN_PASSWORD)
        {
            let Some(old_pw) = old.and_then(|o| o.password.as_ref()) else {
                return Err(ConfigUpdateError::Invalid(format!(
                    "camera {id:?}: password is {HIDDEN_PASSWORD:?} but there is no stored one"
                )));
            };
            if !same_host {
                return Err(ConfigUpdateError::Invalid(format!(
                    "camera {id:?}: password is {HIDDEN_PASSWORD:?} but the url changed; \
                     write the password out"
                )));
            }
            edits.push((pw.span(), quote(old_pw.get_ref())));
        }
        for name in SECRET_INPUT_OPTIONS {
            let Some(value) = cam
                .input_options
                .get(*name)
                .filter(|v| *v.get_ref() == hidden_option)
            else {
                continue;
            };
            let stored = old
                .filter(|_| same_host)
                .and_then(|o| o.input_options.get(*name));
            let Some(stored) = stored else {
                return Err(ConfigUpdateError::Invalid(format!(
                    "camera {id:?}: input option {name} is {HIDDEN_PASSWORD:?} but none is \
                     stored for this url; write it out"
                )));
            };
            edits.push((value.span(), quote(&stored.get_ref().to_string())));
        }
    }
    if let Some(pw) = draft
        .mqtt
        .as_ref()
        .and_then(|m| m.password.as_ref())
        .filter(|p| p.get_ref() == HIDDEN_PASSWORD)
    {
        let new_url = draft.mqtt.as_ref().map(|m| m.url.get_ref());
        let stored = current
            .mqtt
            .as_ref()
            .and_then(|m| Some((m, m.password.as_ref()?)));
        let Some((old, old_pw)) = stored else {
            return Err(ConfigUpdateError::Invalid(format!(
                "mqtt: password is {HIDDEN_PASSWORD:?} but there is no stored one"
            )));
        };
        if new_url != Some(old.url.get_ref()) {
            return Err(ConfigUpdateError::Invalid(format!(
                "mqtt: password is {HIDDEN_PASSWORD:?} but the url changed; write the password out"
            )));
        }
        edits.push((pw.span(), quote(old_pw.get_ref())));
    }
    edits.sort_by_key(|(span, _)| std::cmp::Reverse(span.start));
    let mut text = text.to_string();
    for (span, with) in edits {
        text.replace_range(span, &with);
    }
    Ok(text)
}

/// Writes a sibling file, syncs it, and renames it over `path`: a crash
/// leaves the old file or the new one, never half of one.
fn save_atomically(path: &Path, text: &str) -> Result<(), ConfigUpdateError> {
    use std::io::Write;
    let err = |source| ConfigUpdateError::Save {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    tmp.write_all(text.as_bytes()).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    if let Ok(meta) = std::fs::metadata(path) {
        // Keep the file's mode (it may hold credentials: often 0640).
        tmp.as_file()
            .set_permissions(meta.permissions())
            .map_err(err)?;
    }
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[storage]\npath = \"db\"\n\n[[cameras]]\nid = \"gate\"\n\
                        url = \"rtsp://admin:hunter22@10.0.0.5/s\"\n\n[[cameras]]\nid = \"yard\"\n\
                        url = \"rtsp://10.0.0.6/s\"\nusername = \"u\"\npassword = \"s3cret\"\n";

    fn control(dir: &Path) -> (ConfigControl, crossbeam_channel::Receiver<Request>) {
        let file = dir.join("vigil.toml");
        std::fs::write(&file, BASE).unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        (ConfigControl::new(Config::load(&file).unwrap(), tx), rx)
    }

    #[test]
    fn an_edited_redacted_view_keeps_the_stored_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let (control, rx) = control(dir.path());
        let shown = control.current().redacted_toml();
        let edited = shown.replace("id = \"yard\"", "id = \"yard\"\ndetect_fps = 2");
        control.apply(&edited).unwrap();
        let saved = std::fs::read_to_string(dir.path().join("vigil.toml")).unwrap();
        assert!(
            saved.contains("rtsp://admin:hunter22@10.0.0.5/s"),
            "{saved}"
        );
        assert!(saved.contains("password = \"s3cret\""), "{saved}");
        assert!(saved.contains("detect_fps = 2"), "{saved}");
        match rx.try_recv() {
            Ok(Request::Reload(c)) => assert_eq!(*c.cameras[1].detect_fps.get_ref(), 2.0),
            _ => panic!("a reload was requested"),
        }
    }

    #[test]
    fn a_bad_config_is_refused_and_the_file_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (control, rx) = control(dir.path());
        let e = control.apply("[storage]\npath = 5\n").unwrap_err();
        assert!(matches!(e, ConfigUpdateError::Invalid(_)), "{e}");
        assert!(e.to_string().contains("vigil.toml:2"), "{e}");
        // Hidden credentials cannot be moved to another host.
        let moved = control
            .current()
            .redacted_toml()
            .replace("10.0.0.5", "10.9.9.9");
        assert!(control.apply(&moved).is_err());
        // Nor can a hidden password.
        let moved = control
            .current()
            .redacted_toml()
            .replace("10.0.0.6", "10.9.9.9");
        let e = control.apply(&moved).unwrap_err();
        assert!(e.to_string().contains("\"yard\": password"), "{e}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("vigil.toml")).unwrap(),
            BASE
        );
        assert!(rx.try_recv().is_err(), "no reload");
    }

    #[test]
    fn the_hidden_mqtt_password_stays_with_its_broker() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("vigil.toml");
        let text = format!(
            "{BASE}\n[mqtt]\nurl = \"mqtt://broker.lan\"\nusername = \"u\"\npassword = \"pw-1\"\n"
        );
        std::fs::write(&file, &text).unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        let control = ConfigControl::new(Config::load(&file).unwrap(), tx);
        let shown = control.current().redacted_toml();
        assert!(!shown.contains("pw-1"), "{shown}");
        let e = control
            .apply(&shown.replace("broker.lan", "evil.example"))
            .unwrap_err();
        assert!(e.to_string().contains("mqtt: password"), "{e}");
        assert!(rx.try_recv().is_err(), "no reload");
        control.apply(&format!("{shown}max_backlog = 5\n")).unwrap();
        let saved = std::fs::read_to_string(&file).unwrap();
        assert!(saved.contains("password = \"pw-1\""), "{saved}");
    }

    #[test]
    fn without_a_file_nothing_can_change() {
        let (tx, _rx) = crossbeam_channel::unbounded();
        let control = ConfigControl::new(Config::parse(BASE, Path::new("<demo>")).unwrap(), tx);
        assert!(matches!(
            control.apply(BASE),
            Err(ConfigUpdateError::NoFile)
        ));
    }

    #[test]
    fn a_hidden_header_stays_with_its_camera_and_host() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("vigil.toml");
        let text = format!(
            "{BASE}\n[[cameras]]\nid = \"door\"\nurl = \"http://10.0.0.7/video.mjpg\"\n\
             input_options = {{ headers = \"Authorization: Bearer tok-9\\r\\n\", \
             user_agent = \"vigil\" }}\n"
        );
        std::fs::write(&file, &text).unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        let control = ConfigControl::new(Config::load(&file).unwrap(), tx);
        let shown = control.current().redacted_toml();
        assert!(!shown.contains("tok-9"), "{shown}");
        assert!(shown.contains("user_agent = \"vigil\""), "{shown}");
        let e = control
            .apply(&shown.replace("10.0.0.7", "evil.example"))
            .unwrap_err();
        assert!(e.to_string().contains("input option headers"), "{e}");
        assert!(rx.try_recv().is_err(), "no reload");
        control
            .apply(&shown.replace("user_agent = \"vigil\"", "user_agent = \"v2\""))
            .unwrap();
        let saved = std::fs::read_to_string(&file).unwrap();
        assert!(saved.contains("Bearer tok-9"), "{saved}");
        assert!(saved.contains("user_agent = \"v2\""), "{saved}");
    }
}
