"""Dominant-emotion classification: the majority-class baseline and the accuracy table.

Every dominant-emotion model writes a predictions table with the columns `PREDICTION_COLUMNS`
(image_key, split, true, predicted). The majority baseline predicts, for every image, the most
frequent dominant emotion of the training split (a tie goes to the first emotion in the order anger,
disgust, fear, joy, sadness, surprise, neutral), so it never looks at validation or test labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from emo_pipeline.core.emotions import EMOTIONS

PREDICTION_COLUMNS = ("image_key", "split", "true", "predicted")
ACCURACY_COLUMNS = ("model", "split", "accuracy", "correct", "images")
MAJORITY = "majority"


def majority_class(train_labels: Sequence[str]) -> str:
    """The most frequent label; ties go to the first emotion in `EMOTIONS` order."""
    counts = pd.Series(list(train_labels), dtype="string").value_counts()
    if counts.empty:
        raise ValueError("the training split is empty: no majority class")
    top = counts[counts == counts.max()].index
    order = {e: i for i, e in enumerate(EMOTIONS)}
    return str(min(top, key=lambda label: (order.get(label, len(order)), label)))


def labelled_split(labels: pd.DataFrame, split: pd.DataFrame, label: str = "dominant_emotion") -> pd.DataFrame:
    """image_key, split, true: the label of every image that has a split, in split-table order."""
    joined = split[["image_key", "split"]].merge(labels[["image_key", label]], on="image_key", how="inner",
                                                 validate="one_to_one")
    return joined.rename(columns={label: "true"})


def majority_predictions(labelled: pd.DataFrame) -> pd.DataFrame:
    """Predictions of the majority class of train, for every image of `labelled` (image_key, split, true)."""
    majority = majority_class(labelled.loc[labelled["split"] == "train", "true"])
    out = labelled[["image_key", "split", "true"]].copy()
    out["predicted"] = pd.array([majority] * len(out), dtype="string")
    return out.reset_index(drop=True)


def accuracy_table(predictions: Mapping[str, pd.DataFrame], splits: Sequence[str] = ("val", "test")) -> pd.DataFrame:
    """One row per model and split: accuracy, correct predictions and images."""
    rows = []
    for model, frame in predictions.items():
        missing = [c for c in PREDICTION_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"predictions of {model!r} lack the columns {missing}")
        for name in splits:
            part = frame[frame["split"] == name]
            correct = int((part["true"].astype(str).to_numpy() == part["predicted"].astype(str).to_numpy()).sum())
            images = len(part)
            rows.append({"model": model, "split": name, "accuracy": correct / images if images else np.nan,
                         "correct": correct, "images": images})
    table = pd.DataFrame(rows, columns=list(ACCURACY_COLUMNS))
    return table.astype({"model": "string", "split": "string", "accuracy": "float64",
                         "correct": "int64", "images": "int64"})
