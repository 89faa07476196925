//! A TF.js graph model: `model.json` text, a NUL byte, then the bytes every
//! shard the manifest names is read as. Either the graph loads or loading
//! fails with an error.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use vigil_inference::tfjs::TfjsGraph;

fuzz_target!(|data: &[u8]| {
    let (json, shard) = vigil_fuzz::split_at_nul(data);
    let Ok(text) = std::str::from_utf8(json) else {
        return;
    };
    let _ = TfjsGraph::parse(text, Path::new("model.json"), |_| Ok(shard.to_vec()));
});
