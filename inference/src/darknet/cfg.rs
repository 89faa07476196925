//! Darknet `.cfg` files: `[section]` headers followed by `key=value` lines.
//!
//! Only the layer types detection networks of the YOLOv2–v4 era use are
//! understood; anything else is an error naming its line, so a model we
//! cannot run is refused at load instead of producing wrong boxes.

use std::collections::HashMap;

use crate::ops::Activation;

/// Limits far above any real network, so that a broken or hostile file is
/// refused at load instead of failing at run time.
const MAX_KERNEL: usize = 15;
const MAX_STRIDE: usize = 16;
const MAX_CHANNELS: usize = 16_384;
const MAX_CLASSES: usize = 100_000;
const MAX_INPUT: usize = 8_192;

/// One layer of the network, in file order.
#[derive(Debug, Clone, PartialEq)]
pub enum Layer {
    Convolutional {
        filters: usize,
        size: usize,
        stride: usize,
        /// Zero padding on each side.
        padding: usize,
        batch_normalize: bool,
        activation: Activation,
    },
    /// Max over `size` x `size` windows; padding `size - 1` split as darknet
    /// does (so `size=2 stride=1` keeps the spatial size).
    Maxpool {
        size: usize,
        stride: usize,
    },
    /// Channel concatenation of earlier layers (absolute indices), or one
    /// channel group of a single layer (`groups`, `group_id`).
    Route {
        layers: Vec<usize>,
        groups: usize,
        group_id: usize,
    },
    Upsample {
        stride: usize,
    },
    /// Element-wise sum with an earlier layer (absolute index).
    Shortcut {
        from: usize,
        activation: Activation,
    },
    /// A detection head: the anchors (in input pixels) this scale predicts.
    Yolo {
        anchors: Vec<(f32, f32)>,
        classes: usize,
        scale_x_y: f32,
    },
}

/// A parsed `.cfg`: input geometry and layers.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfig {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub layers: Vec<Layer>,
}

/// What is wrong with a `.cfg`, and on which line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct CfgError {
    pub line: usize,
    pub reason: String,
}

/// One `[name]` block and its options, with the line of its header.
struct Section {
    name: String,
    line: usize,
    options: HashMap<String, (String, usize)>,
}

impl Section {
    fn error(&self, reason: impl Into<String>) -> CfgError {
        CfgError {
            line: self.line,
            reason: format!("[{}]: {}", self.name, reason.into()),
        }
    }

    fn raw(&self, key: &str) -> Option<(&str, usize)> {
        self.options.get(key).map(|(v, l)| (v.as_str(), *l))
    }

    /// Refuses options that change what the layer computes and that we do
    /// not implement, unless they hold their default value: ignored, they
    /// would give wrong boxes and no error. Training-only options (jitter,
    /// ignore_thresh, ...) are not listed and stay ignored.
    fn refuse_unless_default(&self, options: &[(&str, &str)]) -> Result<(), CfgError> {
        for (key, default) in options {
            if let Some((value, line)) = self.raw(key) {
                if value.trim() != *default {
                    return Err(CfgError {
                        line,
                        reason: format!("[{}]: {key}={value} is not supported", self.name),
                    });
                }
            }
        }
        Ok(())
    }

    fn parse<T: std::str::FromStr>(&self, key: &str, default: Option<T>) -> Result<T, CfgError> {
        match self.raw(key) {
            Some((v, line)) => v.parse().map_err(|_| CfgError {
                line,
                reason: format!("{key}={v} is not a valid value"),
            }),
            None => default.ok_or_else(|| self.error(format!("missing {key}="))),
        }
    }

    /// A whole number in `1..=max` (a zero or absurd size would otherwise
    /// surface as a division by zero or an allocation failure at run time).
    fn count(&self, key: &str, default: Option<usize>, max: usize) -> Result<usize, CfgError> {
        let value: usize = self.parse(key, default)?;
        if value == 0 || value > max {
            let line = self.raw(key).map_or(self.line, |(_, l)| l);
            return Err(CfgError {
                line,
                reason: format!("{key}={value} is out of range (1..={max})"),
            });
        }
        Ok(value)
    }

    fn list<T: std::str::FromStr>(&self, key: &str) -> Result<Vec<T>, CfgError> {
        let Some((v, line)) = self.raw(key) else {
            return Err(self.error(format!("missing {key}=")));
        };
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse().map_err(|_| CfgError {
                    line,
                    reason: format!("{key}: {s:?} is not a valid value"),
                })
            })
            .collect()
    }

    fn activation(&self) -> Result<Activation, CfgError> {
        let (name, line) = self.raw("activation").unwrap_or(("linear", self.line));
        Ok(match name {
            "linear" => Activation::None,
            "leaky" => Activation::Leaky,
            "relu" => Activation::Relu,
            "mish" => Activation::Mish,
            "logistic" => Activation::Sigmoid,
            "swish" => Activation::Silu,
            other => {
                return Err(CfgError {
                    line,
                    reason: format!("activation {other:?} is not supported"),
                })
            }
        })
    }
}

fn sections(text: &str) -> Result<Vec<Section>, CfgError> {
    let mut out: Vec<Section> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.split(['#', ';']).next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        if let Some(name) = content.strip_prefix('[') {
            let name = name.strip_suffix(']').ok_or_else(|| CfgError {
                line,
                reason: format!("unclosed section header {content:?}"),
            })?;
            out.push(Section {
                name: name.trim().to_string(),
                line,
                options: HashMap::new(),
            });
            continue;
        }
        let (key, value) = content.split_once('=').ok_or_else(|| CfgError {
            line,
            reason: format!("expected key=value, found {content:?}"),
        })?;
        let section = out.last_mut().ok_or_else(|| CfgError {
            line,
            reason: "option before the first [section]".into(),
        })?;
        section
            .options
            .insert(key.trim().to_string(), (value.trim().to_string(), line));
    }
    Ok(out)
}

/// Turns a relative (negative) or absolute layer reference into an index
/// below `current`.
fn resolve(section: &Section, reference: i64, current: usize) -> Result<usize, CfgError> {
    let index = if reference < 0 {
        current as i64 + reference
    } else {
        reference
    };
    if index < 0 || index >= current as i64 {
        return Err(section.error(format!(
            "layer reference {reference} does not name an earlier layer"
        )));
    }
    Ok(index as usize)
}

fn layer(section: &Section, index: usize) -> Result<Layer, CfgError> {
    Ok(match section.name.as_str() {
        "convolutional" | "conv" => {
            section.refuse_unless_default(&[
                ("dilation", "1"),
                ("antialiasing", "0"),
                ("binary", "0"),
                ("xnor", "0"),
                ("deform", "0"),
                ("share_index", ""),
            ])?;
            let stride = section.parse::<usize>("stride", Some(1))?.to_string();
            section.refuse_unless_default(&[("stride_x", &stride), ("stride_y", &stride)])?;
            let size = section.count("size", Some(1), MAX_KERNEL)?;
            let pad: usize = section.parse("pad", Some(0))?;
            let padding = match section.raw("padding") {
                Some(_) => section.parse("padding", None)?,
                None if pad != 0 => size / 2,
                None => 0,
            };
            if padding > size {
                return Err(section.error(format!("padding={padding} is wider than size={size}")));
            }
            if section.parse::<usize>("groups", Some(1))? != 1 {
                return Err(section.error("grouped convolutions are not supported"));
            }
            Layer::Convolutional {
                filters: section.count("filters", None, MAX_CHANNELS)?,
                size,
                stride: section.count("stride", Some(1), MAX_STRIDE)?,
                padding,
                batch_normalize: section.parse::<u8>("batch_normalize", Some(0))? != 0,
                activation: section.activation()?,
            }
        }
        "maxpool" | "max" => {
            let stride = section.count("stride", Some(1), MAX_STRIDE)?;
            let text = stride.to_string();
            section.refuse_unless_default(&[
                ("stride_x", &text),
                ("stride_y", &text),
                ("maxpool_depth", "0"),
                ("antialiasing", "0"),
            ])?;
            Layer::Maxpool {
                size: section.count("size", Some(stride), MAX_KERNEL)?,
                stride,
            }
        }
        "route" => {
            let refs: Vec<i64> = section.list("layers")?;
            if refs.is_empty() {
                return Err(section.error("layers= names no layer"));
            }
            let groups = section.count("groups", Some(1), MAX_STRIDE)?;
            if section.parse::<usize>("group_id", Some(0))? >= groups {
                return Err(section.error(format!("group_id must be below groups={groups}")));
            }
            Layer::Route {
                layers: refs
                    .into_iter()
                    .map(|r| resolve(section, r, index))
                    .collect::<Result<_, _>>()?,
                groups: section.count("groups", Some(1), MAX_STRIDE)?,
                group_id: section.parse("group_id", Some(0))?,
            }
        }
        "upsample" => {
            section.refuse_unless_default(&[("scale", "1")])?;
            Layer::Upsample {
                stride: section.count("stride", Some(2), MAX_STRIDE)?,
            }
        }
        "shortcut" => {
            section.refuse_unless_default(&[("weights_type", "none")])?;
            Layer::Shortcut {
                from: resolve(section, section.parse("from", None)?, index)?,
                activation: section.activation()?,
            }
        }
        "yolo" => {
            section.refuse_unless_default(&[("new_coords", "0")])?;
            let all: Vec<f32> = section.list("anchors")?;
            if !all.len().is_multiple_of(2) {
                return Err(section.error("anchors must come in width,height pairs"));
            }
            if all.iter().any(|a| !a.is_finite() || *a <= 0.0) {
                return Err(section.error("anchors must be positive sizes"));
            }
            let pairs: Vec<(f32, f32)> = all.chunks_exact(2).map(|p| (p[0], p[1])).collect();
            let mask: Vec<usize> = match section.raw("mask") {
                Some(_) => section.list("mask")?,
                None => (0..pairs.len()).collect(),
            };
            let anchors = mask
                .iter()
                .map(|&m| {
                    pairs
                        .get(m)
                        .copied()
                        .ok_or_else(|| section.error(format!("mask {m} has no anchor")))
                })
                .collect::<Result<_, _>>()?;
            Layer::Yolo {
                anchors,
                classes: section.count("classes", None, MAX_CLASSES)?,
                scale_x_y: section.parse("scale_x_y", Some(1.0))?,
            }
        }
        other => return Err(section.error(format!("layer type [{other}] is not supported"))),
    })
}

/// Parses a darknet `.cfg` and checks every layer it needs is understood.
pub fn parse(text: &str) -> Result<NetworkConfig, CfgError> {
    let all = sections(text)?;
    let (net, rest) = all.split_first().ok_or(CfgError {
        line: 1,
        reason: "empty file: expected [net] first".into(),
    })?;
    if net.name != "net" && net.name != "network" {
        return Err(net.error("the first section must be [net]"));
    }
    // Darknet letterboxes such networks' input; we stretch (as OpenCV does).
    net.refuse_unless_default(&[("letter_box", "0")])?;
    if net.parse::<usize>("channels", Some(3))? != 3 {
        return Err(net.error("only 3-channel (RGB) networks are supported"));
    }
    let config = NetworkConfig {
        width: net.count("width", None, MAX_INPUT)?,
        height: net.count("height", None, MAX_INPUT)?,
        channels: 3,
        layers: rest
            .iter()
            .enumerate()
            .map(|(i, s)| layer(s, i))
            .collect::<Result<_, _>>()?,
    };
    if config.width == 0
        || config.height == 0
        || !config.width.is_multiple_of(32)
        || !config.height.is_multiple_of(32)
    {
        return Err(net.error("width and height must be positive multiples of 32"));
    }
    if !config
        .layers
        .iter()
        .any(|l| matches!(l, Layer::Yolo { .. }))
    {
        return Err(net.error("no [yolo] layer: not a detection network"));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: &str = "[net]\nwidth=64\nheight=64\n\n[convolutional]\nbatch_normalize=1\n\
        filters=8 # comment\nsize=3\nstride=1\npad=1\nactivation=leaky\n\n[maxpool]\nsize=2\n\
        stride=1\n\n[convolutional]\nsize=1\nfilters=18\nactivation=linear\n\n[yolo]\n\
        mask=0,1,2\nanchors=10,14, 23,27, 37,58, 81,82\nclasses=1\n\n[route]\nlayers=-3\n\n\
        [upsample]\nstride=2\n";

    #[test]
    fn parses_layers_with_defaults_and_relative_routes() {
        let net = parse(TINY).unwrap();
        assert_eq!((net.width, net.height, net.channels), (64, 64, 3));
        assert_eq!(
            net.layers[0],
            Layer::Convolutional {
                filters: 8,
                size: 3,
                stride: 1,
                padding: 1,
                batch_normalize: true,
                activation: Activation::Leaky
            }
        );
        assert_eq!(net.layers[1], Layer::Maxpool { size: 2, stride: 1 });
        match &net.layers[3] {
            Layer::Yolo {
                anchors, classes, ..
            } => {
                assert_eq!(anchors, &vec![(10.0, 14.0), (23.0, 27.0), (37.0, 58.0)]);
                assert_eq!(*classes, 1);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            net.layers[4],
            Layer::Route {
                layers: vec![1],
                groups: 1,
                group_id: 0
            }
        );
    }

    #[test]
    fn errors_name_the_line() {
        let bad = TINY.replace("activation=leaky", "activation=gelu");
        let err = parse(&bad).unwrap_err();
        assert_eq!(err.line, 11, "{err}");
        assert!(err.to_string().contains("gelu"));

        let err = parse(&TINY.replace("layers=-3", "layers=-9")).unwrap_err();
        assert!(err.to_string().contains("-9"), "{err}");

        let err = parse(&TINY.replace("[upsample]", "[crnn]")).unwrap_err();
        assert!(err.to_string().contains("[crnn]"), "{err}");

        for (from, to) in [
            ("size=3", "size=0"),
            ("stride=1\npad=1", "stride=0\npad=1"),
            ("filters=8", "filters=99999999999"),
            ("classes=1", "classes=0"),
            ("[upsample]\nstride=2", "[upsample]\nstride=0"),
            ("width=64", "width=1048576"),
            ("layers=-3", "layers=-3\ngroups=2\ngroup_id=2"),
            ("anchors=10,14", "anchors=-10,14"),
            // Options that change what a layer computes, which we lack.
            ("classes=1", "classes=1\nnew_coords=1"),
            ("size=3", "size=3\ndilation=2"),
            ("width=64", "width=64\nletter_box=1"),
            ("[upsample]\nstride=2", "[upsample]\nstride=2\nscale=0.5"),
        ] {
            let bad = TINY.replacen(from, to, 1);
            assert_ne!(bad, TINY, "{from}");
            let err = parse(&bad).expect_err(to);
            assert!(err.line > 0, "{err}");
        }
        assert!(parse(&TINY.replace("height=64", "height=64\nchannels=1")).is_err());

        assert!(parse("").is_err());
        assert!(parse("width=3\n").is_err());
        assert!(
            parse("[net]\nwidth=64\nheight=64\n").is_err(),
            "no yolo layer"
        );
    }
}
