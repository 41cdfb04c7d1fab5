"""Distances between emotion distributions, as PyLDL defines them (u = true, v = predicted).

Each per-image function takes two (n, 7) arrays and returns n values; `distribution_metrics` gives
their means, which is what tables report.

KL direction and epsilon. `kl` is KL(u || v) = sum u ln(u / v), true before predicted, the direction
of the label-distribution-learning literature (PyLDL) and the one a model trained to match the
annotators' distribution is judged by. Both sides are clipped to [eps, 1] first with eps = float64
machine epsilon (2.2e-16), exactly as PyLDL does, so an annotated zero contributes nothing and a
predicted zero a large but finite term. The paper names no direction and no epsilon. `kl_reverse` is
the other direction, KL(v || u), with the same clipping. Emotion6's labels are vote fractions with
about two zero bins per image, so in this direction every bit of probability a model puts on an
emotion no annotator chose costs about ln(1 / eps) = 36 per unit: its value depends mostly on eps.
The paper's KL values (2.73-3.39 at Bhattacharyya .85-.88) cannot be `kl`: the train-mean prediction
already gives about 0.61 that way, whatever eps, and better models less. The reverse direction
reaches values of that size (the train mean: 8.9 at this eps, 3.7 at eps 1e-7); docs/reproduction.md
has the measurement.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from emo_pipeline.core.emotions import PROB_COLUMNS

EPS = float(np.finfo(np.float64).eps)

# Larger is better for these; smaller is better for the rest.
HIGHER_IS_BETTER = frozenset({"bhattacharyya", "cosine", "intersection", "top1"})


def _pair(u, v) -> tuple[np.ndarray, np.ndarray]:
    u = np.asarray(u, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    if u.shape != v.shape or u.ndim != 2:
        raise ValueError(f"true and predicted must be (n, bins) arrays of one shape, got {u.shape} and {v.shape}")
    return u, v


def kl_divergence(u, v) -> np.ndarray:
    """KL(u || v) = sum u ln(u / v), both clipped to [eps, 1]."""
    u, v = _pair(u, v)
    u, v = np.clip(u, EPS, 1), np.clip(v, EPS, 1)
    return np.sum(u * (np.log(u) - np.log(v)), axis=1)


def kl_reverse(u, v) -> np.ndarray:
    """KL(v || u) = sum v ln(v / u), predicted before true, both clipped to [eps, 1] (see the module
    docstring for why this direction is reported beside `kl` and how much eps weighs in it)."""
    u, v = _pair(u, v)
    return kl_divergence(v, u)


def chebyshev(u, v) -> np.ndarray:
    u, v = _pair(u, v)
    return np.max(np.abs(u - v), axis=1)


def max_emotion_distance(u, v) -> np.ndarray:
    """|u_k - v_k| at k = argmax u: how far off the prediction is on the dominant emotion."""
    u, v = _pair(u, v)
    k = u.argmax(axis=1)
    rows = np.arange(len(u))
    return np.abs(u[rows, k] - v[rows, k])


def bhattacharyya(u, v) -> np.ndarray:
    """Bhattacharyya coefficient sum sqrt(u v) (PyLDL's fidelity): 1 for identical distributions."""
    u, v = _pair(u, v)
    return np.sum(np.sqrt(np.clip(u, 0, None) * np.clip(v, 0, None)), axis=1)


def cosine(u, v) -> np.ndarray:
    u, v = _pair(u, v)
    norms = np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1)
    return np.sum(u * v, axis=1) / np.where(norms > 0, norms, 1.0)


def intersection(u, v) -> np.ndarray:
    """1 - 0.5 sum |u - v|, which equals sum min(u, v) for distributions."""
    u, v = _pair(u, v)
    return 1 - 0.5 * np.sum(np.abs(u - v), axis=1)


def squared_error(u, v) -> np.ndarray:
    """Mean over bins of (u - v)^2, per image; its mean over images is the MSE."""
    u, v = _pair(u, v)
    return np.mean((u - v) ** 2, axis=1)


def top1(u, v) -> np.ndarray:
    """1 where the predicted dominant emotion is the true one (first maximum on ties)."""
    u, v = _pair(u, v)
    return (u.argmax(axis=1) == v.argmax(axis=1)).astype(np.float64)


PER_IMAGE = {
    "mse": squared_error,
    "kl": kl_divergence,
    "kl_reverse": kl_reverse,
    "chebyshev": chebyshev,
    "max_emotion": max_emotion_distance,
    "bhattacharyya": bhattacharyya,
    "cosine": cosine,
    "intersection": intersection,
    "top1": top1,
}


def distribution_metrics(u, v) -> dict[str, float]:
    """Every metric, averaged over images."""
    return {name: float(fn(u, v).mean()) for name, fn in PER_IMAGE.items()}


def train_mean_baseline(train: np.ndarray, n: int) -> np.ndarray:
    """The floor every model is reported beside: the mean training distribution for every image."""
    mean = np.asarray(train, dtype=np.float64).mean(axis=0)
    return np.tile(mean / mean.sum(), (n, 1))


def metrics_table(rows: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """One row per (model, split) with every metric; `rows` maps (model, split) -> (true, predicted)."""
    records = [{"model": model, "split": split, "images": len(u), **distribution_metrics(u, v)}
               for (model, split), (u, v) in rows.items()]
    return pd.DataFrame(records, columns=["model", "split", "images", *PER_IMAGE])


def split_pairs(labels: pd.DataFrame, predictions: pd.DataFrame,
                splits: tuple[str, ...] = ("val", "test")) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(true, predicted) distributions per split, ready for the metrics.

    `predictions` has image_key, split and prob_*; `labels` has image_key and prob_* (and, when it also
    has a split column, predictions are matched on it too, so a stale split drops rather than mixes).
    """
    keys = ["image_key", "split"] if "split" in labels.columns else ["image_key"]
    joined = predictions.merge(labels[[*keys, *PROB_COLUMNS]], on=keys, suffixes=("_pred", ""))
    predicted_columns = [f"{c}_pred" for c in PROB_COLUMNS]
    return {s: (joined.loc[joined["split"] == s, list(PROB_COLUMNS)].to_numpy(),
                joined.loc[joined["split"] == s, predicted_columns].to_numpy()) for s in splits}


def train_mean_pairs(labels: pd.DataFrame, split: pd.DataFrame,
                     splits: tuple[str, ...] = ("val", "test")) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(true, train-mean baseline) per split; `split` maps image_key to train/val/test."""
    table = labels[["image_key", *PROB_COLUMNS]].merge(split[["image_key", "split"]], on="image_key")
    train_true = table.loc[table["split"] == "train", list(PROB_COLUMNS)].to_numpy()
    pairs = {}
    for name in splits:
        true = table.loc[table["split"] == name, list(PROB_COLUMNS)].to_numpy()
        pairs[name] = (true, train_mean_baseline(train_true, len(true)))
    return pairs


# The metrics a model asset shows, per split, beside the train mean's.
REPORTED = ("mse", "chebyshev", "bhattacharyya", "kl", "kl_reverse", "top1")


def split_metrics(predictions: pd.DataFrame, labels: pd.DataFrame,
                  splits: tuple[str, ...] = ("val", "test")) -> dict[str, dict[str, float]]:
    """Every metric per split for a model's `predictions` (image_key, split, prob_*) against `labels`,
    and the train-mean baseline's under `<split>_train_mean`."""
    model = split_pairs(labels, predictions, splits)
    baseline = train_mean_pairs(labels, predictions, splits)
    out = {}
    for split in splits:
        out[split] = distribution_metrics(*model[split])
        out[f"{split}_train_mean"] = distribution_metrics(*baseline[split])
    return out


def flat_scores(scores: dict[str, dict[str, float]], names: tuple[str, ...] = REPORTED) -> dict[str, float]:
    """{"val": {"kl": .5}} -> {"val_kl": .5}, for the metrics in `names`."""
    return {f"{split}_{name}": float(values[name]) for split, values in scores.items() for name in names
            if name in values}


# Floors tried on validation: KL punishes a near-zero prediction for an emotion some annotators chose,
# so raising tiny probabilities helps until it flattens the distribution.
CLIP_GRID = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05)


def clip_distribution(predicted, floor: float) -> np.ndarray:
    """Every probability raised to at least `floor`, each row renormalised to sum to 1."""
    clipped = np.maximum(np.asarray(predicted, dtype=np.float64), floor)
    return clipped / clipped.sum(axis=1, keepdims=True)


def sharpen(predicted, power: float) -> np.ndarray:
    """Every row raised to `power` and renormalised to sum to 1: above 1 sharper, 1 unchanged."""
    raised = np.power(np.asarray(predicted, dtype=np.float64), power)
    return raised / raised.sum(axis=1, keepdims=True)


def choose_clip(true, predicted, grid: tuple[float, ...] = CLIP_GRID) -> float:
    """The floor of `grid` with the lowest mean KL on (validation) `true` vs `predicted`; 0 wins ties."""
    scores = [(float(kl_divergence(true, clip_distribution(predicted, floor)).mean()), floor) for floor in grid]
    return min(scores)[1]
