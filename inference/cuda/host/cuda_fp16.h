// What ops.cu uses of CUDA, for compiling it as C++ on the host (the
// `cuda-emulation` feature): the tests then run the kernels' source on a
// machine with no GPU and compare it with the CPU ops. One block of one
// thread: every grid-stride loop walks all its values in turn.
#pragma once
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define __global__
#define __device__
#define __forceinline__ inline

struct emulated_dim3 {
  unsigned x, y, z;
};
extern "C" const emulated_dim3 blockIdx, blockDim, threadIdx, gridDim;

// GCC's _Float16 rounds to nearest even, as __float2half_rn does.
struct __half {
  _Float16 value;
};
inline float __half2float(__half h) { return (float)h.value; }
inline __half __float2half_rn(float f) { return __half{(_Float16)f}; }

// bf16 is the top half of an f32; rounding to nearest even (finite values,
// all the tests give it).
struct __nv_bfloat16 {
  uint16_t bits;
};
inline float __bfloat162float(__nv_bfloat16 b) {
  uint32_t u = (uint32_t)b.bits << 16;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  u += 0x7FFF + ((u >> 16) & 1);
  return __nv_bfloat16{(uint16_t)(u >> 16)};
}

// Built with -ffp-contract=off, so these round as the GPU's do.
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
