// The detector ops candle lacks on CUDA, in f32, f16 and bf16, each with
// its bias and activation fused: depthwise convolution (candle runs a
// grouped convolution as one convolution per channel: 960 launches for
// MobileNetV2's widest layer), bias + activation after a matrix product,
// and the resize of camera frames into planar model input, from packed RGB
// or straight from the NV12 frames a hardware decoder left in GPU memory.
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

// The bands around a resized image: `fill` in all three planes.
template <typename T> __device__ __forceinline__ void fill_band(T *dst, size_t plane, float fill) {
  T band = from_f32<T>(fill);
  dst[0] = band;
  dst[plane] = band;
  dst[2 * plane] = band;
}

// The three planes' values at `dst` from four source pixels' RGB levels:
// blended along the rows by `fx`, then between the rows by `fy`; rounded
// to 8 bits if `round_to_byte`; then `value * scale + offset`.
template <typename T>
__device__ __forceinline__ void blend_rgb(T *dst, size_t plane, const float tl[3],
                                          const float tr[3], const float bl[3], const float br[3],
                                          float fx, float fy, float scale, float offset,
                                          int round_to_byte) {
  for (int c = 0; c < 3; c++) {
    float upper = __fadd_rn(tl[c], __fmul_rn(__fsub_rn(tr[c], tl[c]), fx));
    float lower = __fadd_rn(bl[c], __fmul_rn(__fsub_rn(br[c], bl[c]), fx));
    float v = __fadd_rn(upper, __fmul_rn(__fsub_rn(lower, upper), fy));
    if (round_to_byte)
      v = roundf(v);
    dst[c * plane] = from_f32<T>(__fadd_rn(__fmul_rn(v, scale), offset));
  }
}

// Per image, `GEOMETRY_WORDS` words of `geometry`: the image's width, the
// model input's left and top bands, the size of the resized image inside
// them, where its column and row taps start, and where its RGB bytes start.
#define GEOMETRY_WORDS 8

// Each output pixel of `[N, 3, out_h, out_w]` blends four source pixels as
// the CPU's `preprocess::ResizePlan` does (`blend_rgb`, by the column and
// row taps' fractions). Pixels in the bands around the resized image hold
// `fill`. A tap is two source indices in `tap_index` and the weight of the
// second in `tap_frac`.
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
      fill_band(dst, plane, fill);
      continue;
    }
    uint32_t column = g[5] + (x - left);
    uint32_t row = g[6] + (y - top);
    const uint8_t *image_rgb = rgb + g[7];
    const uint8_t *upper_row = image_rgb + (size_t)tap_index[2 * row] * width * 3;
    const uint8_t *lower_row = image_rgb + (size_t)tap_index[2 * row + 1] * width * 3;
    uint32_t l = tap_index[2 * column] * 3, r = tap_index[2 * column + 1] * 3;
    float tl[3], tr[3], bl[3], br[3];
    for (int c = 0; c < 3; c++) {
      tl[c] = upper_row[l + c];
      tr[c] = upper_row[r + c];
      bl[c] = lower_row[l + c];
      br[c] = lower_row[r + c];
    }
    blend_rgb(dst, plane, tl, tr, bl, br, tap_frac[column], tap_frac[row], scale, offset,
              round_to_byte);
  }
}

// Per NV12 image, `NV12_GEOMETRY_WORDS` words of `geometry`: the left and
// top bands, the resized size, where the column and row taps start (as in
// `resize_planar`); the size the taps were planned for; the frame's size in
// memory; the pitch of its luma plane and of its interleaved chroma plane;
// its colour code. And two `planes`: the luma and chroma planes' addresses.
#define NV12_GEOMETRY_WORDS 13

// Colour codes: the BT.601 or BT.709 matrix, limited (video) or full range.
#define COLOR_BT709 1
#define COLOR_FULL_RANGE 2

// Pixel (x, y) of an NV12 frame as RGB bytes, as a decoder's own conversion
// gives them: the chroma sample of its 2x2 block, the matrix's
// coefficients, rounded and clamped to 8 bits.
__device__ __forceinline__ void nv12_rgb(const uint8_t *luma, const uint8_t *chroma,
                                         uint32_t luma_pitch, uint32_t chroma_pitch, uint32_t x,
                                         uint32_t y, uint32_t color, float rgb[3]) {
  float kr = (color & COLOR_BT709) ? 0.2126f : 0.299f;
  float kb = (color & COLOR_BT709) ? 0.0722f : 0.114f;
  float kg = 1.0f - kr - kb;
  bool full = (color & COLOR_FULL_RANGE) != 0;
  float y_scale = full ? 1.0f : 255.0f / 219.0f;
  float c_scale = full ? 1.0f : 255.0f / 224.0f;
  float black = full ? 0.0f : 16.0f;
  float l = __fmul_rn(__fsub_rn((float)luma[(size_t)y * luma_pitch + x], black), y_scale);
  const uint8_t *uv = chroma + (size_t)(y / 2) * chroma_pitch + (x & ~1u);
  float u = __fmul_rn(__fsub_rn((float)uv[0], 128.0f), c_scale);
  float v = __fmul_rn(__fsub_rn((float)uv[1], 128.0f), c_scale);
  float r = __fadd_rn(l, __fmul_rn(2.0f * (1.0f - kr), v));
  float b = __fadd_rn(l, __fmul_rn(2.0f * (1.0f - kb), u));
  float g = __fsub_rn(__fsub_rn(l, __fmul_rn(2.0f * kb * (1.0f - kb) / kg, u)),
                      __fmul_rn(2.0f * kr * (1.0f - kr) / kg, v));
  rgb[0] = fminf(fmaxf(roundf(r), 0.0f), 255.0f);
  rgb[1] = fminf(fmaxf(roundf(g), 0.0f), 255.0f);
  rgb[2] = fminf(fmaxf(roundf(b), 0.0f), 255.0f);
}

// A tap (`lo`, `hi`, `frac`) planned for an image `planned` pixels across,
// as two pixels of a frame `real` pixels across and the weight of the
// second. At the planned size the tap stands; a frame of another size is
// sampled where the planned pixel position falls on it (pixel centres
// aligned, as any resize does).
__device__ __forceinline__ void frame_tap(uint32_t lo, uint32_t hi, float frac, uint32_t planned,
                                          uint32_t real, uint32_t *first, uint32_t *second,
                                          float *weight) {
  if (planned == real) {
    *first = lo;
    *second = hi;
    *weight = frac;
    return;
  }
  float at = (float)lo + frac * (float)(hi - lo);
  float p = (at + 0.5f) * ((float)real / (float)planned) - 0.5f;
  p = fminf(fmaxf(p, 0.0f), (float)(real - 1));
  float whole = floorf(p);
  *first = (uint32_t)whole;
  *second = *first + 1 < real ? *first + 1 : real - 1;
  *weight = p - whole;
}

// `resize_planar` from NV12 frames: the four pixels of a tap are converted
// to RGB bytes first (as the CPU's frames are), then blended, rounded and
// scaled as there.
template <typename T>
__device__ void resize_nv12_planar(const uint64_t *planes, const uint32_t *geometry,
                                   const uint32_t *tap_index, const float *tap_frac, T *out,
                                   uint32_t images, uint32_t out_w, uint32_t out_h, float scale,
                                   float offset, float fill, int round_to_byte) {
  size_t plane = (size_t)out_w * out_h;
  GRID_STRIDE_LOOP(i, images * plane) {
    size_t image = i / plane;
    size_t at = i % plane;
    uint32_t x = at % out_w;
    uint32_t y = at / out_w;
    const uint32_t *g = geometry + image * NV12_GEOMETRY_WORDS;
    uint32_t left = g[0], top = g[1], inner_w = g[2], inner_h = g[3];
    T *dst = out + image * 3 * plane + at;
    if (x < left || x - left >= inner_w || y < top || y - top >= inner_h) {
      fill_band(dst, plane, fill);
      continue;
    }
    uint32_t column = g[4] + (x - left);
    uint32_t row = g[5] + (y - top);
    uint32_t l, r, t, b;
    float fx, fy;
    frame_tap(tap_index[2 * column], tap_index[2 * column + 1], tap_frac[column], g[6], g[8], &l,
              &r, &fx);
    frame_tap(tap_index[2 * row], tap_index[2 * row + 1], tap_frac[row], g[7], g[9], &t, &b, &fy);
    const uint8_t *luma = (const uint8_t *)planes[2 * image];
    const uint8_t *chroma = (const uint8_t *)planes[2 * image + 1];
    uint32_t luma_pitch = g[10], chroma_pitch = g[11], color = g[12];
    float tl[3], tr[3], bl[3], br[3];
    nv12_rgb(luma, chroma, luma_pitch, chroma_pitch, l, t, color, tl);
    nv12_rgb(luma, chroma, luma_pitch, chroma_pitch, r, t, color, tr);
    nv12_rgb(luma, chroma, luma_pitch, chroma_pitch, l, b, color, bl);
    nv12_rgb(luma, chroma, luma_pitch, chroma_pitch, r, b, color, br);
    blend_rgb(dst, plane, tl, tr, bl, br, fx, fy, scale, offset, round_to_byte);
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

#define RESIZE_NV12_PLANAR(T, NAME)                                                      \
  extern "C" __global__ void resize_nv12_planar_##NAME(                                  \
      const uint64_t *planes, const uint32_t *geometry, const uint32_t *tap_index,        \
      const float *tap_frac, T *out, uint32_t images, uint32_t out_w, uint32_t out_h,     \
      float scale, float offset, float fill, int round_to_byte) {                         \
    resize_nv12_planar<T>(planes, geometry, tap_index, tap_frac, out, images, out_w, out_h, \
                          scale, offset, fill, round_to_byte);                            \
  }
FOR_EACH_TYPE(RESIZE_NV12_PLANAR)
