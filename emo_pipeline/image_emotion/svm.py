"""The paper's first image model: an RBF support vector machine on hand-made features, predicting the
dominant emotion.

- Model: `Pipeline(StandardScaler, SVC(kernel="rbf"))`; the scaler is fitted on the training split
  only, inside the pipeline, so the saved model takes raw feature values.
- Model selection: every (C, gamma) of a small grid is fitted on train and scored on validation; the
  best validation accuracy wins, ties going to the smaller C and then the smaller gamma (the smoother
  model). The test split is never looked at before the choice is made, and the chosen model is not
  refitted on train + validation, so its validation accuracy stays the number it was chosen by.
  gamma is given as a multiple of 1 / n_features, which on standardised features is scikit-learn's
  "scale" default, so the same grid fits any feature configuration.
- class_weight: None by default. The paper scores dominant-emotion accuracy, and weighting classes
  by inverse frequency trades accuracy for recall on the rare emotions; `SVMConfig(class_weight=
  "balanced")` is there for the other trade. Balanced accuracy is reported beside accuracy, so a
  model that only predicts the majority class shows up as such.
- Baseline: the majority class of train, applied to every split (`emo_pipeline.image_emotion.dominant`).
- Deterministic: SVC without probability estimates has no randomness, so the same table gives the
  same model and predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from emo_pipeline.image_emotion.dominant import labelled_split, majority_class

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SVMConfig:
    c_grid: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0)
    gamma_factors: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0, 3.0)  # gamma = factor / n_features
    class_weight: str | None = None  # None or "balanced"

    def __post_init__(self) -> None:
        if not self.c_grid or not self.gamma_factors:
            raise ValueError("c_grid and gamma_factors must not be empty")
        if min(self.c_grid) <= 0 or min(self.gamma_factors) <= 0:
            raise ValueError("C and gamma factors must be positive")
        if self.class_weight not in (None, "balanced"):
            raise ValueError(f"class_weight must be None or 'balanced', not {self.class_weight!r}")


@dataclass
class SVMResult:
    pipeline: Pipeline
    feature_columns: list[str]
    best: dict[str, float]                 # C, gamma_factor, gamma
    selection: pd.DataFrame                # C, gamma_factor, gamma, train_accuracy, val_accuracy
    accuracy: dict[str, float]             # per split
    balanced_accuracy: dict[str, float]    # per split
    majority_class: str
    majority_accuracy: dict[str, float]    # per split
    predictions: pd.DataFrame              # image_key, split, true, predicted
    class_counts: dict[str, int] = field(default_factory=dict)  # train images per class


def training_table(features: pd.DataFrame, labels: pd.DataFrame, split: pd.DataFrame,
                   label: str = "dominant_emotion") -> pd.DataFrame:
    """image_key, split, true and the feature columns of every image with features, a label and a split."""
    labelled = labelled_split(labels, split, label)
    return labelled.merge(features, on="image_key", how="inner", validate="one_to_one")


def _accuracy(true: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean(true == predicted)) if len(true) else float("nan")


def train_dominant_svm(table: pd.DataFrame, feature_columns: Sequence[str],
                       config: SVMConfig = SVMConfig()) -> SVMResult:
    """Select (C, gamma) on validation, and report accuracies beside the majority baseline.

    `table` holds `image_key`, `split` (train/val/test), `true` (the dominant emotion) and the feature
    columns (see `training_table`).
    """
    feature_columns = list(feature_columns)
    parts = {name: table[table["split"] == name] for name in SPLITS}
    for name in ("train", "val"):
        if parts[name].empty:
            raise ValueError(f"the {name} split is empty")
    X = {name: part[feature_columns].astype(float) for name, part in parts.items()}
    y = {name: part["true"].astype(str).to_numpy() for name, part in parts.items()}
    if not np.isfinite(X["train"].to_numpy()).all():
        raise ValueError("the training features contain NaN or infinite values")

    n_features = len(feature_columns)
    candidates = []
    for c in sorted(config.c_grid):
        for factor in sorted(config.gamma_factors):
            pipeline = Pipeline([
                ("scale", StandardScaler()),
                ("svc", SVC(kernel="rbf", C=c, gamma=factor / n_features, class_weight=config.class_weight)),
            ])
            pipeline.fit(X["train"], y["train"])
            candidates.append({
                "C": c, "gamma_factor": factor, "gamma": factor / n_features,
                "train_accuracy": _accuracy(y["train"], pipeline.predict(X["train"])),
                "val_accuracy": _accuracy(y["val"], pipeline.predict(X["val"])),
                "pipeline": pipeline,
            })
    # Candidates are in (C, gamma) order, and max() keeps the first maximum: ties go to the smaller
    # C, then the smaller gamma.
    best = max(candidates, key=lambda row: row["val_accuracy"])
    pipeline = best["pipeline"]
    selection = pd.DataFrame([{k: v for k, v in row.items() if k != "pipeline"} for row in candidates])

    predicted = {name: pipeline.predict(X[name]) if len(X[name]) else np.array([], dtype=str) for name in SPLITS}
    majority = majority_class(y["train"])
    predictions = pd.concat([
        pd.DataFrame({"image_key": parts[name]["image_key"].astype("string").to_numpy(),
                      "split": name, "true": y[name], "predicted": predicted[name]})
        for name in SPLITS], ignore_index=True)
    predictions = predictions.astype({"image_key": "string", "split": "string", "true": "string",
                                      "predicted": "string"})
    return SVMResult(
        pipeline=pipeline,
        feature_columns=feature_columns,
        best={"C": best["C"], "gamma_factor": best["gamma_factor"], "gamma": best["gamma"]},
        selection=selection,
        accuracy={name: _accuracy(y[name], predicted[name]) for name in SPLITS},
        balanced_accuracy={name: float(balanced_accuracy_score(y[name], predicted[name])) if len(y[name])
                           else float("nan") for name in SPLITS},
        majority_class=majority,
        majority_accuracy={name: _accuracy(y[name], np.full(len(y[name]), majority)) for name in SPLITS},
        predictions=predictions,
        class_counts={str(k): int(v) for k, v in pd.Series(y["train"]).value_counts().items()},
    )
