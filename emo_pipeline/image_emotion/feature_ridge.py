"""A feature-based emotion distribution model: (kernel) ridge regression on the hand-made features.

The SVM of the paper predicts only the dominant emotion; this model predicts the whole 7-way
distribution from the same GLCM + CIECAM02 table (`emo_pipeline.image_emotion.features`), trains in seconds, and
errs differently from the CNNs, which makes it a useful member of an average of models.

- Features: Yeo-Johnson power transform then standardisation (`transform="power"`, the default), or
  plain standardisation (`"standard"`). The GLCM properties (contrast, ASM, ...) and the histogram
  bins are heavily skewed; making them roughly Gaussian lets the RBF kernel measure distances on
  every feature instead of on a few outliers (validation KL .534 instead of .548 on the real
  Emotion6, split seed 0). The transform is fitted on the training split only, inside the pipeline,
  so the saved model takes raw feature values.
- Targets: the 7 probabilities, centred on the training mean (kernel ridge has no intercept, so
  without centring the penalty would pull predictions towards zero rather than towards the mean).
- Regression: `KernelRidge(kernel="rbf")` (or `Ridge` with `kernel="linear"`); every (alpha, gamma)
  of a small grid is fitted on train and scored on validation. gamma is a multiple of 1 / n_features,
  so the grid fits any feature configuration.
- Output: regression outputs are not distributions (they may be negative), so each prediction p
  becomes max(p, floor) renormalised, with the floor chosen on validation per candidate; the
  candidate with the lowest validation KL wins (ties: the earlier one, i.e. the smaller alpha and
  gamma). The test split is never looked at before the choice. The chosen floor is not part of the
  scikit-learn pipeline (whose `predict` returns the raw regression output): it is returned as `clip`,
  to be stored beside the model and applied with `metrics.clip_distribution`.
- Deterministic: no step draws random numbers, so the same table gives the same model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.compose import TransformedTargetRegressor
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import PowerTransformer, StandardScaler

from emo_pipeline.core import metrics
from emo_pipeline.core.emotions import PROB_COLUMNS
from emo_pipeline.image_emotion.feature_splits import clipped_predictions, split_features

KERNELS = ("rbf", "linear")
TRANSFORMS = ("power", "standard")


@dataclass(frozen=True)
class FeatureRidgeConfig:
    kernel: str = "rbf"                                      # rbf (KernelRidge) | linear (Ridge)
    alpha_grid: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0)
    gamma_factors: tuple[float, ...] = (0.1, 0.3, 1.0)       # rbf: gamma = factor / number of features
    transform: str = "power"                                 # power | standard
    clip_grid: tuple[float, ...] = metrics.CLIP_GRID         # floors tried on validation (0 always is)

    def __post_init__(self) -> None:
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, not {self.kernel!r}")
        if self.transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {', '.join(TRANSFORMS)}, not {self.transform!r}")
        if not self.alpha_grid or min(self.alpha_grid) <= 0:
            raise ValueError(f"alpha_grid must hold positive values, got {self.alpha_grid}")
        if self.kernel == "rbf" and (not self.gamma_factors or min(self.gamma_factors) <= 0):
            raise ValueError(f"gamma_factors must hold positive values, got {self.gamma_factors}")
        if any(not 0 <= floor < 1 / len(PROB_COLUMNS) for floor in self.clip_grid):
            raise ValueError(f"clip_grid floors must lie in [0, 1/{len(PROB_COLUMNS)}), got {self.clip_grid}")


@dataclass
class FeatureRidgeResult:
    pipeline: Pipeline                     # raw feature columns -> unclipped 7-way regression output
    feature_columns: list[str]
    best: dict[str, float]                 # alpha, gamma_factor, gamma (NaN for linear), clip
    clip: float                            # the floor to apply to `pipeline.predict` (metrics.clip_distribution)
    selection: pd.DataFrame                # one row per candidate: alpha, gamma_factor, gamma, clip, val metrics
    predictions: pd.DataFrame              # image_key, split, prob_* (clipped), every image with features
    scores: dict[str, dict[str, float]]    # val, test, val_train_mean, test_train_mean -> distribution metrics
    seconds: float = 0.0


def _transformer(name: str):
    # PowerTransformer standardises its output too (standardize=True).
    return PowerTransformer(method="yeo-johnson") if name == "power" else StandardScaler()


def _regressor(kernel: str, alpha: float, gamma: float | None) -> TransformedTargetRegressor:
    inner = Ridge(alpha=alpha) if kernel == "linear" else KernelRidge(alpha=alpha, kernel="rbf", gamma=gamma)
    # Centring (not scaling) the targets: the model shrinks towards the training mean distribution.
    return TransformedTargetRegressor(regressor=inner, transformer=StandardScaler(with_std=False),
                                      check_inverse=False)


def fit_feature_ridge(features: pd.DataFrame, labels: pd.DataFrame, split: pd.DataFrame,
                      config: FeatureRidgeConfig = FeatureRidgeConfig()) -> FeatureRidgeResult:
    """Fit on train, choose (alpha, gamma, floor) on validation, predict every image.

    `features`: image_key and the feature columns (the `emotion6_features` table); `labels`: image_key
    and prob_* (as read by emotion6.py); `split`: image_key, split. Images without features are left out.
    """
    began = time.perf_counter()
    data = split_features(features, labels, split)
    X, Y, feature_columns = data.X, data.Y, data.feature_columns

    # The transform does not depend on the regression's hyper-parameters: fit it once.
    transform = _transformer(config.transform).fit(X["train"])
    Z = {name: transform.transform(x) if len(x) else np.zeros((0, len(feature_columns))) for name, x in X.items()}
    grid = tuple(sorted({0.0, *config.clip_grid}))
    n_features = len(feature_columns)
    factors = sorted(config.gamma_factors) if config.kernel == "rbf" else [float("nan")]
    candidates = []
    for alpha in sorted(config.alpha_grid):
        for factor in factors:
            gamma = factor / n_features if config.kernel == "rbf" else None
            regressor = _regressor(config.kernel, alpha, gamma).fit(Z["train"], Y["train"])
            raw_val = regressor.predict(Z["val"])
            clip = metrics.choose_clip(Y["val"], raw_val, grid)
            val = metrics.distribution_metrics(Y["val"], metrics.clip_distribution(raw_val, clip))
            candidates.append({"alpha": alpha, "gamma_factor": factor, "gamma": gamma if gamma else float("nan"),
                               "clip": clip, **{f"val_{k}": v for k, v in val.items()}, "regressor": regressor})
    # Candidates are in (alpha, gamma) order and min() keeps the first minimum: ties go to the
    # smaller alpha, then the smaller gamma.
    best = min(candidates, key=lambda row: row["val_kl"])
    pipeline = Pipeline([("transform", transform), ("ridge", best["regressor"])])
    selection = pd.DataFrame([{k: v for k, v in row.items() if k != "regressor"} for row in candidates])

    clip = float(best["clip"])
    raw = {name: best["regressor"].predict(z) if len(z) else np.zeros((0, len(PROB_COLUMNS))) for name, z in Z.items()}
    predictions, scores = clipped_predictions(data, raw, clip)
    return FeatureRidgeResult(
        pipeline=pipeline, feature_columns=feature_columns,
        best={"alpha": best["alpha"], "gamma_factor": best["gamma_factor"], "gamma": best["gamma"], "clip": clip},
        clip=clip, selection=selection, predictions=predictions, scores=scores,
        seconds=time.perf_counter() - began,
    )
