#!/usr/bin/env python3
"""Reference outputs of Ultralytics YOLOv8 / YOLO11 detectors for the candle
port (inference/tests/ultralytics_reference.rs).

No pretrained weights can be fetched here, so each model is built from its
yaml by the `ultralytics` package itself and given synthetic weights from a
formula the Rust test reproduces bit for bit (a hash of the tensor name and
element index). Then one real photo, letterboxed to 640x640 as Ultralytics
does, goes through the model in float32, and its raw output
`[1, 4 + classes, anchors]` is stored: every anchor's box, and every class
score of every 32nd anchor. The tensor names and shapes are stored too, so
the port must read Ultralytics' own state-dict names. Last, a tiny model
saved as a real Ultralytics checkpoint tests the `.pt` importer.

    pip install ultralytics opencv-python-headless
    python3 scripts/reference/ultralytics_random.py ../shared/assets inference/tests/data/ultralytics
"""
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
import ultralytics
import yaml
from ultralytics.nn.tasks import DetectionModel

MODELS = ["yolov8n", "yolov8s", "yolo11n", "yolo11s"]
IMAGE = "bike.jpg"
SIZE = 640
SCORE_ANCHOR_STEP = 32


def unit_values(name: str, count: int) -> np.ndarray:
    """count float32 values in [-1, 1): splitmix64 of fnv1a64(name) + index."""
    h = np.uint64(0xCBF29CE484222325)
    with np.errstate(over="ignore"):
        for b in name.encode():
            h = (h ^ np.uint64(b)) * np.uint64(0x100000001B3)
        z = h + np.arange(count, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(40)).astype(np.float32) / np.float32(1 << 24)
    return u * np.float32(2) - np.float32(1)


def synthetic(name: str, shape) -> np.ndarray:
    """The formula, per kind of tensor (mirrored in the Rust test)."""
    v = unit_values(name, int(np.prod(shape))).reshape(shape)
    if name.endswith("running_var"):
        return np.float32(1) + v * np.float32(0.5)
    if name.endswith("bn.weight"):
        return np.float32(1) + v * np.float32(0.25)
    if len(shape) == 4:
        fan_in = shape[1] * shape[2] * shape[3]
        return v * (np.float32(2.5) / np.sqrt(np.float32(fan_in)))
    return v * np.float32(0.1)  # biases, bn.bias, running_mean


def letterbox(img: np.ndarray) -> np.ndarray:
    """Ultralytics' LetterBox(new_shape=(640, 640), auto=False), grey 114."""
    h, w = img.shape[:2]
    r = min(SIZE / h, SIZE / w)
    nw, nh = int(round(w * r)), int(round(h * r))
    dw, dh = (SIZE - nw) / 2, (SIZE - nh) / 2
    img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    return cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114))


def main():
    assets, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    boxed = letterbox(cv2.imread(str(assets / "images" / IMAGE)))
    png = IMAGE.replace(".jpg", f".{SIZE}.png")
    cv2.imwrite(str(out / png), boxed)
    x = torch.from_numpy(boxed[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 255
    torch.manual_seed(0)
    for name in MODELS:
        model = DetectionModel(f"{name}.yaml", nc=80, verbose=False).eval()
        state = model.state_dict()
        manifest = []
        for key, t in state.items():
            if key.endswith("num_batches_tracked") or ".dfl." in key:
                continue
            state[key] = torch.from_numpy(synthetic(key, tuple(t.shape)))
            manifest.append([key, list(t.shape)])
        model.load_state_dict(state)
        with torch.no_grad():
            y = model(x)[0][0].numpy()  # [4 + classes, anchors]
        boxes = y[:4]
        scores = y[4:, ::SCORE_ANCHOR_STEP]
        np.concatenate([boxes.ravel(), scores.T.ravel()]).astype("<f4").tofile(out / f"{name}.out.bin")
        (out / f"{name}.json").write_text(json.dumps({
            "model": name,
            "made_by": f"ultralytics {ultralytics.__version__}, torch {torch.__version__}",
            "input": png,
            "outputs": {"classes": y.shape[0] - 4, "anchors": y.shape[1],
                        "score_anchor_step": SCORE_ANCHOR_STEP,
                        "layout": "boxes [4, anchors] (cx, cy, w, h) then scores [anchor/step, classes]"},
            "tensors": manifest,
        }, indent=0))
        print(name, y.shape, "box range", boxes.min(), boxes.max(), "score range", y[4:].min(), y[4:].max())
    tiny_checkpoint(out, x)


def tiny_checkpoint(out: Path, x: torch.Tensor):
    """A real Ultralytics checkpoint (`YOLO.save`, half precision, as
    training writes) of a tiny YOLOv8 with two named classes, and its float
    output: the test input for `vigil import-ultralytics`."""
    from ultralytics import YOLO

    cfg = yaml.safe_load((Path(ultralytics.__file__).parent / "cfg/models/v8/yolov8.yaml").read_text())
    cfg["nc"] = 2
    cfg["scales"] = {"t": [0.33, 0.0625, 1024]}
    path = out / "tiny-yolov8t.yaml"
    path.write_text(yaml.safe_dump(cfg))
    model = YOLO(str(path))
    path.unlink()
    net = model.model
    state = net.state_dict()
    for key, t in state.items():
        if key.endswith("num_batches_tracked") or ".dfl." in key:
            continue
        # Rounded to half, as the checkpoint stores it.
        state[key] = torch.from_numpy(synthetic(key, tuple(t.shape))).half().float()
    net.load_state_dict(state)
    net.names = {0: "walker", 1: "rider"}
    model.save(str(out / "tiny-yolov8.pt"))
    with torch.no_grad():
        y = net.float().eval()(x)[0][0].numpy()
    y.T.astype("<f4").tofile(out / "tiny-yolov8.out.bin")  # [anchors, 4 + 2]
    print("tiny", y.shape, (out / "tiny-yolov8.pt").stat().st_size, "bytes")


if __name__ == "__main__":
    main()
