"""Datasets A and B of a synthetic world as an oracle would make them.

The real pipeline fills dataset B with an image model's predictions and dataset A with a detector's
boxes; for tests of what comes after (objects <-> emotions, scenes) both are replaced by what the
generator planted: each Visual Genome image's noise-free distribution, and each Emotion6 picture's
planted objects. The tables are then written by the project's own `build_dataset_a` / `build_dataset_b`,
so their schema is exactly the pipeline's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from emo_pipeline.core.emotions import EMOTIONS, PROB_COLUMNS
from emo_pipeline.datasets.build import build_dataset_a, build_dataset_b, shard_images, shard_keys
from emo_pipeline.detection.detect import DETECTION_COLUMNS
from emo_pipeline.sources.emotion6 import read_emotion6
from emo_pipeline.sources.visual_genome import VG_TABLES, ingest_visual_genome
from emo_pipeline.storage.warehouse import Warehouse
from emo_pipeline.synthetic import read_planted_vg


def planted_predictions(world: Path) -> pd.DataFrame:
    """vg_emotion_predictions rows holding each image's planted distribution."""
    planted = read_planted_vg(world)
    probs = planted[list(PROB_COLUMNS)].to_numpy()
    frame = planted[["image_id"]].copy()
    frame["model"] = "planted"
    frame["model_version"] = "planted"
    frame["readable"] = True
    frame["dominant_emotion"] = np.asarray(EMOTIONS)[probs.argmax(axis=1)]
    return pd.concat([frame, planted[list(PROB_COLUMNS)]], axis=1)


def planted_detections(world: Path) -> pd.DataFrame:
    """emotion6_detections rows: every planted object of every Emotion6 picture, confidence 1."""
    scenes = json.loads((world / "planted_scenes.json").read_text(encoding="utf-8"))["Emotion6"]
    rows = [{"image_key": key, "image_path": f"{key}.jpg", "image_width": s["width"], "image_height": s["height"],
             "object": o["name"], "class_id": 0, "confidence": 1.0, "x": o["x"], "y": o["y"], "w": o["w"], "h": o["h"]}
            for key, s in scenes.items() for o in s["objects"]]
    return pd.DataFrame(rows, columns=list(DETECTION_COLUMNS))


def write_planted_datasets(world: Path, root: Path, tables: str | None = None) -> Warehouse:
    """A warehouse at `root` (its Parquet at `tables`, default local) with the raw tables of `world` and
    datasets A and B built on planted truth."""
    store = Warehouse(root, tables)
    with store.table_outputs(f"vg_{t}" for t in VG_TABLES) as outputs:
        ingest_visual_genome(world / "VG", {t: outputs[f"vg_{t}"] for t in VG_TABLES})
    store.write_table("emotion6_labels", read_emotion6(world / "Emotion6", check_images=False).labels, refresh=False)
    store.write_table("emotion6_detections", planted_detections(world), refresh=False)
    predictions = planted_predictions(world)
    for key in shard_keys():
        store.write_partition("vg_emotion_predictions", key, shard_images(predictions, key), refresh=False)
    store.refresh_views()
    build_dataset_b(store)
    build_dataset_a(store)
    return store
