//! Ultralytics YOLOv8 and YOLO11 detectors, from the tensors of an
//! Ultralytics state dict (`model.0.conv.weight`, ...). The family is told
//! by which tensors exist; every size of a family shares one layer graph.

pub mod blocks;

use candle_core::{Module, Tensor};

use crate::models::Weights;
use crate::ops::Activation;
use crate::{InferenceError, Precision};
use blocks::{C2Psa, C2f, ConvBn, Detect, Sppf};

/// A model family of the Ultralytics detection line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    YoloV8,
    Yolo11,
}

/// One node of the layer graph, as the family's yaml lists it.
#[derive(Debug, Clone, Copy)]
enum Node {
    /// A 3x3 stride-2 `Conv`.
    Down,
    /// `C2f` or `C3k2`; whether its bottlenecks add their input.
    Csp {
        shortcut: bool,
    },
    Sppf,
    C2Psa,
    Upsample,
    /// Concatenate the previous output with this layer's.
    ConcatWith(usize),
    /// The head on these layers' outputs.
    Detect([usize; 3]),
}

use Node::*;

const YOLOV8: &[Node] = &[
    Down,
    Down,
    Csp { shortcut: true },
    Down,
    Csp { shortcut: true },
    Down,
    Csp { shortcut: true },
    Down,
    Csp { shortcut: true },
    Sppf,
    Upsample,
    ConcatWith(6),
    Csp { shortcut: false },
    Upsample,
    ConcatWith(4),
    Csp { shortcut: false },
    Down,
    ConcatWith(12),
    Csp { shortcut: false },
    Down,
    ConcatWith(9),
    Csp { shortcut: false },
    Detect([15, 18, 21]),
];

const YOLO11: &[Node] = &[
    Down,
    Down,
    Csp { shortcut: true },
    Down,
    Csp { shortcut: true },
    Down,
    Csp { shortcut: true },
    Down,
    Csp { shortcut: true },
    Sppf,
    C2Psa,
    Upsample,
    ConcatWith(6),
    Csp { shortcut: true },
    Upsample,
    ConcatWith(4),
    Csp { shortcut: true },
    Down,
    ConcatWith(13),
    Csp { shortcut: true },
    Down,
    ConcatWith(10),
    Csp { shortcut: true },
    Detect([16, 19, 22]),
];

impl Family {
    /// Recognises the family from the tensor names.
    pub fn detect(w: &Weights) -> Option<Self> {
        if w.has("model.10.m.0.attn.qkv.conv.weight") && w.has("model.23.cv2.0.0.conv.weight") {
            Some(Self::Yolo11)
        } else if w.has("model.22.cv2.0.0.conv.weight") && w.has("model.9.cv1.conv.weight") {
            Some(Self::YoloV8)
        } else {
            None
        }
    }

    fn graph(self) -> &'static [Node] {
        match self {
            Self::YoloV8 => YOLOV8,
            Self::Yolo11 => YOLO11,
        }
    }
}

enum Layer {
    Module(Box<dyn Module + Send + Sync>),
    Upsample,
    ConcatWith(usize),
    Detect(Detect, [usize; 3]),
}

/// A YOLOv8 / YOLO11 network of any size.
pub struct UltralyticsNet {
    layers: Vec<Layer>,
    pub family: Family,
    pub classes: usize,
}

impl UltralyticsNet {
    /// Builds the network the tensors describe; weights are folded in f32
    /// and kept in `precision`.
    pub fn load(w: &Weights, precision: Precision) -> Result<Self, InferenceError> {
        let family = Family::detect(w)
            .ok_or_else(|| w.format_error("not a YOLOv8 or YOLO11 detection state dict".into()))?;
        let mut classes = 0;
        let layers = family
            .graph()
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let p = format!("model.{i}");
                Ok(match *node {
                    Down => Layer::Module(Box::new(ConvBn::load(
                        w,
                        &p,
                        2,
                        Activation::Silu,
                        precision,
                    )?)),
                    Csp { shortcut } => {
                        Layer::Module(Box::new(C2f::load(w, &p, shortcut, precision)?))
                    }
                    Node::Sppf => Layer::Module(Box::new(Sppf::load(w, &p, precision)?)),
                    Node::C2Psa => Layer::Module(Box::new(C2Psa::load(w, &p, precision)?)),
                    Upsample => Layer::Upsample,
                    ConcatWith(j) => Layer::ConcatWith(j),
                    Node::Detect(from) => {
                        let head = Detect::load(w, &p, precision)?;
                        if head.levels() != 3 {
                            return Err(w.format_error(format!(
                                "{p}: {} detection scales, expected 3",
                                head.levels()
                            )));
                        }
                        classes = head.class_count;
                        Layer::Detect(head, from)
                    }
                })
            })
            .collect::<Result<_, InferenceError>>()?;
        Ok(Self {
            layers,
            family,
            classes,
        })
    }

    /// `[N, 3, H, W]` RGB in 0..1 (H, W multiples of 32) to rows
    /// `[N, anchors, 4 + classes]`.
    pub fn forward(&self, input: &Tensor) -> candle_core::Result<Tensor> {
        let (_, _, input_h, _) = input.dims4()?;
        let mut outputs: Vec<Tensor> = Vec::with_capacity(self.layers.len());
        let mut x = input.clone();
        for layer in &self.layers {
            x = match layer {
                Layer::Module(m) => m.forward(&x)?,
                Layer::Upsample => {
                    let (_, _, h, w) = x.dims4()?;
                    x.upsample_nearest2d(h * 2, w * 2)?
                }
                Layer::ConcatWith(j) => Tensor::cat(&[&x, &outputs[*j]], 1)?,
                Layer::Detect(head, from) => {
                    let features: Vec<Tensor> = from.iter().map(|&j| outputs[j].clone()).collect();
                    return head.forward(&features, input_h);
                }
            };
            outputs.push(x.clone());
        }
        candle_core::bail!("the layer graph has no detection head")
    }
}

impl crate::yolo::YoloNetwork for UltralyticsNet {
    fn forward(&self, input: &Tensor) -> candle_core::Result<Tensor> {
        UltralyticsNet::forward(self, input)
    }
}
