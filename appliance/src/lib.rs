//! The parts of the `vigil` binary other crates drive directly: the
//! configuration file's parser (the fuzz targets, and anything that checks a
//! configuration without running the appliance).

pub mod config;
