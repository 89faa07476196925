//! Tensor operations candle lacks or runs slowly for detection models.

pub mod bias_activation;
pub mod conv;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;
pub mod depthwise;
pub mod int8;
pub mod maxpool;
pub mod winograd;
pub mod winograd_int8;

pub use bias_activation::bias_activation;
pub use conv::{conv2d, conv2d_max_pooled};
pub use depthwise::{depthwise_conv2d, Padding};
pub use maxpool::{max_pool, MaxPool};

/// What follows a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    None,
    /// `min(max(x, 0), 6)`, MobileNet's activation.
    Relu6,
    Relu,
    /// `x` above zero, `0.1 x` below: darknet's `leaky`.
    Leaky,
    /// `x * sigmoid(x)`: YOLOv5/v8/11's activation (darknet's `swish`).
    Silu,
    /// darknet's `logistic`.
    Sigmoid,
    /// `x * tanh(softplus(x))`: YOLOv4's activation.
    Mish,
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + fast_exp(-v))
}

/// `e^x` to about 2e-7 relative error, branch-free so loops over it
/// vectorise (libm's `exp` does not, and SiLU follows every YOLOv8/11
/// convolution): round `x / ln 2` to `n`, a degree-6 polynomial for the
/// remainder, `2^n` built in the exponent bits.
#[inline(always)]
fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n * LN2_HI is exact.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding then subtracting 1.5 * 2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    p * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

/// Whether one of our kernels runs `x`'s device and type: f32 on the CPU;
/// f32, f16 and bf16 on CUDA (`cuda/ops.cu`), for the ops that have one there.
pub(crate) fn has_kernel(x: &candle_core::Tensor) -> bool {
    use candle_core::{DType, Device};
    match x.device() {
        Device::Cpu => x.dtype() == DType::F32,
        Device::Cuda(_) => {
            cfg!(feature = "cuda") && matches!(x.dtype(), DType::F32 | DType::F16 | DType::BF16)
        }
        Device::Metal(_) => false,
    }
}

/// A size or offset as the `uint32_t` the CUDA kernels (`cuda/ops.cu`) take.
pub(crate) fn kernel_u32(op: &str, value: usize) -> candle_core::Result<u32> {
    u32::try_from(value).map_err(|_| {
        candle_core::Error::Msg(format!("{op}: {value} is too large for the GPU kernel"))
    })
}

/// Whether the CPU runs the ops' loops compiled for AVX2 and FMA.
pub(crate) fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `fn $name(args) -> R` that runs `$body(args)` compiled for AVX2 and
/// FMA where the CPU has them. `$body` must be `#[inline(always)]` (so it
/// is compiled into the twin), as must what it calls to gain too.
macro_rules! avx2_dispatch {
    ($vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty = $body:path) => {
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) -> $ret {
            $crate::ops::avx2_dispatch!(unsafe fn dispatch($($arg: $ty),*) -> $ret = $body);
            // SAFETY: `$body` is a safe function.
            unsafe { dispatch($($arg),*) }
        }
    };
    // An unsafe `$body`: the caller of `$name` keeps its contract.
    ($vis:vis unsafe fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty = $body:path) => {
        /// # Safety
        /// That of the function it dispatches to.
        #[allow(clippy::too_many_arguments)]
        $vis unsafe fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            if $crate::ops::has_avx2_fma() {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn twin($($arg: $ty),*) -> $ret {
                    $body($($arg),*)
                }
                // SAFETY: the CPU has the features `twin` is compiled
                // for; the rest is the caller's contract.
                return twin($($arg),*);
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use avx2_dispatch;

/// Applies `act` to every value; a separate function so it can be compiled
/// twice, for the baseline and for AVX2+FMA. The activation is picked once,
/// each arm its own loop, so that no loop branches per value.
#[inline(always)]
fn apply_all(act: Activation, values: &mut [f32]) {
    macro_rules! each {
        ($act:expr) => {
            for v in values {
                *v = $act.apply_one(*v);
            }
        };
    }
    match act {
        Activation::None => {}
        Activation::Relu6 => each!(Activation::Relu6),
        Activation::Relu => each!(Activation::Relu),
        Activation::Leaky => each!(Activation::Leaky),
        Activation::Silu => each!(Activation::Silu),
        Activation::Sigmoid => each!(Activation::Sigmoid),
        Activation::Mish => each!(Activation::Mish),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn apply_all_avx2(act: Activation, values: &mut [f32]) {
    apply_all(act, values)
}

impl Activation {
    /// The activation's number in `cuda/ops.cu`.
    #[cfg(feature = "cuda")]
    pub(crate) fn cuda_code(self) -> i32 {
        match self {
            Activation::None => 0,
            Activation::Relu6 => 1,
            Activation::Relu => 2,
            Activation::Leaky => 3,
            Activation::Silu => 4,
            Activation::Sigmoid => 5,
            Activation::Mish => 6,
        }
    }

    #[inline(always)]
    fn apply_one(self, v: f32) -> f32 {
        match self {
            Activation::None => v,
            Activation::Relu6 => v.clamp(0.0, 6.0),
            Activation::Relu => v.max(0.0),
            // A factor picked by the sign, so every value is stored: as
            // "0.1 x when x <= 0", in-place loops became masked stores,
            // which are slow on AMD.
            Activation::Leaky => v * if v > 0.0 { 1.0 } else { 0.1 },
            Activation::Silu => v * sigmoid(v),
            Activation::Sigmoid => sigmoid(v),
            Activation::Mish => v * fast_exp(v).ln_1p().tanh(),
        }
    }

    /// Applies the activation in place.
    pub(crate) fn apply_slice(self, values: &mut [f32]) {
        if self == Activation::None {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if has_avx2_fma() {
            // SAFETY: the CPU has the features the function was compiled for.
            return unsafe { apply_all_avx2(self, values) };
        }
        apply_all(self, values)
    }

    /// Applies the activation in place, compiled into the caller: for
    /// kernels already built for AVX2 (`avx2_dispatch!` bodies) that apply
    /// it to a few values at a time, where a call per slice cost more
    /// than the activation.
    #[inline(always)]
    pub(crate) fn apply_inline(self, values: &mut [f32]) {
        apply_all(self, values)
    }

    /// Applies the activation with candle's own ops (devices without our kernels).
    pub(crate) fn apply_tensor(
        self,
        x: candle_core::Tensor,
    ) -> candle_core::Result<candle_core::Tensor> {
        match self {
            Activation::None => Ok(x),
            Activation::Relu6 => x.clamp(0f32, 6f32),
            Activation::Relu => x.relu(),
            Activation::Leaky => x.maximum(&(&x * 0.1)?),
            Activation::Silu => x.silu(),
            Activation::Sigmoid => sigmoid_tensor(&x),
            Activation::Mish => &x * x.exp()?.affine(1.0, 1.0)?.log()?.tanh()?,
        }
    }
}

/// `1 / (1 + exp(-x))` with candle's element-wise ops.
pub(crate) fn sigmoid_tensor(x: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
    (x.neg()?.exp()? + 1.0)?.recip()
}

/// Output size of a convolution or pool along one axis, `pad` being the
/// padding on both sides together; the kernel must fit (`input + pad >= kernel`).
pub(crate) fn out_size(input: usize, pad: usize, kernel: usize, stride: usize) -> usize {
    (input + pad - kernel) / stride + 1
}

/// The output columns `first..end` (of `out_width`) whose tap at kernel
/// offset `kx` reads inside a row of `width`: `ox * stride + kx - padding`
/// in `0..width`. Outside them the tap reads padding.
pub(crate) fn inside_columns(
    kx: usize,
    stride: usize,
    padding: usize,
    width: usize,
    out_width: usize,
) -> (usize, usize) {
    let first = padding.saturating_sub(kx).div_ceil(stride);
    let end = (width + padding)
        .saturating_sub(kx)
        .div_ceil(stride)
        .min(out_width);
    (first, end)
}

/// A buffer whose disjoint parts are written by different threads.
struct SharedMut<T = f32>(*mut T);
// SAFETY: every user gives each thread its own part to write (see each use).
unsafe impl<T> Send for SharedMut<T> {}
unsafe impl<T> Sync for SharedMut<T> {}

impl<T> Clone for SharedMut<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// # Safety
    /// `offset` must lie inside the buffer.
    unsafe fn at(self, offset: usize) -> *mut T {
        self.0.add(offset)
    }

    /// `len` elements from `offset`, to be written (they may not be
    /// initialised yet).
    ///
    /// # Safety
    /// They must lie inside the buffer, and no other thread may touch them
    /// while the slice lives.
    #[allow(clippy::mut_from_ref)] // the part is the caller's alone (see above)
    unsafe fn part<'a>(self, offset: usize, len: usize) -> &'a mut [std::mem::MaybeUninit<T>] {
        std::slice::from_raw_parts_mut(self.at(offset).cast(), len)
    }
}

/// Writes `value` into every slot of `dst`, which is then initialised.
fn fill_uninit(dst: &mut [std::mem::MaybeUninit<f32>], value: f32) -> &mut [f32] {
    for d in dst.iter_mut() {
        d.write(value);
    }
    // SAFETY: every value was written just above.
    unsafe { &mut *(dst as *mut [std::mem::MaybeUninit<f32>] as *mut [f32]) }
}

/// A new buffer of `len` values written by `fill`, which gets its start:
/// an op's output is written once in full, and zeroing it first cost as
/// much as some layers' arithmetic.
///
/// # Safety
/// `fill` must write every one of the `len` values.
unsafe fn filled<T>(len: usize, fill: impl FnOnce(SharedMut<T>)) -> Vec<T> {
    let mut buffer = Vec::<T>::with_capacity(len);
    fill(SharedMut(buffer.as_mut_ptr()));
    // SAFETY: `fill` wrote all `len` values (the caller's contract).
    unsafe { buffer.set_len(len) };
    buffer
}

/// Runs a convolution's op on `x`; one that also max-pools 2x2
/// (`pooled`) needs even sides, so that every pool window is whole.
fn run_conv_op(
    x: &candle_core::Tensor,
    op: &impl candle_core::CustomOp1,
    pooled: bool,
) -> candle_core::Result<candle_core::Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if pooled && (!h.is_multiple_of(2) || !w.is_multiple_of(2)) {
        candle_core::bail!(
            "{}: a fused 2x2 pool needs even sides, not {h}x{w}",
            op.name()
        )
    }
    x.contiguous()?.apply_op1_no_bwd(op)
}

/// `(N, C, H, W)`.
type Nchw = (usize, usize, usize, usize);

/// The f32 contents and `(N, C, H, W)` of a convolution's input, or an
/// error naming the op if it is not contiguous f32 with `channels` channels.
fn conv_input<'a>(
    op: &str,
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
    channels: usize,
) -> candle_core::Result<(&'a [f32], Nchw)> {
    let x = contiguous_f32(op, storage, layout)?;
    let dims = layout.shape().dims4()?;
    if dims.1 != channels {
        candle_core::bail!("{op}: {} input channels, expected {channels}", dims.1)
    }
    Ok((x, dims))
}

/// The f32 contents of a contiguous CPU tensor argument, or an error naming the op.
fn contiguous_f32<'a>(
    op: &str,
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
) -> candle_core::Result<&'a [f32]> {
    let candle_core::CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: only f32 on the CPU")
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: inputs must be contiguous")
    };
    Ok(&data[start..end])
}

/// candle's own convolution, plus bias and activation: what the ops' tests
/// compare with.
#[cfg(test)]
pub(crate) fn reference_conv(
    x: &candle_core::Tensor,
    weight: &candle_core::Tensor,
    bias: &candle_core::Tensor,
    stride: usize,
    padding: usize,
    act: Activation,
) -> candle_core::Result<candle_core::Tensor> {
    let o = bias.dims1()?;
    let y = x.conv2d(weight, padding, stride, 1, 1)?;
    act.apply_tensor(y.broadcast_add(&bias.reshape((1, o, 1, 1))?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_is_close_to_libm_everywhere_it_matters() {
        let mut worst = 0f32;
        let mut x = -80.0f32;
        while x < 80.0 {
            let rel = ((fast_exp(x) - x.exp()) / x.exp()).abs();
            worst = worst.max(rel);
            x += 0.0137;
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        assert!((0.0..1e-37).contains(&fast_exp(-200.0)));
        assert!(fast_exp(200.0).is_finite());
    }

    #[test]
    fn activations_match_their_definitions() {
        let mut values: Vec<f32> = (-40..=40).map(|i| i as f32 * 0.25).collect();
        let reference: Vec<f32> = values.iter().map(|v| v / (1.0 + (-v).exp())).collect();
        Activation::Silu.apply_slice(&mut values);
        for (a, b) in values.iter().zip(&reference) {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{a} vs {b}");
        }
    }
}
