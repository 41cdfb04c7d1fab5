"""What every distribution model on the hand-made features shares: the table split into train,
validation and test arrays, and the clipped predictions of every image with their scores."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from emo_pipeline.core import metrics
from emo_pipeline.core.emotions import PROB_COLUMNS
from emo_pipeline.core.splits import SPLITS


@dataclass
class FeatureSplits:
    feature_columns: list[str]
    keys: dict[str, np.ndarray]     # split -> image keys, in the rows' order
    X: dict[str, pd.DataFrame]      # split -> raw feature values (float64)
    Y: dict[str, np.ndarray]        # split -> (N, 7) true distributions


def split_features(features: pd.DataFrame, labels: pd.DataFrame, split: pd.DataFrame) -> FeatureSplits:
    """`features` (image_key and feature columns), `labels` (image_key, prob_*) and `split` (image_key,
    split) as one set of arrays per split; images without features are left out."""
    feature_columns = [c for c in features.columns if c != "image_key"]
    if not feature_columns:
        raise ValueError("the feature table has no feature columns")
    table = (labels[["image_key", *PROB_COLUMNS]]
             .merge(split[["image_key", "split"]], on="image_key", validate="one_to_one")
             .merge(features, on="image_key", how="inner", validate="one_to_one"))
    parts = {name: table[table["split"] == name].reset_index(drop=True) for name in SPLITS}
    for name in ("train", "val"):
        if parts[name].empty:
            raise ValueError(f"the {name} split has no images with features")
    X = {name: part[feature_columns].astype(np.float64) for name, part in parts.items()}
    if not np.isfinite(X["train"].to_numpy()).all():
        raise ValueError("the training features contain NaN or infinite values")
    return FeatureSplits(
        feature_columns=feature_columns,
        keys={name: part["image_key"].astype(str).to_numpy() for name, part in parts.items()},
        X=X, Y={name: part[list(PROB_COLUMNS)].to_numpy(dtype=np.float64) for name, part in parts.items()})


def clipped_predictions(data: FeatureSplits, raw: dict[str, np.ndarray], clip: float
                        ) -> tuple[pd.DataFrame, dict[str, dict[str, float]]]:
    """The predictions table (image_key, split, prob_*) of the raw outputs `raw` (split -> (N, 7)) with
    the floor `clip` applied, and the validation and test scores beside the train mean's."""
    frames = []
    for name in SPLITS:
        values = metrics.clip_distribution(raw[name], clip) if len(raw[name]) else np.zeros((0, len(PROB_COLUMNS)))
        frame = pd.DataFrame(values, columns=list(PROB_COLUMNS))
        frame.insert(0, "split", name)
        frame.insert(0, "image_key", data.keys[name])
        frames.append(frame)
    predictions = pd.concat(frames, ignore_index=True).astype({"image_key": "string", "split": "string"})
    floor = metrics.train_mean_baseline(data.Y["train"], 1)[0]
    scores: dict[str, dict[str, float]] = {}
    for name in ("val", "test"):
        if len(data.Y[name]) == 0:
            continue
        predicted = predictions.loc[predictions["split"] == name, list(PROB_COLUMNS)].to_numpy()
        scores[name] = metrics.distribution_metrics(data.Y[name], predicted)
        scores[f"{name}_train_mean"] = metrics.distribution_metrics(data.Y[name],
                                                                    np.tile(floor, (len(data.Y[name]), 1)))
    return predictions, scores


def predict_distribution(estimator, features: pd.DataFrame, clip: float) -> np.ndarray:
    """The clipped 7-way distribution for rows of raw feature values (the columns the model was fit on)."""
    return metrics.clip_distribution(np.asarray(estimator.predict(features), dtype=np.float64), clip)
