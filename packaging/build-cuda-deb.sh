#!/usr/bin/env bash
# Builds vigil-cuda, the package for NVIDIA boxes, on a machine without a
# GPU: nvcc and the CUDA 13 libraries come from NVIDIA's PyPI wheels, and a
# stub libcuda (the driver's soname, empty entry points) serves the link.
# The box that installs the package needs the NVIDIA driver (>= 580, CUDA
# 13) and cuBLAS 13, cudart 13 and cuRAND 10 from NVIDIA's CUDA repository.
#
#   packaging/build-cuda-deb.sh [CUDA_DIR]     (default ~/.cache/cuda13)
#
# The GPU code is PTX for compute capability 7.5 (CUDA_COMPUTE_CAP=75): the
# driver compiles it for the GPU it finds, so one package serves Turing (T4,
# RTX 20) to Hopper. bf16 needs 8.0 or newer (CUDA_COMPUTE_CAP=80 drops
# Turing); f16 is as fast wherever bf16 runs.
#
# About 10 minutes on 2 cores (candle's CUDA kernels), in target/cuda.
set -euo pipefail
cd "$(dirname "$0")/.."
D=${1:-$HOME/.cache/cuda13}
mkdir -p "$D"
if [ ! -x "$D/venv/bin/pip" ]; then python3 -m venv "$D/venv"; fi
"$D/venv/bin/pip" -q install "nvidia-cuda-nvcc==13.0.*" "nvidia-nvvm==13.0.*" \
  "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-crt==13.0.*" "nvidia-cuda-cccl==13.0.*" \
  "nvidia-cuda-nvrtc==13.0.*" "nvidia-cublas==13.0.*" "nvidia-curand==10.4.*"
CUDA=$(echo "$D"/venv/lib/python3*/site-packages/nvidia/cu13)
LINK="$D/link"
mkdir -p "$LINK"
for lib in cublas:13 cublasLt:13 cudart:13 curand:10 nvrtc:13; do
  ln -sf "$CUDA/lib/lib${lib%%:*}.so.${lib##*:}" "$LINK/lib${lib%%:*}.so"
done
if [ ! -f "$LINK/libcuda.so" ]; then
  # Every driver entry point the CUDA crates may reference, as an empty
  # function, under the driver's soname: the real one is loaded at run time.
  { cat "$CUDA"/include/cuda.h "$CUDA"/include/cudaProfiler*.h 2>/dev/null
    echo cuProfilerInitialize cuProfilerStart cuProfilerStop; } |
    grep -oE '\bcu[A-Z][A-Za-z0-9_]*\b' | sort -u | awk '{print "void " $1 "(void){}"}' > "$LINK/stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$LINK/libcuda.so" "$LINK/stub.c"
fi
export PATH="$CUDA/bin:$PATH" CUDA_ROOT="$CUDA" CUDA_PATH="$CUDA" CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-75}"
export RUSTFLAGS="${RUSTFLAGS:-} -L $LINK" CARGO_TARGET_DIR=target/cuda
cargo build --release -p vigil --features cuda
cargo deb -p vigil --variant cuda --no-build --strip -o target/deb-cuda/ 2>&1 | grep -v "dpkg-shlibdeps\|cannot find library\|analyze should\|cannot continue\|libraries are not searched\|private libraries\|No \$auto deps\|^ *$" || true
deb=$(ls target/deb-cuda/vigil-cuda_*_amd64.deb)
dpkg-deb -f "$deb" Depends | grep -q libavcodec59 || { echo "FAIL: no libavcodec dependency" >&2; exit 1; }
readelf -d target/cuda/release/vigil | grep -q 'libcublas.so.13' || { echo "FAIL: not a CUDA build" >&2; exit 1; }
if lintian --tag-display-limit 0 "$deb" 2>&1 | grep "^E:"; then echo "FAIL: lintian errors" >&2; exit 1; fi
echo "built $deb ($(du -h "$deb" | cut -f1)); depends: $(dpkg-deb -f "$deb" Depends)"
