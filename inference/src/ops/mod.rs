//! Tensor operations candle lacks or runs slowly for detection models.

pub mod depthwise;

pub use depthwise::{depthwise_conv2d, Padding};
