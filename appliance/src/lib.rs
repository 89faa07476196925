//! The parts of the `vigil` binary other crates drive directly: the
//! configuration file's parser (the fuzz targets, and anything that checks a
//! configuration without running the appliance), and how a camera frame
//! reaches the detector (the GPU tests).

pub mod config;
pub mod frame_view;
