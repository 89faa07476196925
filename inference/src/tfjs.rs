//! Reader for TensorFlow.js graph models: `model.json` plus binary weight shards.
//!
//! The format: `modelTopology.node` lists the TensorFlow graph (name, op,
//! inputs, attributes) and `weightsManifest` lists groups of weights, each
//! group stored as the concatenation of its shard files, weights packed back
//! to back in manifest order.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::Deserialize;

use crate::InferenceError;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ModelJson {
    model_topology: Topology,
    weights_manifest: Vec<WeightGroup>,
}

#[derive(Debug, Deserialize)]
struct Topology {
    #[serde(default)]
    node: Vec<Node>,
}

/// One node of the TensorFlow graph.
#[derive(Debug, Clone, Deserialize)]
pub struct Node {
    pub name: String,
    pub op: String,
    #[serde(default)]
    pub input: Vec<String>,
    #[serde(default)]
    pub attr: HashMap<String, serde_json::Value>,
}

impl Node {
    /// A float attribute (`{"f": 0.001}`), such as a batch norm's epsilon.
    pub fn attr_f32(&self, key: &str) -> Option<f32> {
        self.attr.get(key)?.get("f")?.as_f64().map(|f| f as f32)
    }
}

#[derive(Debug, Deserialize)]
struct WeightGroup {
    paths: Vec<String>,
    weights: Vec<WeightSpec>,
}

#[derive(Debug, Deserialize)]
struct WeightSpec {
    name: String,
    shape: Vec<usize>,
    dtype: String,
    #[serde(default)]
    quantization: Option<Quantization>,
}

/// Affine quantisation of stored weights: `value = min + scale * q`.
#[derive(Debug, Deserialize)]
struct Quantization {
    dtype: String,
    #[serde(default)]
    scale: f32,
    #[serde(default)]
    min: f32,
}

/// A TF.js graph model loaded into memory: its graph and its weights as f32
/// tensors (int32 constants become i64 tensors).
pub struct TfjsGraph {
    pub nodes: HashMap<String, Node>,
    pub weights: HashMap<String, Tensor>,
    source: PathBuf,
}

impl TfjsGraph {
    /// Reads `model.json` and the shards it names from the same directory.
    pub fn load(model_json: &Path) -> Result<Self, InferenceError> {
        let text = std::fs::read_to_string(model_json).map_err(|e| InferenceError::Io {
            path: model_json.to_path_buf(),
            source: e,
        })?;
        let dir = model_json.parent().unwrap_or(Path::new("."));
        Self::parse(&text, model_json, |shard| {
            let path = dir.join(shard);
            std::fs::read(&path).map_err(|e| InferenceError::Io { path, source: e })
        })
    }

    /// Parses `model.json` text; `read_shard` supplies the bytes of each
    /// shard file the manifest names. `source` names the model in errors.
    pub fn parse(
        text: &str,
        source: &Path,
        mut read_shard: impl FnMut(&str) -> Result<Vec<u8>, InferenceError>,
    ) -> Result<Self, InferenceError> {
        let err = |reason: String| InferenceError::ModelFormat {
            path: source.to_path_buf(),
            reason,
        };
        let model: ModelJson =
            serde_json::from_str(text).map_err(|e| err(format!("not a TF.js graph model: {e}")))?;
        let mut weights = HashMap::new();
        for group in &model.weights_manifest {
            let mut bytes = Vec::new();
            for shard in &group.paths {
                // Shards sit beside model.json: a path elsewhere is refused.
                if shard.is_empty() || shard.contains(['/', '\\']) || shard == ".." {
                    return Err(err(format!("shard {shard:?} is not a plain file name")));
                }
                bytes.extend_from_slice(&read_shard(shard)?);
            }
            let mut offset = 0;
            for spec in &group.weights {
                let (tensor, used) = decode_weight(spec, &bytes[offset.min(bytes.len())..])
                    .map_err(|reason| err(format!("weight {}: {reason}", spec.name)))?;
                offset += used;
                weights.insert(spec.name.clone(), tensor);
            }
            if offset != bytes.len() {
                return Err(err(format!(
                    "shards hold {} bytes but the manifest describes {offset}",
                    bytes.len()
                )));
            }
        }
        let nodes = model
            .model_topology
            .node
            .into_iter()
            .map(|n| (n.name.clone(), n))
            .collect();
        Ok(Self {
            nodes,
            weights,
            source: source.to_path_buf(),
        })
    }

    /// An error about this model file.
    pub fn format_error(&self, reason: String) -> InferenceError {
        InferenceError::ModelFormat {
            path: self.source.clone(),
            reason,
        }
    }

    /// The weight called `name`, or an error naming the missing tensor.
    pub fn weight(&self, name: &str) -> Result<&Tensor, InferenceError> {
        self.weights
            .get(name)
            .ok_or_else(|| self.format_error(format!("missing weight {name}")))
    }

    /// The node called `name`, or an error naming it.
    pub fn node(&self, name: &str) -> Result<&Node, InferenceError> {
        self.nodes
            .get(name)
            .ok_or_else(|| self.format_error(format!("missing graph node {name}")))
    }

    /// A scalar f32 weight, such as a folded constant.
    pub fn scalar(&self, name: &str) -> Result<f32, InferenceError> {
        let values = self.weight(name)?.flatten_all()?.to_vec1::<f32>()?;
        values
            .first()
            .copied()
            .ok_or_else(|| self.format_error(format!("weight {name} is empty")))
    }
}

/// Decodes one weight from the front of `bytes`; returns it and the bytes used.
fn decode_weight(spec: &WeightSpec, bytes: &[u8]) -> Result<(Tensor, usize), String> {
    // A hostile manifest can name a shape whose size overflows.
    let count = spec
        .shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("shape {:?} is too large", spec.shape))?;
    let shape = spec.shape.clone();
    let dev = &Device::Cpu;
    let take = |width: usize| -> Result<&[u8], String> {
        let needed = count.saturating_mul(width);
        bytes
            .get(..needed)
            .ok_or_else(|| format!("needs {needed} bytes, {} left", bytes.len()))
    };
    if let Some(q) = &spec.quantization {
        let (values, used): (Vec<f32>, usize) = match q.dtype.as_str() {
            "uint8" => (
                take(1)?
                    .iter()
                    .map(|&v| q.min + q.scale * v as f32)
                    .collect(),
                count,
            ),
            "uint16" => (
                take(2)?
                    .chunks_exact(2)
                    .map(|b| q.min + q.scale * u16::from_le_bytes([b[0], b[1]]) as f32)
                    .collect(),
                count * 2,
            ),
            other => return Err(format!("unsupported quantisation {other}")),
        };
        let t = Tensor::from_vec(values, shape, dev).map_err(|e| e.to_string())?;
        return Ok((t, used));
    }
    let words = take(4)?.chunks_exact(4).map(|b| [b[0], b[1], b[2], b[3]]);
    let tensor = match spec.dtype.as_str() {
        "float32" => Tensor::from_vec(
            words.map(f32::from_le_bytes).collect::<Vec<_>>(),
            shape,
            dev,
        ),
        "int32" => Tensor::from_vec(
            words
                .map(|w| i32::from_le_bytes(w) as i64)
                .collect::<Vec<_>>(),
            shape,
            dev,
        ),
        other => return Err(format!("unsupported dtype {other}")),
    }
    .map_err(|e| e.to_string())?;
    Ok((tensor, count * 4))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(manifest: &str, shard: &[u8]) -> Result<TfjsGraph, InferenceError> {
        let text =
            format!(r#"{{"modelTopology": {{"node": []}}, "weightsManifest": [{manifest}]}}"#);
        TfjsGraph::parse(&text, Path::new("model.json"), |_| Ok(shard.to_vec()))
    }

    #[test]
    fn weights_decode_from_the_shards_in_manifest_order() {
        let mut shard: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        shard.extend([0u8, 2]);
        let graph = parse(
            r#"{"paths": ["group1-shard1of1"], "weights": [
                {"name": "w", "shape": [2], "dtype": "float32"},
                {"name": "q", "shape": [2], "dtype": "float32",
                 "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1.0}}]}"#,
            &shard,
        )
        .unwrap();
        let values = |n: &str| graph.weight(n).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(values("w"), vec![1.5, -2.0]);
        assert_eq!(values("q"), vec![-1.0, 0.0]);
    }

    #[test]
    fn hostile_manifests_are_errors() {
        let cases = [
            // A shard outside the model's folder.
            r#"{"paths": ["../../etc/passwd"], "weights": []}"#,
            // A shape whose size overflows.
            r#"{"paths": ["s"], "weights": [{"name": "w", "shape": [4294967296, 4294967296, 16], "dtype": "float32"}]}"#,
            // More values than the shards hold.
            r#"{"paths": ["s"], "weights": [{"name": "w", "shape": [1000], "dtype": "float32"}]}"#,
        ];
        for manifest in cases {
            assert!(parse(manifest, &[0; 16]).is_err(), "accepted {manifest}");
        }
    }
}
