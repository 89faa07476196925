//! Launching the ops' CUDA kernels (`cuda/ops.cu`, compiled to PTX by
//! `build.rs`) on candle's stream, so that they run in order with candle's
//! own kernels and need no synchronisation of their own.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaSlice, CudaView, DeviceRepr, LaunchArgs, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{CudaDevice, CudaStorage, DType, Layout, Result};

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/ops.ptx"));
/// The name candle caches the loaded module under.
const MODULE: &str = "vigil-ops";

/// A kernel of `ops.cu` whose tensor arguments all have one float type:
/// `kernel_<type>(inputs..., out, scalars...)`, one thread per output value.
pub(crate) trait FloatKernel {
    /// The kernel's name without its type suffix.
    const NAME: &'static str;
    /// Values written, and threads started (the kernels loop over a grid
    /// stride, so fewer would do too).
    fn outputs(&self) -> usize;
    /// Pushes the scalar arguments that follow the output, from `self` so
    /// that they live as long as the launch's arguments.
    fn push_scalars<'a>(&'a self, args: &mut LaunchArgs<'a>);
}

/// Runs `kernel` on `inputs` (each contiguous, all f32, f16 or bf16 alike)
/// into a fresh output of that type.
pub(crate) fn run<K: FloatKernel>(
    kernel: &K,
    inputs: &[(&CudaStorage, &Layout)],
) -> Result<CudaStorage> {
    let device = inputs[0].0.device.clone();
    Ok(match inputs[0].0.dtype() {
        DType::F32 => wrap(run_typed::<f32, K>(kernel, "f32", inputs)?, device),
        DType::F16 => wrap(run_typed::<half::f16, K>(kernel, "f16", inputs)?, device),
        DType::BF16 => wrap(run_typed::<half::bf16, K>(kernel, "bf16", inputs)?, device),
        other => candle_core::bail!("{}: no CUDA kernel for {other:?}", K::NAME),
    })
}

fn wrap<T: CudaDType>(slice: CudaSlice<T>, device: CudaDevice) -> CudaStorage {
    CudaStorage::wrap_cuda_slice(slice, device)
}

fn run_typed<T: CudaDType + DeviceRepr, K: FloatKernel>(
    kernel: &K,
    suffix: &str,
    inputs: &[(&CudaStorage, &Layout)],
) -> Result<CudaSlice<T>> {
    let device = &inputs[0].0.device;
    let views = inputs
        .iter()
        .map(|(storage, layout)| contiguous(K::NAME, storage.as_cuda_slice::<T>()?, layout))
        .collect::<Result<Vec<_>>>()?;
    let func = function(device, &format!("{}_{suffix}", K::NAME))?;
    // SAFETY: the kernel writes every one of the `outputs()` values.
    let mut out = unsafe { device.alloc::<T>(kernel.outputs())? };
    let stream = device.cuda_stream();
    let mut args = stream.launch_builder(&func);
    for view in &views {
        args.arg(view);
    }
    args.arg(&mut out);
    kernel.push_scalars(&mut args);
    // SAFETY: the arguments match the kernel's parameters, as `FloatKernel` asks.
    unsafe { args.launch(grid(kernel.outputs())) }.w()?;
    Ok(out)
}

/// The `ops.cu` kernel `name`, loaded on first use.
pub(crate) fn function(device: &CudaDevice, name: &str) -> Result<CudaFunction> {
    Ok(device
        .get_or_load_custom_func(name, MODULE, PTX)?
        .into_cuda_function())
}

/// A launch of one thread per value, 256 to a block.
pub(crate) fn grid(values: usize) -> LaunchConfig {
    const THREADS: u32 = 256;
    // The kernels loop over the grid, so a capped grid still covers all values.
    let blocks = values.div_ceil(THREADS as usize).clamp(1, 1 << 20) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn contiguous<'a, T>(
    op: &str,
    slice: &'a CudaSlice<T>,
    layout: &Layout,
) -> Result<CudaView<'a, T>> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: inputs must be contiguous")
    };
    Ok(slice.slice(start..end))
}
