"""Running a detector over images: user weights or weights trained here, one row per detection.

`load_detector(path)` loads any ultralytics detection checkpoint (`.pt`), for example a COCO model
downloaded by hand (its class names are whatever it was trained on: 80 COCO names) or the weights
`training` produced. `detect` runs a detector over images and returns one row per detection, plus
one row with NULL object, confidence and box for every image without a detection, so every image is
in the table.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from emo_pipeline.detection import Log, no_log
from emo_pipeline.detection.ultralytics_offline import prepare_ultralytics, torch_process_state

# Columns of a detections table (see `detect`). Images without a detection have one row with NULL
# object, class_id, confidence and box.
DETECTION_COLUMNS = ("image_key", "image_path", "image_width", "image_height", "object", "class_id",
                     "confidence", "x", "y", "w", "h")


@dataclass
class LoadedDetector:
    model: object                   # ultralytics.YOLO
    names: list[str]
    weights: Path
    train_imgsz: int | None         # the input size it was trained at, when the checkpoint says


def load_detector(weights_path: str | os.PathLike) -> LoadedDetector:
    """Load an ultralytics detection checkpoint from a local file (never a download).

    The file is a torch pickle: load only weights you trust. Its class names (e.g. the 80 COCO names
    of a COCO model) are the objects it can report.
    """
    path = Path(weights_path).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"detector weights {path} do not exist (give the path of a local .pt file)")
    if path.suffix != ".pt":
        raise ValueError(f"detector weights must be an ultralytics .pt checkpoint, not {path.name}")
    prepare_ultralytics()
    from ultralytics import YOLO

    # An absolute path to an existing file: ultralytics loads it and never looks online.
    model = YOLO(str(path))
    if model.task != "detect":
        raise ValueError(f"{path} holds a {model.task!r} model, not an object detector")
    names = [str(v) for _, v in sorted(model.names.items())]
    train_args = (getattr(model, "ckpt", None) or {}).get("train_args") or {}
    imgsz = train_args.get("imgsz")
    return LoadedDetector(model=model, names=names, weights=path,
                          train_imgsz=int(imgsz) if isinstance(imgsz, (int, float)) else None)


def detect(model, images: Iterable[tuple[str, str | os.PathLike]], conf: float = 0.2, imgsz: int = 640,
           batch: int = 16, device: str | None = None, log: Log = no_log, log_every: int = 500) -> pd.DataFrame:
    """Run `model` (an ultralytics YOLO or a `LoadedDetector`) over `(image_key, path)` pairs.

    Returns the columns of `DETECTION_COLUMNS`: one row per detection with confidence >= `conf`, box
    `x, y, w, h` in pixels of the original image (top-left corner, width, height; boxes clipped to
    nothing at the picture's edge are dropped); an image with no
    detection gets one row whose object, class_id, confidence and box are NULL, so every image appears:
    once per detection, or once with NULLs (`WHERE object IS NULL` lists the images without one).
    """
    if not 0.0 <= conf <= 1.0:
        raise ValueError(f"confidence threshold must be in [0, 1], not {conf}")
    if isinstance(model, LoadedDetector):
        model = model.model
    pairs = [(str(key), str(Path(path).resolve())) for key, path in images]
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("image keys must be unique")
    prepare_ultralytics()
    names = model.names
    rows: list[dict] = []
    with torch_process_state():
        _detect_into(rows, model, names, pairs, conf, imgsz, batch, device, log, log_every)
    frame = pd.DataFrame(rows, columns=list(DETECTION_COLUMNS))
    return frame.astype({"image_key": "string", "image_path": "string", "image_width": "int32",
                         "image_height": "int32", "object": "string", "class_id": "Int32",
                         "confidence": "float64", "x": "float64", "y": "float64", "w": "float64", "h": "float64"})


def _detect_into(rows: list[dict], model, names: dict, pairs: list[tuple[str, str]], conf: float, imgsz: int,
                 batch: int, device: str | None, log: Log, log_every: int) -> None:
    done = 0
    for start in range(0, len(pairs), max(batch, 1) * 8):
        chunk = pairs[start:start + max(batch, 1) * 8]
        results = model.predict(source=[p for _, p in chunk], conf=conf, imgsz=imgsz, batch=batch, device=device,
                                verbose=False, stream=True, save=False)
        for (key, path), result in zip(chunk, results, strict=True):
            if Path(result.path).resolve() != Path(path):
                raise RuntimeError(f"detector returned results for {result.path} where {path} was expected")
            height, width = (int(v) for v in result.orig_shape)
            boxes = result.boxes
            xyxy = boxes.xyxy.cpu().numpy() if boxes is not None and len(boxes) else np.zeros((0, 4))
            scores = boxes.conf.cpu().numpy() if len(xyxy) else np.zeros(0)
            classes = boxes.cls.cpu().numpy().astype(int) if len(xyxy) else np.zeros(0, dtype=int)
            # A box predicted outside the picture is clipped to its edge and keeps no area: not an object.
            keep = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
            xyxy, scores, classes = xyxy[keep], scores[keep], classes[keep]
            if not len(xyxy):
                rows.append({"image_key": key, "image_path": path, "image_width": width, "image_height": height,
                             "object": None, "class_id": None, "confidence": None,
                             "x": None, "y": None, "w": None, "h": None})
            else:
                for (x0, y0, x1, y1), score, cls in sorted(zip(xyxy, scores, classes), key=lambda t: -t[1]):
                    rows.append({"image_key": key, "image_path": path, "image_width": width, "image_height": height,
                                 "object": str(names[int(cls)]), "class_id": int(cls), "confidence": float(score),
                                 "x": float(x0), "y": float(y0), "w": float(x1 - x0), "h": float(y1 - y0)})
            done += 1
            if done % log_every == 0:
                log(f"detected objects in {done}/{len(pairs)} images")
