//! Darknet YOLO networks (YOLOv3, v3-tiny, v4-tiny, ...) loaded natively from
//! their `.cfg` and `.weights`, batch norm folded into the convolutions.

pub mod cfg;
mod head;
pub mod weights;

use std::path::Path;

use candle_core::{Device, Module, Tensor};

use crate::models::layers::FusedConv;
use crate::ops::{max_pool, Activation, MaxPool};
use crate::InferenceError;
use crate::Precision;
use cfg::{Layer, NetworkConfig};
use head::YoloHead;
use weights::WeightStream;

/// One layer ready to run.
enum Op {
    Conv(FusedConv),
    Maxpool {
        size: usize,
        stride: usize,
    },
    Route {
        layers: Vec<usize>,
        groups: usize,
        group_id: usize,
    },
    Upsample(usize),
    Shortcut {
        from: usize,
        act: Activation,
    },
    Yolo(YoloHead),
}

/// A darknet detection network.
pub struct DarknetNet {
    ops: Vec<Op>,
    /// For each layer, the last layer that reads its output (to free it early).
    last_use: Vec<usize>,
    pub width: usize,
    pub height: usize,
    pub classes: usize,
}

fn format_error(path: &Path, reason: impl ToString) -> InferenceError {
    InferenceError::ModelFormat {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

impl DarknetNet {
    /// Reads `cfg` and `weights` and builds the network on `device` in `precision`.
    pub fn load(
        cfg_path: &Path,
        weights_path: &Path,
        device: &Device,
        precision: Precision,
    ) -> Result<Self, InferenceError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| InferenceError::Io {
                path: p.to_path_buf(),
                source,
            })
        };
        let text = String::from_utf8(read(cfg_path)?)
            .map_err(|_| format_error(cfg_path, "not UTF-8 text"))?;
        Self::from_bytes(
            &text,
            cfg_path,
            &read(weights_path)?,
            weights_path,
            device,
            precision,
        )
    }

    /// Builds the network from a `.cfg`'s text and a `.weights` file's
    /// bytes; the paths only name them in errors.
    pub fn from_bytes(
        cfg_text: &str,
        cfg_path: &Path,
        weights: &[u8],
        weights_path: &Path,
        device: &Device,
        precision: Precision,
    ) -> Result<Self, InferenceError> {
        let config = cfg::parse(cfg_text).map_err(|e| format_error(cfg_path, e))?;
        let mut stream = WeightStream::new(weights).map_err(|e| format_error(weights_path, e))?;
        let net = Self::build(&config, &mut stream, device, precision).map_err(|e| match e {
            weights::ConvLoadError::YoloChannels { .. } => format_error(cfg_path, e),
            e => format_error(weights_path, e),
        })?;
        stream.finish().map_err(|e| format_error(weights_path, e))?;
        Ok(net)
    }

    fn build(
        config: &NetworkConfig,
        stream: &mut WeightStream,
        device: &Device,
        precision: Precision,
    ) -> Result<Self, weights::ConvLoadError> {
        let dtype = precision.dtype();
        // Channels each layer outputs, to size the convolutions that follow.
        let mut channels: Vec<usize> = Vec::with_capacity(config.layers.len());
        let mut ops = Vec::with_capacity(config.layers.len());
        let mut classes = 0;
        for (index, layer) in config.layers.iter().enumerate() {
            let input = channels.last().copied().unwrap_or(config.channels);
            let (op, out) = match layer {
                Layer::Convolutional {
                    filters,
                    size,
                    stride,
                    padding,
                    batch_normalize,
                    activation,
                } => {
                    let (weight, bias) = stream.convolution(
                        index,
                        *filters,
                        input,
                        *size,
                        *batch_normalize,
                        device,
                    )?;
                    let (weight, bias) = (weight.to_dtype(dtype)?, bias.to_dtype(dtype)?);
                    // The layers that feed a detection head run in int8 too:
                    // on YOLOv3-tiny's photos int8 still finds every f32
                    // detection, its scores within 0.06 (0.05 with f32 heads).
                    let conv = FusedConv::new(
                        weight,
                        bias,
                        *stride,
                        *padding,
                        *activation,
                        precision == Precision::Int8,
                    )?;
                    (Op::Conv(conv), *filters)
                }
                Layer::Maxpool { size, stride } => (
                    Op::Maxpool {
                        size: *size,
                        stride: *stride,
                    },
                    input,
                ),
                Layer::Route {
                    layers,
                    groups,
                    group_id,
                } => {
                    let sum: usize = layers.iter().map(|&l| channels[l]).sum();
                    (
                        Op::Route {
                            layers: layers.clone(),
                            groups: *groups,
                            group_id: *group_id,
                        },
                        sum / groups.max(&1),
                    )
                }
                Layer::Upsample { stride } => (Op::Upsample(*stride), input),
                Layer::Shortcut { from, activation } => (
                    Op::Shortcut {
                        from: *from,
                        act: *activation,
                    },
                    input,
                ),
                Layer::Yolo {
                    anchors,
                    classes: c,
                    scale_x_y,
                } => {
                    classes = *c;
                    let flat: Vec<f32> = anchors.iter().flat_map(|&(w, h)| [w, h]).collect();
                    let count = anchors.len();
                    // Else the head would read its rows shifted: wrong boxes, no error.
                    let needed = count * (5 + *c);
                    if input != needed {
                        return Err(weights::ConvLoadError::YoloChannels {
                            layer: index,
                            found: input,
                            anchors: count,
                            classes: *c,
                            needed,
                        });
                    }
                    (
                        Op::Yolo(YoloHead {
                            anchors: Tensor::from_vec(flat, (1, count, 1, 2), device)?
                                .to_dtype(dtype)?,
                            count,
                            classes: *c,
                            scale_x_y: *scale_x_y,
                        }),
                        input,
                    )
                }
            };
            channels.push(out);
            ops.push(op);
        }
        let mut last_use: Vec<usize> = (0..ops.len()).collect();
        for (index, op) in ops.iter().enumerate() {
            let reads: Vec<usize> = match op {
                Op::Route { layers, .. } => layers.clone(),
                Op::Shortcut { from, .. } => vec![*from],
                _ => Vec::new(),
            };
            for r in reads {
                last_use[r] = last_use[r].max(index);
            }
        }
        Ok(Self {
            ops,
            last_use,
            width: config.width,
            height: config.height,
            classes,
        })
    }

    /// Runs `[N, 3, H, W]` (RGB in 0..1) and returns `[N, boxes, 4 + classes]`:
    /// centre x, centre y, width, height in input pixels, then each class's
    /// score (objectness x class probability).
    pub fn forward(&self, input: &Tensor) -> candle_core::Result<Tensor> {
        let (_, _, in_h, in_w) = input.dims4()?;
        let mut outputs: Vec<Option<Tensor>> = Vec::with_capacity(self.ops.len());
        let mut heads = Vec::new();
        let mut x = input.clone();
        // Whether the last convolution already max-pooled its output for
        // the layer that comes next.
        let mut pooled = false;
        for (index, op) in self.ops.iter().enumerate() {
            x = match op {
                Op::Conv(conv) => {
                    let fused = if self.pools_next(index) {
                        conv.forward_max_pooled(&x)
                    } else {
                        None
                    };
                    pooled = fused.is_some();
                    match fused {
                        Some(y) => y?,
                        None => conv.forward(&x)?,
                    }
                }
                Op::Maxpool { .. } if std::mem::take(&mut pooled) => x,
                Op::Maxpool { size, stride } => maxpool(&x, *size, *stride)?,
                Op::Route {
                    layers,
                    groups,
                    group_id,
                } => {
                    let parts: Vec<Tensor> = layers
                        .iter()
                        .map(|&l| {
                            let t = outputs[l].as_ref().expect("route source kept");
                            let c = t.dim(1)? / groups;
                            t.narrow(1, c * group_id, c)
                        })
                        .collect::<candle_core::Result<_>>()?;
                    Tensor::cat(&parts, 1)?
                }
                Op::Upsample(stride) => {
                    let (_, _, h, w) = x.dims4()?;
                    x.upsample_nearest2d(h * stride, w * stride)?
                }
                Op::Shortcut { from, act } => {
                    let other = outputs[*from].as_ref().expect("shortcut source kept");
                    act.apply_tensor((&x + other)?)?
                }
                Op::Yolo(head) => {
                    heads.push(head.decode(&x, in_w, in_h)?);
                    x
                }
            };
            outputs.push(Some(x.clone()));
            // Drop what no later layer reads.
            for (i, out) in outputs.iter_mut().enumerate() {
                if self.last_use[i] <= index && i != index {
                    *out = None;
                }
            }
        }
        Tensor::cat(&heads, 1)
    }
}

impl DarknetNet {
    /// Whether layer `index` (a convolution) may hand its output to the
    /// next layer already max-pooled: that layer is a 2x2 stride-2 max pool
    /// and no other layer reads the convolution's own output.
    fn pools_next(&self, index: usize) -> bool {
        matches!(
            self.ops.get(index + 1),
            Some(Op::Maxpool { size: 2, stride: 2 })
        ) && self.last_use[index] <= index + 1
    }
}

impl crate::yolo::YoloNetwork for DarknetNet {
    fn forward(&self, input: &Tensor) -> candle_core::Result<Tensor> {
        DarknetNet::forward(self, input)
    }
}

/// Darknet's max pool: padding `size - 1`, `(size - 1) / 2` of it before;
/// out-of-image cells never win.
fn maxpool(x: &Tensor, size: usize, stride: usize) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let pad = size - 1;
    let out = |n: usize| (n + pad - size) / stride + 1;
    max_pool(
        x,
        MaxPool {
            size,
            stride,
            before: pad / 2,
            out_h: out(h),
            out_w: out(w),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    #[test]
    fn maxpool_stride_one_keeps_the_size_and_takes_the_right_neighbour() -> candle_core::Result<()>
    {
        let x = Tensor::new(&[[1f32, 5.0, 2.0], [0.0, 3.0, 9.0]], &Device::Cpu)?
            .reshape((1, 1, 2, 3))?;
        let y = maxpool(&x, 2, 1)?;
        assert_eq!(y.dims(), &[1, 1, 2, 3]);
        let want = [[5f32, 9.0, 9.0], [3.0, 9.0, 9.0]];
        assert_eq!(y.squeeze(0)?.squeeze(0)?.to_vec2::<f32>()?, want);
        let halved = maxpool(
            &Tensor::ones((1, 1, 26, 26), DType::F32, &Device::Cpu)?,
            2,
            2,
        )?;
        assert_eq!(halved.dims(), &[1, 1, 13, 13]);
        Ok(())
    }
}
