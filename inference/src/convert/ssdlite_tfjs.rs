//! Imports the TF.js export of `ssdlite_mobilenet_v2_coco` (the graph that
//! `@tensorflow-models/coco-ssd` and its Node-RED wrapper ship) into the
//! tensor names of [`crate::models::ssdlite`], folding every batch norm into
//! its convolution.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use crate::models::ssdlite::{BLOCK_STRIDES, EXTRA_LAYERS, HEADS};
use crate::tfjs::TfjsGraph;
use crate::InferenceError;

const FE: &str = "FeatureExtractor/MobilenetV2";

/// Builds the safetensors map for [`crate::models::ssdlite::SsdLite`].
pub fn import(graph: &TfjsGraph) -> Result<HashMap<String, Tensor>, InferenceError> {
    let mut out = HashMap::new();
    let mut put = |name: String, (weight, bias): (Tensor, Tensor)| {
        out.insert(format!("{name}.weight"), weight);
        out.insert(format!("{name}.bias"), bias);
    };

    put("backbone.stem".into(), conv(graph, &format!("{FE}/Conv"))?);
    for i in 0..BLOCK_STRIDES.len() {
        let tf = if i == 0 {
            format!("{FE}/expanded_conv")
        } else {
            format!("{FE}/expanded_conv_{i}")
        };
        let ours = format!("backbone.block{i}");
        if i > 0 {
            put(
                format!("{ours}.expand"),
                conv(graph, &format!("{tf}/expand"))?,
            );
        }
        put(
            format!("{ours}.depthwise"),
            depthwise_folded(graph, &format!("{tf}/depthwise"))?,
        );
        put(
            format!("{ours}.project"),
            conv(graph, &format!("{tf}/project"))?,
        );
    }
    put(
        "backbone.last".into(),
        conv(graph, &format!("{FE}/Conv_1"))?,
    );

    for k in 0..EXTRA_LAYERS {
        // TF names carry channel counts (layer_19_1_Conv2d_2_1x1_256): find by prefix.
        let n = k + 2;
        let reduce = unique_prefix(
            graph,
            &format!("{FE}/layer_19_1_Conv2d_{n}_1x1_"),
            "/Conv2D/merged_input",
        )?;
        let expand = unique_prefix(
            graph,
            &format!("{FE}/layer_19_2_Conv2d_{n}_3x3_s2_"),
            "/Conv2D/merged_input",
        )?;
        put(format!("extra{k}.reduce"), conv(graph, &reduce)?);
        put(
            format!("extra{k}.depthwise"),
            depthwise_folded(graph, &format!("{expand}_depthwise"))?,
        );
        put(format!("extra{k}.expand"), conv(graph, &expand)?);
    }

    for k in 0..HEADS {
        for (ours, tf) in [("box", "BoxEncodingPredictor"), ("class", "ClassPredictor")] {
            let p = format!("BoxPredictor_{k}/{tf}");
            put(
                format!("head{k}.{ours}.depthwise"),
                depthwise_batchnorm(graph, &format!("{p}_depthwise"))?,
            );
            put(
                format!("head{k}.{ours}.pointwise"),
                predictor_conv(graph, &p)?,
            );
        }
    }

    let anchors = graph.weight("Postprocessor/ExpandDims")?;
    let count = anchors.elem_count() / 4;
    out.insert("anchors".into(), anchors.reshape((count, 4))?);
    let yx = 1.0 / graph.scalar("ConstantFolding/Postprocessor/Decode/div_recip")?;
    let hw = 1.0 / graph.scalar("ConstantFolding/Postprocessor/Decode/div_2_recip")?;
    out.insert(
        "box_coder.scales".into(),
        Tensor::new(&[yx, yx, hw, hw], &Device::Cpu)?,
    );
    let size = graph
        .weight("Preprocessor/map/while/ResizeImage/stack")?
        .to_vec1::<i64>()?;
    let Some(&side) = size.first() else {
        return Err(graph.format_error("the preprocessor's resize names no size".into()));
    };
    let scale = graph.scalar("Preprocessor/mul/x")?;
    let offset = -graph.scalar("Preprocessor/sub/y")?;
    out.insert(
        "input.size_scale_offset".into(),
        Tensor::new(&[side as f32, scale, offset], &Device::Cpu)?,
    );
    Ok(out)
}

/// The one weight whose name starts with `prefix` and ends with `suffix`;
/// returns its name without `suffix`.
fn unique_prefix(graph: &TfjsGraph, prefix: &str, suffix: &str) -> Result<String, InferenceError> {
    let found: Vec<&String> = graph
        .weights
        .keys()
        .filter(|n| n.starts_with(prefix) && n.ends_with(suffix))
        .collect();
    match found.as_slice() {
        [one] => Ok(one[..one.len() - suffix.len()].to_string()),
        _ => Err(graph.format_error(format!(
            "expected one weight named {prefix}*{suffix}, found {}",
            found.len()
        ))),
    }
}

/// TF `[KH, KW, I, O]` to candle `[O, I, KH, KW]`.
fn tf_conv_kernel(w: &Tensor) -> candle_core::Result<Tensor> {
    w.permute((3, 2, 0, 1))?.contiguous()
}

/// TF depthwise `[KH, KW, C, 1]` to candle `[C, 1, KH, KW]`.
fn tf_depthwise_kernel(w: &Tensor) -> candle_core::Result<Tensor> {
    w.permute((2, 3, 0, 1))?.contiguous()
}

/// A convolution whose batch norm TensorFlow already folded: weights in
/// `Conv2D/merged_input`, bias in `BatchNorm/batchnorm/sub`.
fn conv(graph: &TfjsGraph, scope: &str) -> Result<(Tensor, Tensor), InferenceError> {
    let w = graph.weight(&format!("{scope}/Conv2D/merged_input"))?;
    let b = graph.weight(&format!("{scope}/BatchNorm/batchnorm/sub"))?;
    Ok((tf_conv_kernel(w)?, b.clone()))
}

/// A depthwise convolution followed by `x * mul + sub` (a batch norm that
/// TensorFlow reduced to a scale and shift): the scale goes into the kernel.
fn depthwise_folded(graph: &TfjsGraph, scope: &str) -> Result<(Tensor, Tensor), InferenceError> {
    let w = tf_depthwise_kernel(graph.weight(&format!("{scope}/depthwise_weights"))?)?;
    let mul = graph.weight(&format!("{scope}/BatchNorm/batchnorm/mul"))?;
    let sub = graph.weight(&format!("{scope}/BatchNorm/batchnorm/sub"))?;
    let c = mul.dim(0)?;
    Ok((w.broadcast_mul(&mul.reshape((c, 1, 1, 1))?)?, sub.clone()))
}

/// A depthwise convolution followed by an unfolded `FusedBatchNorm`:
/// `scale = gamma / sqrt(var + eps)`, `bias = beta - mean * scale`.
fn depthwise_batchnorm(graph: &TfjsGraph, scope: &str) -> Result<(Tensor, Tensor), InferenceError> {
    let w = tf_depthwise_kernel(graph.weight(&format!("{scope}/depthwise_weights"))?)?;
    let bn = format!("{scope}/BatchNorm");
    let gamma = graph.weight(&format!("{bn}/gamma"))?;
    let beta = graph.weight(&format!("{bn}/beta"))?;
    let mean = graph.weight(&format!("{bn}/moving_mean"))?;
    let var = graph.weight(&format!("{bn}/moving_variance"))?;
    let eps = graph
        .node(&format!("{bn}/FusedBatchNorm"))?
        .attr_f32("epsilon")
        .unwrap_or(1e-3);
    let scale = gamma.div(&(var + eps as f64)?.sqrt()?)?;
    let bias = (beta - mean.mul(&scale)?)?;
    let c = scale.dim(0)?;
    Ok((w.broadcast_mul(&scale.reshape((c, 1, 1, 1))?)?, bias))
}

/// A predictor's 1x1 convolution with plain `weights` and `biases`.
fn predictor_conv(graph: &TfjsGraph, scope: &str) -> Result<(Tensor, Tensor), InferenceError> {
    let w = graph.weight(&format!("{scope}/weights"))?;
    let b = graph.weight(&format!("{scope}/biases"))?;
    Ok((tf_conv_kernel(w)?.to_dtype(DType::F32)?, b.clone()))
}
