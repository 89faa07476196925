// The launch geometry every emulated kernel sees (see cuda_fp16.h).
#include "cuda_fp16.h"

extern "C" const emulated_dim3 blockIdx = {0, 0, 0};
extern "C" const emulated_dim3 blockDim = {1, 1, 1};
extern "C" const emulated_dim3 threadIdx = {0, 0, 0};
extern "C" const emulated_dim3 gridDim = {1, 1, 1};
