#!/usr/bin/env bash
# Cameras held with YOLOv3-tiny, anchored on OpenCV DNN running the same
# model on the same machine in the same run: `vigil bench --max-cameras`
# with the darknet model, then OpenCV on the same weights in batches of
# the same size. OpenCV's frames/s / detect_fps is how many cameras it
# could serve if decoding, tracking and storage were free; compare it with
# the model-alone anchor and the cameras Vigil held.
#
#   pip install opencv-python-headless==4.10.0.84 numpy
#   VIGIL_OPENCV_PYTHON=/path/to/python scripts/bench/cameras-vs-opencv.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-docs/bench}"
assets="${VIGIL_TEST_ASSETS:-../shared/assets}"
vigil="${VIGIL:-target/release/vigil}"
python="${VIGIL_OPENCV_PYTHON:-python3}"
mkdir -p "$out"
"$vigil" bench --max-cameras --clip 1080p --max-batch 4 \
  --model "$assets/models/yolov3_tiny_darknet/yolov3-tiny.cfg" \
  --json "$out/max-cameras-1080p-yolov3-tiny.json"
echo "anchor, OpenCV DNN on the same model:"
"$python" scripts/bench/opencv_dnn.py "$assets" 4 | tee "$out/opencv-yolov3-tiny.jsonl"
