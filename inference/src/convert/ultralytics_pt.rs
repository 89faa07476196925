//! Ultralytics checkpoints (`best.pt`, `yolov8n.pt`, ...) to Vigil's
//! safetensors, without Python.
//!
//! A checkpoint is a zip holding a pickled dict whose `model` (or `ema`)
//! entry is the whole `DetectionModel` object. We walk that object's
//! `_modules` tree the way `state_dict()` would, read each parameter and
//! buffer from the zip, and keep the class names and training input size.

use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::path::Path;

use candle_core::pickle::{Object, Stack, TensorInfo};
use candle_core::{DType, Device, Tensor};

use crate::models::Weights;
use crate::registry::INPUT_SIZE_TENSOR;
use crate::ultralytics::Family;
use crate::InferenceError;

/// What a checkpoint holds that Vigil needs.
pub struct Checkpoint {
    /// State-dict names to f32 tensors, plus [`INPUT_SIZE_TENSOR`].
    pub tensors: HashMap<String, Tensor>,
    /// Class names, by class index.
    pub labels: Vec<String>,
    pub family: Family,
}

fn format_error(path: &Path, reason: impl ToString) -> InferenceError {
    InferenceError::ModelFormat {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The value under string key `key` of a pickled dict.
fn dict_get<'a>(entries: &'a [(Object, Object)], key: &str) -> Option<&'a Object> {
    entries
        .iter()
        .find(|(k, _)| matches!(k, Object::Unicode(s) if s == key))
        .map(|(_, v)| v)
}

/// The `__dict__` of a pickled object (`BUILD` state), if it has one.
fn object_state(obj: &Object) -> Option<&[(Object, Object)]> {
    match obj {
        Object::Build { args, .. } => match args.as_ref() {
            Object::Dict(entries) => Some(entries),
            _ => None,
        },
        _ => None,
    }
}

/// Every parameter and buffer under `module`, named as `state_dict()` names them.
fn collect_tensors(module: &Object, prefix: &str, dir: &Path, out: &mut Vec<TensorInfo>) {
    let Some(state) = object_state(module) else {
        return;
    };
    let join = |name: &str| {
        if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}.{name}")
        }
    };
    for group in ["_parameters", "_buffers"] {
        if let Some(Object::Dict(items)) = dict_get(state, group) {
            for (name, value) in items {
                let Object::Unicode(name) = name else {
                    continue;
                };
                // `None` parameters (a conv without bias) are not tensors.
                if let Ok(Some(info)) = value
                    .clone()
                    .into_tensor_info(Object::Unicode(join(name)), dir)
                {
                    out.push(info);
                }
            }
        }
    }
    if let Some(Object::Dict(children)) = dict_get(state, "_modules") {
        for (name, child) in children {
            if let Object::Unicode(name) = name {
                collect_tensors(child, &join(name), dir, out);
            }
        }
    }
}

/// Class names from the model's `names` dict `{0: "person", ...}`.
fn labels(state: &[(Object, Object)]) -> Vec<String> {
    let Some(Object::Dict(entries)) = dict_get(state, "names") else {
        return Vec::new();
    };
    let mut named: Vec<(i64, String)> = entries
        .iter()
        .filter_map(|(k, v)| match (k, v) {
            (Object::Int(i), Object::Unicode(s)) => Some((*i as i64, s.clone())),
            (Object::Long(i), Object::Unicode(s)) => Some((*i, s.clone())),
            _ => None,
        })
        .collect();
    named.sort();
    named.into_iter().map(|(_, s)| s).collect()
}

/// The training `imgsz` (an int, or `[h, w]`), 640 when the file has none.
fn input_size(top: &[(Object, Object)]) -> (usize, usize) {
    let as_usize = |o: &Object| match o {
        Object::Int(i) if *i > 0 => Some(*i as usize),
        Object::Long(i) if *i > 0 => Some(*i as usize),
        _ => None,
    };
    let imgsz = match dict_get(top, "train_args") {
        Some(Object::Dict(args)) => dict_get(args, "imgsz"),
        _ => None,
    };
    match imgsz {
        Some(Object::List(v)) | Some(Object::Tuple(v)) if v.len() == 2 => {
            match (as_usize(&v[0]), as_usize(&v[1])) {
                (Some(h), Some(w)) => (w, h),
                _ => (640, 640),
            }
        }
        Some(o) => as_usize(o).map(|s| (s, s)).unwrap_or((640, 640)),
        None => (640, 640),
    }
}

/// Reads one tensor's bytes from the checkpoint zip as f32.
fn read_tensor<R: Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    info: &TensorInfo,
    path: &Path,
) -> Result<Tensor, InferenceError> {
    if !info.layout.is_contiguous() {
        return Err(format_error(path, format!("{}: strided tensor", info.name)));
    }
    let mut reader = zip
        .by_name(&info.path)
        .map_err(|e| format_error(path, format!("{}: {e}", info.name)))?;
    let skip = info.layout.start_offset() as u64;
    std::io::copy(&mut reader.by_ref().take(skip), &mut std::io::sink())
        .map_err(|e| format_error(path, e))?;
    let shape = info.layout.shape().clone();
    // Checked against what the archive holds before anything is allocated:
    // a hostile shape must be an error, not an abort for want of memory.
    let wanted = shape
        .dims()
        .iter()
        .try_fold(info.dtype.size_in_bytes(), |n, &d| n.checked_mul(d))
        .filter(|&n| n as u64 <= reader.size().saturating_sub(skip))
        .ok_or_else(|| {
            format_error(
                path,
                format!("{}: shape {shape:?} is larger than its data", info.name),
            )
        })?;
    let mut bytes = vec![0u8; wanted];
    reader
        .read_exact(&mut bytes)
        .map_err(|e| format_error(path, format!("{}: {e}", info.name)))?;
    let tensor = Tensor::from_raw_buffer(&bytes, info.dtype, shape.dims(), &Device::Cpu)?;
    Ok(tensor.to_dtype(DType::F32)?)
}

/// Reads an Ultralytics YOLOv8 / YOLO11 detection checkpoint.
pub fn import(path: &Path) -> Result<Checkpoint, InferenceError> {
    let file = std::fs::File::open(path).map_err(|source| InferenceError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| format_error(path, format!("not a PyTorch checkpoint (zip): {e}")))?;
    let pickle_name = zip
        .file_names()
        .filter_map(Result::ok)
        .find(|n| n.ends_with("data.pkl"))
        .map(|n| n.into_owned())
        .ok_or_else(|| format_error(path, "no data.pkl: not a PyTorch checkpoint"))?;
    let dir = Path::new(pickle_name.trim_end_matches(".pkl")).to_path_buf();
    let top = {
        let mut reader = BufReader::new(
            zip.by_name(&pickle_name)
                .map_err(|e| format_error(path, e))?,
        );
        let mut stack = Stack::empty();
        stack
            .read_loop(&mut reader)
            .map_err(|e| format_error(path, format!("unreadable pickle: {e}")))?;
        stack.finalize().map_err(|e| format_error(path, e))?
    };
    let Object::Dict(top) = top else {
        return Err(format_error(
            path,
            "not an Ultralytics checkpoint (no top-level dict)",
        ));
    };
    let model = ["model", "ema"]
        .iter()
        .filter_map(|k| dict_get(&top, k))
        .find(|m| object_state(m).is_some())
        .ok_or_else(|| format_error(path, "no `model` or `ema` entry holding a model"))?;

    let mut infos = Vec::new();
    collect_tensors(model, "", &dir, &mut infos);
    let mut tensors = HashMap::new();
    for info in &infos {
        if !info.dtype.is_float() || info.name.contains(".dfl.") {
            continue; // step counters; DFL's fixed bin weights
        }
        tensors.insert(info.name.clone(), read_tensor(&mut zip, info, path)?);
    }
    let probe = Weights::from_map(tensors, path.to_path_buf());
    let family = Family::detect(&probe).ok_or_else(|| {
        format_error(
            path,
            format!(
                "not a YOLOv8 or YOLO11 detection model ({} tensors found)",
                infos.len()
            ),
        )
    })?;
    let mut tensors = probe.into_map();
    let (w, h) = input_size(&top);
    tensors.insert(
        INPUT_SIZE_TENSOR.to_string(),
        Tensor::new(&[w as f32, h as f32], &Device::Cpu)?,
    );
    Ok(Checkpoint {
        tensors,
        labels: object_state(model).map(labels).unwrap_or_default(),
        family,
    })
}
