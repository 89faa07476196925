#!/usr/bin/env python3
"""The anchor for Vigil's detector benchmark: YOLOv3-tiny through OpenCV DNN
(its darknet importer, CPU backend) on the same photos, doing the same work
per frame as `vigil`'s detector: resize to 416, /255, forward, decode, NMS.

Prints one JSON line per batch size: {"batch": N, "ms_per_frame": ...}.

    pip install opencv-python-headless==4.10.0.84 numpy   # 5.x dropped darknet
    python3 scripts/bench/opencv_dnn.py ASSETS_DIR 1,4
"""
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

PHOTOS = ["bike.jpg", "bikes_mid.jpg", "dog.jpg", "messi5.jpg", "person.jpg", "vtest_mid.jpg"]
WARMUP, MIN_FRAMES = 3, 64


def detect(net, images):
    blob = cv2.dnn.blobFromImages(images, 1 / 255.0, (416, 416), swapRB=True, crop=False)
    net.setInput(blob)
    outs = net.forward(net.getUnconnectedOutLayersNames())
    results = []
    for i, img in enumerate(images):
        h, w = img.shape[:2]
        # Batched outputs are [N, rows, 85]; a batch of one drops the N.
        rows = np.concatenate([o[i] if o.ndim == 3 else o for o in outs])
        scores = rows[:, 5:].max(1)
        keep = scores >= 0.3
        rows, scores = rows[keep], scores[keep]
        boxes = [[(r[0] - r[2] / 2) * w, (r[1] - r[3] / 2) * h, r[2] * w, r[3] * h] for r in rows]
        results.append(cv2.dnn.NMSBoxes(boxes, scores.tolist(), 0.3, 0.45))
    return results


def main():
    assets = Path(sys.argv[1])
    batches = [int(b) for b in sys.argv[2].split(",")]
    model = assets / "models/yolov3_tiny_darknet"
    net = cv2.dnn.readNetFromDarknet(str(model / "yolov3-tiny.cfg"), str(model / "yolov3-tiny.weights"))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    photos = [cv2.imread(str(assets / "images" / p)) for p in PHOTOS]
    for batch in batches:
        images = [photos[i % len(photos)] for i in range(batch)]
        for _ in range(WARMUP):
            detect(net, images)
        runs = max(-(-MIN_FRAMES // batch), 5)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            detect(net, images)
            times.append((time.perf_counter() - start) * 1e3)
        ms = sorted(times)[len(times) // 2]  # the median run, as the Rust side reports
        print(json.dumps({"runtime": f"OpenCV DNN {cv2.__version__}", "threads": cv2.getNumThreads(),
                          "batch": batch, "ms_per_frame": ms / batch}), flush=True)


if __name__ == "__main__":
    main()
