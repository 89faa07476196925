// See cuda_fp16.h: both halves of the emulation live there.
#pragma once
#include "cuda_fp16.h"
