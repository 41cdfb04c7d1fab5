"""The emotion distribution models fitted and scored on several split seeds: means and spreads.

On Emotion6 the test scores of one split move by about +-.008 Chebyshev and +-.02 KL from split to
split, as much as the gaps between methods, so a comparison worth trusting fits every model on the
same splits and reports the mean and standard deviation over them. For each seed: the seeded,
stratified 70/15/15 split (`core.splits.stratified_split`, as `emotion6_split` makes it), then each
chosen model fitted on train and chosen on validation exactly as its asset does, then the stacked
ensemble of the fitted models (weights on validation), then every metric on the test split beside the
train mean. The test split of a seed takes part in no choice of that seed.

Models: `feature_ridge` (the paper's two feature families), `feature_gbm` and `feature_mlp` (every
family of the feature table), `patch_mlp` (patch features learned from each split's training pictures),
any torch model of the profile's `EMOTION_MODELS` (e.g. `small_cnn`), and `ensemble`.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from emo_pipeline.core import metrics
from emo_pipeline.core.emotions import PROB_COLUMNS
from emo_pipeline.core.splits import stratified_split

if TYPE_CHECKING:  # the fit functions bring scikit-learn and torch: imported when a fit runs
    from emo_pipeline.image_emotion.training import EmotionModelConfig

FEATURE_MODELS = ("feature_ridge", "feature_gbm", "feature_mlp")
PATCH_MLP = "patch_mlp"
ENSEMBLE = "ensemble"
TRAIN_MEAN = "train_mean"
DEFAULT_MODELS = ("feature_ridge", "feature_gbm", "feature_mlp", PATCH_MLP, ENSEMBLE)
SHOWN = ("chebyshev", "bhattacharyya", "kl", "kl_reverse", "mse", "top1")


@dataclass(frozen=True)
class MultiSplitConfig:
    """What the multi-split evaluation fits: the split seeds and the models (names as in `check_models`)."""

    seeds: tuple[int, ...] = (0, 1, 2)
    models: tuple[str, ...] = DEFAULT_MODELS


@dataclass
class MultiSplitResult:
    per_split: pd.DataFrame   # seed, model, seconds, every test metric; train_mean rows included
    summary: pd.DataFrame     # model, splits, <metric>_mean, <metric>_std, seconds_mean; best first
    members: dict[int, str]   # seed -> the ensemble's members and weights, as text


def check_models(models: Sequence[str], torch_models: Mapping[str, EmotionModelConfig]) -> list[str]:
    """`models` in order without repeats; a name that is not a model here raises, naming the known ones."""
    known = [*FEATURE_MODELS, PATCH_MLP, *torch_models, ENSEMBLE]
    unknown = [m for m in models if m not in known]
    if unknown:
        raise ValueError(f"unknown model {', '.join(map(repr, unknown))}; choose from {', '.join(known)}")
    chosen = list(dict.fromkeys(models))
    if chosen == [ENSEMBLE]:
        raise ValueError("the ensemble needs at least one other model to weight")
    return chosen


def evaluate_splits(
    labels: pd.DataFrame,
    seeds: Sequence[int],
    models: Sequence[str] = DEFAULT_MODELS,
    *,
    features: pd.DataFrame | None = None,
    torch_models: Mapping[str, EmotionModelConfig] | None = None,
    feature_settings: Mapping[str, object] | None = None,
    device: str | object = "cpu",
    log: Callable[[str], None] = print,
) -> MultiSplitResult:
    """Fit `models` on each split seed of `labels` (as read by `sources.emotion6`) and score them on test.

    `features`: image_key and the feature columns (needed by the feature models); `torch_models`:
    name -> settings of the image models that may be chosen; `feature_settings`: feature model name (or
    `patch_mlp`) -> its settings (default: the dataclass defaults, as the assets use); `device`: where torch
    models train and the patch features are computed.
    """
    from emo_pipeline.image_emotion.ensemble import fit_ensemble

    torch_models = dict(torch_models or {})
    models = check_models(models, torch_models)
    if not seeds:
        raise ValueError("give at least one split seed")
    if features is None and any(m in FEATURE_MODELS for m in models):
        raise ValueError("the feature models need the feature table")
    fit = model_fitter(labels, features=features, torch_models=torch_models, feature_settings=feature_settings,
                       device=device)
    rows, members = [], {}
    for seed in seeds:
        split = stratified_split(labels["image_key"], labels["dominant_emotion"], seed=int(seed))
        fitted: dict[str, pd.DataFrame] = {}
        for name in (m for m in models if m != ENSEMBLE):
            began = time.perf_counter()
            fitted[name], note = fit(name, split)
            rows.append(_row(seed, name, time.perf_counter() - began, fitted[name], labels))
            log(_line(rows[-1]) + note)
        if ENSEMBLE in models:
            began = time.perf_counter()
            ensemble = fit_ensemble(labels, fitted)
            members[int(seed)] = (", ".join(f"{m} {w:.2f}" for m, w in zip(ensemble.members, ensemble.weights))
                                  + f"; power {ensemble.power:g}")
            rows.append(_row(seed, ENSEMBLE, time.perf_counter() - began, ensemble.predictions, labels))
            log(_line(rows[-1]) + f" ({members[int(seed)]})")
        any_predictions = next(iter(fitted.values()))
        baseline = metrics.train_mean_pairs(labels, any_predictions, ("test",))["test"]
        rows.append({"seed": int(seed), "model": TRAIN_MEAN, "seconds": 0.0, **metrics.distribution_metrics(*baseline)})
        log(_line(rows[-1]))
    per_split = pd.DataFrame(rows)
    return MultiSplitResult(per_split=per_split, summary=summarise(per_split), members=members)


def model_fitter(labels: pd.DataFrame, *, features: pd.DataFrame | None = None,
                 torch_models: Mapping[str, EmotionModelConfig] | None = None,
                 feature_settings: Mapping[str, object] | None = None, device: str | object = "cpu",
                 ) -> Callable[[str, pd.DataFrame], tuple[pd.DataFrame, str]]:
    """A function fitting model `name` (a feature model, `patch_mlp` or one of `torch_models`) on `split`
    exactly as its asset does: it returns the predictions (image_key, split, prob_*) and a note on the fit."""
    from emo_pipeline.image_emotion.feature_gbm import FeatureGBMConfig, fit_feature_gbm
    from emo_pipeline.image_emotion.feature_mlp import FeatureMLPConfig, fit_feature_mlp
    from emo_pipeline.image_emotion.feature_ridge import FeatureRidgeConfig, fit_feature_ridge
    from emo_pipeline.image_emotion.features import PAPER_FAMILIES, columns_of
    from emo_pipeline.image_emotion.patch_mlp import PatchMLPConfig, fit_patch_mlp
    from emo_pipeline.image_emotion.training import fit_emotion_model

    # Each feature model's fit; `feature_ridge` reads the paper's families only.
    fits = {"feature_ridge": fit_feature_ridge, "feature_gbm": fit_feature_gbm, "feature_mlp": fit_feature_mlp}
    defaults = {"feature_ridge": FeatureRidgeConfig, "feature_gbm": FeatureGBMConfig,
                "feature_mlp": FeatureMLPConfig, PATCH_MLP: PatchMLPConfig}
    settings = {name: (feature_settings or {}).get(name) or config() for name, config in defaults.items()}
    paper_columns = columns_of(list(features.columns), PAPER_FAMILIES) if features is not None else []
    torch_models = dict(torch_models or {})

    def fit(name: str, split: pd.DataFrame) -> tuple[pd.DataFrame, str]:
        if name in fits:
            table = features[["image_key", *paper_columns]] if name == "feature_ridge" else features
            return fits[name](table, labels, split, settings[name]).predictions, ""
        if name == PATCH_MLP:
            fitted = fit_patch_mlp(labels, split, settings[name], device=device, log=lambda line: None)
            return fitted.predictions, f", of which {fitted.features_seconds:.0f} s for the patch features"
        with tempfile.TemporaryDirectory(prefix=f"{name}_") as checkpoints:
            fitted = fit_emotion_model(labels, split, torch_models[name], Path(checkpoints), device=device,
                                       log=lambda line: None)
        return fitted.predictions, f", trained in {fitted.result.precision}"

    return fit


def _row(seed: int, model: str, seconds: float, predictions: pd.DataFrame, labels: pd.DataFrame) -> dict:
    scores = metrics.split_metrics(predictions[["image_key", "split", *PROB_COLUMNS]], labels, ("test",))
    return {"seed": int(seed), "model": model, "seconds": seconds, **scores["test"]}


def _line(row: dict) -> str:
    return (f"seed {row['seed']} {row['model']:<14} test Chebyshev {row['chebyshev']:.4f} BC "
            f"{row['bhattacharyya']:.4f} KL {row['kl']:.4f} ({row['seconds']:.0f} s)")


def summarise(per_split: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation (ddof 1; 0 for one split) of every metric per model, best KL first."""
    names = [c for c in per_split.columns if c not in ("seed", "model")]
    grouped = per_split.groupby("model", sort=False)[names]
    mean, std = grouped.mean(), grouped.std(ddof=1).fillna(0.0)
    summary = pd.concat([mean.add_suffix("_mean"), std.add_suffix("_std")], axis=1)
    summary.insert(0, "splits", per_split.groupby("model", sort=False)["seed"].nunique())
    ordered = [c for name in names for c in (f"{name}_mean", f"{name}_std") if name != "seconds"]
    summary = summary[["splits", *ordered, "seconds_mean"]].sort_values("kl_mean")
    return summary.reset_index()


def summary_text(summary: pd.DataFrame, metrics_shown: Sequence[str] = SHOWN) -> str:
    """The summary as aligned text, `mean +- std` per metric."""
    table = pd.DataFrame({"model": summary["model"], "splits": summary["splits"]})
    for name in metrics_shown:
        if f"{name}_mean" in summary:
            table[name] = [f"{m:.4f} +- {s:.4f}" for m, s in zip(summary[f"{name}_mean"], summary[f"{name}_std"])]
    table["seconds"] = np.round(summary["seconds_mean"]).astype(int)
    return table.to_string(index=False)
