"""A gradient-boosted emotion distribution model on the hand-made features (this project's addition).

The paper predicts distributions with CNNs only; its hand-made features feed an SVM of the dominant
emotion. This model predicts the whole 7-way distribution from every feature family of the table
(the paper's GLCM + CIECAM02 and, where computed, the colour and texture families of
`emo_pipeline.image_emotion.colour_texture`). Trees need no scaling or transform of the features, and
they find the interactions between colour, texture and layout that a kernel on a standardised
table spreads thin.

- One scikit-learn `HistGradientBoostingRegressor` per emotion, squared error on that emotion's
  probability, with shrinkage, small trees, a minimum leaf size, an L2 penalty and a random share of
  the features per split (`max_features`, drawn from `seed`), so the same table gives the same model.
- Number of boosting iterations: each emotion's model is fitted on train for `max_iter` iterations
  with scikit-learn's own early stopping off, then scored on the validation split after every
  iteration (`staged_predict`); it keeps the iterations up to its lowest validation MSE (the first
  such, so ties go to fewer trees). The served model of that emotion is refitted on train with
  exactly that many iterations; boosting is sequential and seeded, so it is the prefix of the long
  fit (checked by a test).
- Output: the 7 regression outputs are not a distribution, so each prediction p becomes max(p, floor)
  renormalised to sum to 1, with the floor chosen on validation KL from `clip_grid` (0 always tried),
  as for `feature_ridge`. The floor is stored beside the model (`clip`, applied with
  `metrics.clip_distribution`), not inside it.
- Only the train and validation splits take part in the fit and every choice; the test split is
  predicted once at the end.

The fitted model is a `MultiOutputRegressor` holding the 7 boosters (one per emotion in
`PROB_COLUMNS` order), so it saves with skops and predicts (N, 7) like any scikit-learn regressor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.multioutput import MultiOutputRegressor

from emo_pipeline.core import metrics
from emo_pipeline.core.emotions import EMOTIONS, PROB_COLUMNS
from emo_pipeline.image_emotion.feature_splits import clipped_predictions, split_features


@dataclass(frozen=True)
class FeatureGBMConfig:
    # Chosen on the validation splits of the real Emotion6 (split seeds 0-2) among a handful of
    # settings; the others (larger trees, lr 0.1, stronger L2) were level or worse.
    learning_rate: float = 0.05
    max_iter: int = 500                 # most iterations per emotion; how many are kept is chosen on validation
    max_leaf_nodes: int = 7
    min_samples_leaf: int = 40
    l2_regularization: float = 1.0
    max_features: float = 0.2           # share of the features each split considers
    seed: int = 0
    clip_grid: tuple[float, ...] = metrics.CLIP_GRID  # floors tried on validation (0 always is)

    def __post_init__(self) -> None:
        if self.learning_rate <= 0 or self.max_iter < 1:
            raise ValueError("learning_rate must be positive and max_iter at least 1")
        if self.max_leaf_nodes < 2 or self.min_samples_leaf < 1:
            raise ValueError("max_leaf_nodes must be at least 2 and min_samples_leaf at least 1")
        if self.l2_regularization < 0 or not 0 < self.max_features <= 1:
            raise ValueError("l2_regularization must be >= 0 and max_features within (0, 1]")
        if any(not 0 <= floor < 1 / len(PROB_COLUMNS) for floor in self.clip_grid):
            raise ValueError(f"clip_grid floors must lie in [0, 1/{len(PROB_COLUMNS)}), got {self.clip_grid}")

    def booster(self, max_iter: int) -> HistGradientBoostingRegressor:
        """One emotion's regressor with `max_iter` iterations; scikit-learn's early stopping stays off,
        since the validation split, not a random slice of train, decides the iterations."""
        return HistGradientBoostingRegressor(
            loss="squared_error", learning_rate=self.learning_rate, max_iter=max_iter,
            max_leaf_nodes=self.max_leaf_nodes, min_samples_leaf=self.min_samples_leaf,
            l2_regularization=self.l2_regularization, max_features=self.max_features,
            early_stopping=False, random_state=self.seed)


@dataclass
class FeatureGBMResult:
    model: MultiOutputRegressor          # raw feature columns -> unclipped 7-way regression output
    feature_columns: list[str]
    iterations: dict[str, int]           # emotion -> boosting iterations kept
    clip: float                          # the floor to apply to `model.predict` (metrics.clip_distribution)
    selection: pd.DataFrame              # per emotion: iterations, val MSE there, at max_iter, of the train mean
    val_curves: np.ndarray               # (max_iter, 7) validation MSE after each iteration
    predictions: pd.DataFrame            # image_key, split, prob_* (clipped), every image with features
    scores: dict[str, dict[str, float]]  # val, test, val_train_mean, test_train_mean -> distribution metrics
    seconds: float = 0.0


def _assemble(boosters: list[HistGradientBoostingRegressor]) -> MultiOutputRegressor:
    """The fitted boosters as one regressor of the 7 outputs. `MultiOutputRegressor.fit` would give
    every output the same number of iterations; here each has its own, so its fitted attributes are
    set as its own `fit` sets them."""
    model = MultiOutputRegressor(boosters[0])
    model.estimators_ = boosters
    model.n_features_in_ = boosters[0].n_features_in_
    if hasattr(boosters[0], "feature_names_in_"):
        model.feature_names_in_ = boosters[0].feature_names_in_
    return model


def fit_feature_gbm(features: pd.DataFrame, labels: pd.DataFrame, split: pd.DataFrame,
                    config: FeatureGBMConfig = FeatureGBMConfig()) -> FeatureGBMResult:
    """Fit on train, choose each emotion's iterations and the floor on validation, predict every image.

    `features`: image_key and the feature columns; `labels`: image_key and prob_*; `split`: image_key,
    split. Images without features are left out.
    """
    began = time.perf_counter()
    data = split_features(features, labels, split)
    X, Y = data.X, data.Y

    curves = np.empty((config.max_iter, len(PROB_COLUMNS)))
    boosters, rows = [], []
    for j, emotion in enumerate(EMOTIONS):
        y_train, y_val = Y["train"][:, j], Y["val"][:, j]
        long = config.booster(config.max_iter).fit(X["train"], y_train)
        curves[:, j] = [np.mean((stage - y_val) ** 2) for stage in long.staged_predict(X["val"])]
        kept = int(np.argmin(curves[:, j])) + 1  # argmin keeps the first minimum: ties go to fewer trees
        boosters.append(config.booster(kept).fit(X["train"], y_train))
        rows.append({"emotion": emotion, "iterations": kept, "val_mse": float(curves[kept - 1, j]),
                     "val_mse_at_max_iter": float(curves[-1, j]),
                     "val_mse_train_mean": float(np.mean((y_train.mean() - y_val) ** 2))})
    model = _assemble(boosters)

    grid = tuple(sorted({0.0, *config.clip_grid}))
    clip = float(metrics.choose_clip(Y["val"], model.predict(X["val"]), grid))
    raw = {name: model.predict(x) if len(x) else np.zeros((0, len(PROB_COLUMNS))) for name, x in X.items()}
    predictions, scores = clipped_predictions(data, raw, clip)
    selection = pd.DataFrame(rows)
    return FeatureGBMResult(
        model=model, feature_columns=data.feature_columns,
        iterations={row["emotion"]: row["iterations"] for row in rows},
        clip=clip, selection=selection, val_curves=curves, predictions=predictions, scores=scores,
        seconds=time.perf_counter() - began)
