//! A darknet model: `.cfg` text, a NUL byte, then `.weights` bytes. Either
//! the network builds or loading fails with an error; nothing panics and
//! nothing allocates what the weights do not hold.
#![no_main]

use std::path::Path;

use candle_core::Device;
use libfuzzer_sys::fuzz_target;
use vigil_inference::darknet::{cfg, DarknetNet};
use vigil_inference::Precision;

fuzz_target!(|data: &[u8]| {
    let (cfg_bytes, weights) = vigil_fuzz::split_at_nul(data);
    let Ok(text) = std::str::from_utf8(cfg_bytes) else {
        return;
    };
    if cfg::parse(text).is_err() {
        return;
    }
    let _ = DarknetNet::from_bytes(
        text,
        Path::new("fuzz.cfg"),
        weights,
        Path::new("fuzz.weights"),
        &Device::Cpu,
        Precision::F32,
    );
});
