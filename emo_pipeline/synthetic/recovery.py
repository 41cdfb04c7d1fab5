"""How much of the synthetic world's planted truth the pipeline's own tables recover.

The world knows what it planted (`planted_scenes.json`, `planted_affinities.json`); the pipeline learns
from pictures and annotations alone. Each function compares one of the pipeline's tables with what was
planted and returns one row per figure: what was measured, its value, the target it should reach and
whether it did. `recovery_table` gathers them all; the demo's `planted_truth_recovery` asset shows it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from emo_pipeline.core.emotions import EMOTIONS
from emo_pipeline.synthetic.world import PLANTED_AFFINITIES, PLANTED_SCENES, read_planted_vg

RECOVERY_COLUMNS = ("stage", "figure", "value", "target", "met", "detail")
# The targets the demo's world and settings are tuned to reach.
DETECTOR_IOU = 0.5
DETECTOR_RECALL_TARGET = 0.6
DETECTOR_KINDS_TARGET = 30
TOP_K, PLANTED_TOP = 10, 5
TOP_OBJECTS_TARGET = {"b": 3, "a": 2}


def is_world(folder: Path) -> bool:
    """Whether `folder` holds a synthetic world's planted truth beside its data sets."""
    return (Path(folder) / PLANTED_SCENES).is_file() and (Path(folder) / PLANTED_AFFINITIES).is_file()


def _row(stage: str, figure: str, value: float, target: float, met: bool, detail: str = "") -> dict:
    return {"stage": stage, "figure": figure, "value": float(value), "target": float(target), "met": bool(met),
            "detail": detail}


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of `a` (n, 4: x, y, w, h) with every box of `b` (m, 4): an (n, m) array."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4)
    left = np.maximum(a[:, None, 0], b[None, :, 0])
    top = np.maximum(a[:, None, 1], b[None, :, 1])
    right = np.minimum((a[:, 0] + a[:, 2])[:, None], (b[:, 0] + b[:, 2])[None, :])
    bottom = np.minimum((a[:, 1] + a[:, 3])[:, None], (b[:, 1] + b[:, 3])[None, :])
    inter = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def planted_object_recall(world: Path, detections: pd.DataFrame, iou: float = DETECTOR_IOU) -> pd.DataFrame:
    """Per object kind: how many objects were planted in the Emotion6 pictures and how many of them a
    detection of the same kind covers at IoU >= `iou` (each detection matches one planted object at most)."""
    scenes = json.loads((Path(world) / PLANTED_SCENES).read_text(encoding="utf-8"))["Emotion6"]
    found = detections.dropna(subset=["object"])
    by_image = dict(list(found.groupby("image_key")))
    counts: dict[str, list[int]] = {}
    for key, scene in scenes.items():
        image = by_image.get(key)
        for kind in {o["name"] for o in scene["objects"]}:
            planted = np.array([[o["x"], o["y"], o["w"], o["h"]] for o in scene["objects"] if o["name"] == kind])
            tally = counts.setdefault(kind, [0, 0])
            tally[0] += len(planted)
            if image is None:
                continue
            boxes = image.loc[image["object"] == kind, ["x", "y", "w", "h"]].to_numpy(dtype=np.float64)
            if len(boxes):
                tally[1] += _greedy_matches(box_iou(planted, boxes), iou)
    table = pd.DataFrame([(k, n, hit) for k, (n, hit) in counts.items()], columns=["object", "planted", "recovered"])
    table["recall"] = table["recovered"] / table["planted"]
    return table.sort_values(["recall", "object"], ascending=[False, True]).reset_index(drop=True)


def _greedy_matches(overlaps: np.ndarray, threshold: float) -> int:
    """Pairs matched one to one, the largest overlap first, each at least `threshold`."""
    overlaps = overlaps.copy()
    matched = 0
    while overlaps.size and overlaps.max() >= threshold:
        i, j = np.unravel_index(int(overlaps.argmax()), overlaps.shape)
        overlaps[i, :], overlaps[:, j] = -1, -1
        matched += 1
    return matched


def detector_rows(recall: pd.DataFrame) -> list[dict]:
    """Overall recall and the number of kinds found, from `planted_object_recall`'s table."""
    total, recovered = int(recall["planted"].sum()), int(recall["recovered"].sum())
    overall = recovered / total if total else 0.0
    seen = int((recall["recovered"] > 0).sum())
    return [
        _row("detector", "planted objects recovered (recall)", overall, DETECTOR_RECALL_TARGET,
             overall >= DETECTOR_RECALL_TARGET, f"{recovered} of {total} at IoU >= {DETECTOR_IOU}"),
        _row("detector", "object kinds recovered", seen, DETECTOR_KINDS_TARGET, seen >= DETECTOR_KINDS_TARGET,
             f"kinds with at least one planted object found, of the {len(recall)} kinds planted"),
    ]


def image_model_rows(model: str, top1: float, majority: float) -> list[dict]:
    """The best image model's test top-1 on the dominant emotion against the majority class of train."""
    return [_row("image model", f"{model}: test dominant-emotion accuracy", top1, majority, top1 > majority,
                 f"majority class of train: {majority:.3f}")]


def dominant_agreement(world: Path, dataset_b: pd.DataFrame) -> pd.DataFrame:
    """Images of dataset B by planted dominant emotion (rows) and predicted dominant emotion (columns)."""
    planted = read_planted_vg(world)
    planted_dominant = np.asarray(EMOTIONS)[planted[[f"prob_{e}" for e in EMOTIONS]].to_numpy().argmax(axis=1)]
    frame = pd.DataFrame({"image_id": planted["image_id"], "planted": planted_dominant})
    predicted = dataset_b.loc[dataset_b["readable"], ["image_id", "dominant_emotion"]]
    frame = frame.merge(predicted, on="image_id", validate="one_to_one")
    table = pd.crosstab(frame["planted"], frame["dominant_emotion"])
    return table.reindex(index=list(EMOTIONS), columns=list(EMOTIONS), fill_value=0)


def agreement_rows(agreement: pd.DataFrame) -> list[dict]:
    """Per planted emotion: the share of its images predicted as that emotion, and whether that
    emotion is predicted more often than any other (target: strictly the most frequent)."""
    rows = []
    for emotion in EMOTIONS:
        counts = agreement.loc[emotion]
        if counts.sum() == 0:
            continue
        others = counts.drop(emotion)
        runner_up = others.idxmax()
        met = bool(counts[emotion] > others.max())
        rows.append(_row("dataset B", f"planted {emotion}: predicted {emotion}", counts[emotion] / counts.sum(),
                         others.max() / counts.sum(), met,
                         f"{int(counts[emotion])} of {int(counts.sum())} images; next: {runner_up} "
                         f"({int(others.max())})"))
    return rows


def most_planted(affinities: dict[str, list[float]], emotion: str, count: int = PLANTED_TOP) -> list[str]:
    """The `count` objects of strongest planted affinity to `emotion`, and every object tied with the last
    of them (the background objects share one affinity: neutral's fifth place is a 14-way tie)."""
    e = EMOTIONS.index(emotion)
    ranked = sorted(affinities, key=lambda name: (-affinities[name][e], name))
    cutoff = affinities[ranked[count - 1]][e]
    return [name for name in ranked if affinities[name][e] >= cutoff]


def top_object_rows(world: Path, top_objects: pd.DataFrame) -> list[dict]:
    """Per data set and emotion: how many of the emotion's `PLANTED_TOP` most planted objects (ties
    included, at most `PLANTED_TOP` counted) the score baseline's top `TOP_K` holds."""
    affinities = json.loads((Path(world) / PLANTED_AFFINITIES).read_text(encoding="utf-8"))["objects"]
    rows = []
    for dataset in ("b", "a"):
        target = TOP_OBJECTS_TARGET[dataset]
        for emotion in EMOTIONS:
            ranked = top_objects[(top_objects["dataset"] == dataset) & (top_objects["emotion"] == emotion)]
            top = ranked.sort_values("rank")["object"].head(TOP_K).tolist()
            wanted = most_planted(affinities, emotion)
            hits = [o for o in top if o in wanted][:PLANTED_TOP]
            tied = f" (with ties: {len(wanted)} objects)" if len(wanted) > PLANTED_TOP else ""
            rows.append(_row(f"dataset {dataset.upper()}", f"{emotion}: planted top {PLANTED_TOP} in the top {TOP_K}",
                             len(hits), target, len(hits) >= target,
                             f"found {', '.join(hits) or 'none'} of {', '.join(wanted[:PLANTED_TOP])}{tied}"))
    return rows


def recovery_table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(RECOVERY_COLUMNS))
