//! The configuration file: any text either parses into a configuration the
//! appliance can run with, or is refused with an error — and an accepted
//! file, with its credentials redacted for the UI, is still accepted.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use vigil::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::parse(text, Path::new("fuzz.toml")) else {
        return;
    };
    // What the appliance derives from an accepted file must not fail late.
    for camera in &config.cameras {
        camera
            .source_url()
            .expect("a validated camera has a source");
        let _ = camera.scene(&config.detector);
        let _ = camera.tracker_config();
    }
    let _ = config.storage.retention();
    if let Some(mqtt) = &config.mqtt {
        mqtt.address().expect("a validated broker has an address");
    }
    let redacted = config.redacted_toml();
    if let Err(e) = Config::parse(&redacted, Path::new("redacted.toml")) {
        panic!("redaction broke an accepted file: {e}\n--- file\n{text}\n--- redacted\n{redacted}");
    }
});
