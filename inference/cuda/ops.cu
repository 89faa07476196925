// The detector ops candle lacks on CUDA, in f32, f16 and bf16, each with
// its bias and activation fused: depthwise convolution (candle runs a
// grouped convolution as one convolution per channel: 960 launches for
// MobileNetV2's widest layer), bias + activation after a matrix product,
// and the resize of camera frames into planar model input.
//
// Arithmetic is in f32 whatever the storage type, in the order the CPU ops
// use, with the `_rn` intrinsics so that nvcc does not contract a multiply
// and an add into one FMA: the f32 results then match the CPU's.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

// Must match `ops::Activation::cuda_code`.
#define ACT_NONE 0
#define ACT_RELU6 1
#define ACT_RELU 2
#define ACT_LEAKY 3
#define ACT_SILU 4
#define ACT_SIGMOID 5
#define ACT_MISH 6

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

__device__ __forceinline__ float sigmoid(float v) { return 1.0f / (1.0f + expf(-v)); }

__device__ __forceinline__ float activate(float v, int act) {
  switch (act) {
  case ACT_RELU6:
    return fminf(fmaxf(v, 0.0f), 6.0f);
  case ACT_RELU:
    return fmaxf(v, 0.0f);
  case ACT_LEAKY:
    return v > 0.0f ? v : 0.1f * v;
  case ACT_SILU:
    return v * sigmoid(v);
  case ACT_SIGMOID:
    return sigmoid(v);
  case ACT_MISH: {
    // softplus(v) is v itself to f32 precision above 20 (and expf overflows later).
    float softplus = v > 20.0f ? v : log1pf(expf(v));
    return v * tanhf(softplus);
  }
  default:
    return v;
  }
}

#define GRID_STRIDE_LOOP(i, total)                                                       \
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (total);            \
       i += (size_t)blockDim.x * gridDim.x)

// out[n, c, oy, ox] = act(bias[c] + sum over (ky, kx) of
//   in[n, c, oy * stride + ky - pad_top, ox * stride + kx - pad_left] * k[c, ky, kx]),
// taps outside the plane reading zero; one thread per output value.
template <typename T>
__device__ void depthwise(const T *in, const T *kernel, const T *bias, T *out, size_t planes,
                          uint32_t channels, uint32_t h, uint32_t w, uint32_t kh, uint32_t kw,
                          uint32_t oh, uint32_t ow, uint32_t stride, uint32_t pad_top,
                          uint32_t pad_left, int act) {
  size_t total = planes * oh * ow;
  GRID_STRIDE_LOOP(i, total) {
    uint32_t ox = i % ow;
    uint32_t oy = (i / ow) % oh;
    size_t plane = i / ((size_t)ow * oh);
    uint32_t c = plane % channels;
    const T *src = in + plane * h * w;
    const T *taps = kernel + (size_t)c * kh * kw;
    int y0 = (int)(oy * stride) - (int)pad_top;
    int x0 = (int)(ox * stride) - (int)pad_left;
    float sum = to_f32(bias[c]);
    for (uint32_t ky = 0; ky < kh; ky++) {
      int iy = y0 + (int)ky;
      if (iy < 0 || iy >= (int)h)
        continue;
      for (uint32_t kx = 0; kx < kw; kx++) {
        int ix = x0 + (int)kx;
        if (ix < 0 || ix >= (int)w)
          continue;
        sum = __fadd_rn(sum, __fmul_rn(to_f32(src[iy * w + ix]), to_f32(taps[ky * kw + kx])));
      }
    }
    out[i] = from_f32<T>(activate(sum, act));
  }
}

// out[i] = act(in[i] + bias[channel of i]) for `[N, C, plane]`.
template <typename T>
__device__ void bias_activation(const T *in, const T *bias, T *out, size_t total, uint32_t channels,
                                size_t plane, int act) {
  GRID_STRIDE_LOOP(i, total) {
    uint32_t c = (i / plane) % channels;
    out[i] = from_f32<T>(activate(__fadd_rn(to_f32(in[i]), to_f32(bias[c])), act));
  }
}

// Per image, `GEOMETRY_WORDS` words of `geometry`: the image's width, the
// model input's left and top bands, the size of the resized image inside
// them, where its column and row taps start, and where its RGB bytes start.
#define GEOMETRY_WORDS 8

// Each output pixel of `[N, 3, out_h, out_w]` blends four source pixels as
// the CPU's `preprocess::ResizePlan` does: along the rows by the column
// tap's fraction, then between the rows by the row tap's; rounded to 8 bits
// if `round_to_byte`; then `value * scale + offset`. Pixels in the bands
// around the resized image hold `fill`. A tap is two source indices in
// `tap_index` and the weight of the second in `tap_frac`.
template <typename T>
__device__ void resize_planar(const uint8_t *rgb, const uint32_t *geometry,
                              const uint32_t *tap_index, const float *tap_frac, T *out,
                              uint32_t images, uint32_t out_w, uint32_t out_h, float scale,
                              float offset, float fill, int round_to_byte) {
  size_t plane = (size_t)out_w * out_h;
  GRID_STRIDE_LOOP(i, images * plane) {
    size_t image = i / plane;
    size_t at = i % plane;
    uint32_t x = at % out_w;
    uint32_t y = at / out_w;
    const uint32_t *g = geometry + image * GEOMETRY_WORDS;
    uint32_t width = g[0], left = g[1], top = g[2], inner_w = g[3], inner_h = g[4];
    T *dst = out + image * 3 * plane + at;
    if (x < left || x - left >= inner_w || y < top || y - top >= inner_h) {
      T band = from_f32<T>(fill);
      dst[0] = band;
      dst[plane] = band;
      dst[2 * plane] = band;
      continue;
    }
    uint32_t column = g[5] + (x - left);
    uint32_t row = g[6] + (y - top);
    const uint8_t *image_rgb = rgb + g[7];
    const uint8_t *upper_row = image_rgb + (size_t)tap_index[2 * row] * width * 3;
    const uint8_t *lower_row = image_rgb + (size_t)tap_index[2 * row + 1] * width * 3;
    uint32_t l = tap_index[2 * column] * 3, r = tap_index[2 * column + 1] * 3;
    float fx = tap_frac[column], fy = tap_frac[row];
    for (int c = 0; c < 3; c++) {
      float tl = upper_row[l + c], tr = upper_row[r + c];
      float bl = lower_row[l + c], br = lower_row[r + c];
      float upper = __fadd_rn(tl, __fmul_rn(__fsub_rn(tr, tl), fx));
      float lower = __fadd_rn(bl, __fmul_rn(__fsub_rn(br, bl), fx));
      float v = __fadd_rn(upper, __fmul_rn(__fsub_rn(lower, upper), fy));
      if (round_to_byte)
        v = roundf(v);
      dst[c * plane] = from_f32<T>(__fadd_rn(__fmul_rn(v, scale), offset));
    }
  }
}

#define FOR_EACH_TYPE(M)                                                                 \
  M(float, f32)                                                                          \
  M(__half, f16)                                                                         \
  M(__nv_bfloat16, bf16)

#define DEPTHWISE(T, NAME)                                                               \
  extern "C" __global__ void depthwise_conv2d_##NAME(                                    \
      const T *in, const T *kernel, const T *bias, T *out, size_t planes,                \
      uint32_t channels, uint32_t h, uint32_t w, uint32_t kh, uint32_t kw, uint32_t oh,   \
      uint32_t ow, uint32_t stride, uint32_t pad_top, uint32_t pad_left, int act) {       \
    depthwise<T>(in, kernel, bias, out, planes, channels, h, w, kh, kw, oh, ow, stride,   \
                 pad_top, pad_left, act);                                                \
  }
FOR_EACH_TYPE(DEPTHWISE)

#define BIAS_ACTIVATION(T, NAME)                                                         \
  extern "C" __global__ void bias_activation_##NAME(const T *in, const T *bias, T *out,  \
                                                    size_t total, uint32_t channels,     \
                                                    size_t plane, int act) {             \
    bias_activation<T>(in, bias, out, total, channels, plane, act);                      \
  }
FOR_EACH_TYPE(BIAS_ACTIVATION)

#define RESIZE_PLANAR(T, NAME)                                                           \
  extern "C" __global__ void resize_planar_##NAME(                                       \
      const uint8_t *rgb, const uint32_t *geometry, const uint32_t *tap_index,            \
      const float *tap_frac, T *out, uint32_t images, uint32_t out_w, uint32_t out_h,     \
      float scale, float offset, float fill, int round_to_byte) {                         \
    resize_planar<T>(rgb, geometry, tap_index, tap_frac, out, images, out_w, out_h, scale, \
                     offset, fill, round_to_byte);                                        \
  }
FOR_EACH_TYPE(RESIZE_PLANAR)
