//! Per-channel bias plus activation in one pass over the data.
//!
//! After a matrix product the bias add and the clamp would each read and
//! write the whole activation map; fused, the map is read once and the
//! result written once, into a buffer not zeroed first.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{contiguous_f32, Activation};

struct BiasActivation(Activation);

impl CustomOp2 for BiasActivation {
    fn name(&self) -> &'static str {
        "bias-activation"
    }

    fn cpu_fwd(
        &self,
        input: &CpuStorage,
        input_layout: &Layout,
        bias: &CpuStorage,
        bias_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(self.name(), input, input_layout)?;
        let b = contiguous_f32(self.name(), bias, bias_layout)?;
        let dims = input_layout.shape().dims();
        let channels = dims[1];
        if b.len() != channels {
            candle_core::bail!(
                "bias-activation: {} biases for {channels} channels",
                b.len()
            )
        }
        let plane = dims[2..].iter().product::<usize>().max(1);
        // SAFETY: each chunk of the output is written in full, by one task.
        let out = unsafe {
            super::filled(x.len(), |out| {
                x.par_chunks(plane).enumerate().for_each(|(i, src)| {
                    let bias = b[i % channels];
                    // SAFETY: chunk i of the output, this task's alone.
                    let dst = out.part(i * plane, src.len());
                    for (d, v) in dst.iter_mut().zip(src) {
                        d.write(v + bias);
                    }
                    // SAFETY: every value of `dst` was written just above.
                    let dst = &mut *(dst as *mut [MaybeUninit<f32>] as *mut [f32]);
                    self.0.apply_slice(dst);
                });
            })
        };
        Ok((CpuStorage::F32(out), input_layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        input: &candle_core::CudaStorage,
        input_layout: &Layout,
        bias: &candle_core::CudaStorage,
        bias_layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let shape = input_layout.shape();
        let dims = shape.dims();
        let channels = dims[1];
        if bias_layout.shape().elem_count() != channels {
            candle_core::bail!("bias-activation: biases do not fit {channels} channels")
        }
        let launch = cuda::BiasActivation {
            total: shape.elem_count(),
            channels: super::kernel_u32(self.name(), channels)?,
            plane: dims[2..].iter().product(),
            act: self.0.cuda_code(),
        };
        let out = super::cuda::run(&launch, &[(input, input_layout), (bias, bias_layout)])?;
        Ok((out, shape.clone()))
    }
}

/// The launch of `bias_activation_<type>` in `cuda/ops.cu`.
#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::cuda_backend::cudarc::driver::{LaunchArgs, PushKernelArg};

    pub(super) struct BiasActivation {
        pub total: usize,
        pub channels: u32,
        pub plane: usize,
        pub act: i32,
    }

    impl super::super::cuda::FloatKernel for BiasActivation {
        const NAME: &'static str = "bias_activation";

        fn outputs(&self) -> usize {
            self.total
        }

        fn push_scalars<'a>(&'a self, args: &mut LaunchArgs<'a>) {
            args.arg(&self.total)
                .arg(&self.channels)
                .arg(&self.plane)
                .arg(&self.act);
        }
    }
}

/// `act(x + bias)` for `x` `[N, C, ...]` and `bias` `[C]`.
pub fn bias_activation(x: &Tensor, bias: &Tensor, act: Activation) -> candle_core::Result<Tensor> {
    if super::has_kernel(x) {
        return x
            .contiguous()?
            .apply_op2_no_bwd(&bias.contiguous()?, &BiasActivation(act));
    }
    let mut shape = vec![1; x.rank()];
    shape[1] = bias.dim(0)?;
    act.apply_tensor(x.broadcast_add(&bias.reshape(shape)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_broadcast_add_then_clamp() -> candle_core::Result<()> {
        let x = Tensor::randn(0f32, 4., (2, 3, 4, 5), &Device::Cpu)?;
        let b = Tensor::new(&[-1f32, 0.5, 3.0], &Device::Cpu)?;
        let ours = bias_activation(&x, &b, Activation::Relu6)?;
        let reference = x
            .broadcast_add(&b.reshape((1, 3, 1, 1))?)?
            .clamp(0f32, 6f32)?;
        let diff = (ours - reference)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6);
        Ok(())
    }
}
