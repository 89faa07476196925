#!/usr/bin/env bash
# Packs the GPU checks for an NVIDIA machine that has the driver and CUDA's
# libraries but no Rust toolchain (a lab or customer box): built here with
# `--features cuda` (nvcc on PATH; packaging/build-cuda-deb.sh shows a
# toolchain from NVIDIA's wheels), with the test assets they read.
#
#   scripts/gpu-bundle.sh tests DIR   inference/tests/cuda.rs: the CUDA
#                                      kernels and whole detectors against
#                                      the CPU, in f32, f16 and bf16; and the
#                                      GPU figures NVML gives (web-ui's gpu)
#   scripts/gpu-bundle.sh bench DIR   the throughput benchmark on CUDA,
#                                      batches 1..64, the CPU as anchor
#   scripts/gpu-bundle.sh frames DIR  appliance/tests/gpu_frames.rs: NVDEC
#                                      frames handed to the model in GPU
#                                      memory against the host path, with
#                                      the ffmpeg libraries (libav*) it needs
#
# DIR receives bundle.tar.xz (under 60 MB: the models do not compress) and
# run.sh; for `frames` also lib-1.tar.xz and lib-2.tar.xz (about 40 MB each;
# a machine that takes 64 MB at a time gets them in separate copies). On
# the GPU machine: `bash DIR/run.sh [OUT]`, which unpacks to /tmp and writes
# its log to OUT (default: the current directory).
# Assets come from $VIGIL_TEST_ASSETS (default ../shared/assets, as the tests).
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:?tests or bench}
dir=${2:?output folder}
assets=${VIGIL_TEST_ASSETS:-../shared/assets}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cuda}
command -v nvcc >/dev/null || { echo "nvcc must be on PATH (see packaging/build-cuda-deb.sh)" >&2; exit 1; }

# The executables cargo built, from its JSON messages; only target $1's
# if given (a test's package also builds its binaries).
executables() {
  python3 -c 'import json, sys
only = sys.argv[1] if len(sys.argv) > 1 else None
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        if only is None or m["target"]["name"] == only:
            print(m["executable"])' "$@"
}

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib" "$stage/assets/models" "$stage/assets/reference"
case "$what" in
  tests)
    cargo test --release -p vigil-inference --features cuda --test cuda --no-run \
      --message-format=json-render-diagnostics | executables > "$stage/exe"
    # The photos are decoded with libjpeg-turbo, as the reference runtimes did.
    cp "$(command -v djpeg)" "$stage/bin/"
    cp "$(ldconfig -p | awk '/libjpeg.so.62 .*x86-64/ { print $NF; exit }')" "$stage/lib/"
    cargo test --release -p vigil-web-ui --lib --no-run \
      --message-format=json-render-diagnostics | executables > "$stage/stats-exe"
    cp "$(tail -n 1 "$stage/stats-exe")" "$stage/bin/gpu-stats"
    strip "$stage/bin/gpu-stats"
    ;;
  bench)
    cargo bench -p vigil-benches --features cuda --bench throughput --no-run \
      --message-format=json-render-diagnostics | executables > "$stage/exe"
    ;;
  frames)
    cargo test --release -p vigil --features cuda --test gpu_frames --no-run \
      --message-format=json-render-diagnostics | executables gpu_frames > "$stage/exe"
    mkdir -p "$stage/assets/video"
    cp "$assets/video/bikes.mp4" "$stage/assets/video/"
    ;;
  *) echo "tests or bench, not $what" >&2; exit 2 ;;
esac
exe=$(tail -n 1 "$stage/exe")
cp "$exe" "$stage/bin/check"
strip "$stage/bin/check"
cp -r "$assets/models/ssdlite_mobilenet_v2_coco_tfjs" "$stage/assets/models/"
if [ "$what" != frames ]; then
  cp -r "$assets/images" "$stage/assets/"
  cp "$assets"/reference/*.json "$stage/assets/reference/"
  cp -r "$assets/models/yolov3_tiny_darknet" "$stage/assets/models/"
fi

mkdir -p "$dir"
if [ "$what" = frames ]; then
  # libav* and what they load, but not glibc's own or the GPU driver's
  # libraries: the machine's serve. In two halves by size.
  ldd "$stage/bin/check" | awk '$3 ~ /^\// { print $3 }' \
    | grep -vE '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*|libgcc_s|libstdc\+\+)\.so|/libcuda\.so|/libcublas|/libcurand|/libcudart|/libnvrtc' \
    | xargs -r stat -L -c '%s %n' | sort -rn > "$stage/libs"
  awk 'NR % 2 == 1 { print $2 }' "$stage/libs" > "$stage/libs-1"
  awk 'NR % 2 == 0 { print $2 }' "$stage/libs" > "$stage/libs-2"
  for half in 1 2; do
    tar -chf - -T "$stage/libs-$half" --transform 's|.*/|lib/|' 2>/dev/null \
      | xz -T0 -6 > "$dir/lib-$half.tar.xz"
  done
fi
tar -C "$stage" -cf - bin lib assets | xz -T0 -6 > "$dir/bundle.tar.xz"
case "$what" in
  tests) run='VIGIL_EXPECT_GPU=1 bin/gpu-stats gpu:: --nocapture && bin/check --test-threads 1 --nocapture' ;;
  # f32, f16 and bf16 on the GPU at batch 1..64; the YOLOv8/11 models are
  # built with synthetic weights inside the benchmark.
  bench) run='VIGIL_BENCH_DEVICE=cuda bin/check --bench' ;;
  frames) run='bin/check --test-threads 1 --nocapture' ;;
esac
cat > "$dir/run.sh" <<EOF
#!/usr/bin/env bash
# Made by scripts/gpu-bundle.sh $what: unpacks next to nothing else and runs.
set -euo pipefail
out=\$(realpath "\${1:-.}")
work=\$(mktemp -d)
for part in "\$(dirname "\$0")"/lib-*.tar.xz "\$(dirname "\$0")"/bundle.tar.xz; do
  [ -f "\$part" ] && tar -C "\$work" -xJf "\$part"
done
cd "\$work"
export PATH="\$work/bin:\$PATH" VIGIL_TEST_ASSETS="\$work/assets"
export LD_LIBRARY_PATH="\$work/lib:/usr/local/cuda/lib64:/usr/local/nvidia/lib64:\${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
{ $run; } 2>&1 | tee "\$out/gpu-$what.log"
EOF
chmod +x "$dir/run.sh"
ls -l "$dir"
