"""A weighted average of emotion distribution models, its weights fitted on validation (stacking).

Averaging models that err differently is the cheapest gain on Emotion6: differences between random
splits are as large as those between methods, and no single from-scratch model wins everywhere. The
weights (non-negative, summing to 1) minimise the average's mean KL on the validation split (SLSQP on
the simplex, from equal weights); a model whose weight ends below `MIN_WEIGHT` is dropped and the
rest refitted, and at most `max_members` (the largest weights) are kept. Seven outputs per image and a
handful of weights leave little to overfit on 297 validation images. An average is flatter than its
members where they disagree, so it is then raised to a power and renormalised (`metrics.sharpen`),
and floored: the power (`POWER_GRID`, 1 always tried) and the floor are chosen together on validation
too, by the three distances Emotion6 is reported with (KL, Chebyshev, 1 - Bhattacharyya), each relative
to the train mean's, summed. KL alone settles on the flattest power its curve allows, while Chebyshev
and Bhattacharyya keep improving for a while as the power rises (docs/models.md, "The ensemble"). The
test split is never seen.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize

from emo_pipeline.core import metrics
from emo_pipeline.core.emotions import PROB_COLUMNS

MIN_WEIGHT = 0.01  # below this a member changes the average by less than the floor does
# On split seeds 0-2 of the real Emotion6 the chosen powers were 1.2-1.25 (1.05 by validation KL alone):
# test KL +.0026, Chebyshev -.0027 and BC +.0032 against KL's choice (docs/models.md, "The ensemble").
POWER_GRID = tuple(round(1 + 0.05 * step, 2) for step in range(-4, 21))  # 0.8 to 2.0


@dataclass
class Ensemble:
    members: list[str]
    weights: list[float]        # one per member, non-negative, summing to 1
    power: float                # the average raised to it and renormalised, before the floor
    clip: float
    predictions: pd.DataFrame   # image_key, split, prob_*: every image all members predicted
    val_kl: dict[str, float]    # each candidate alone, then "ensemble"


def _aligned(predictions: Mapping[str, pd.DataFrame]) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The images every model predicted, in one order, and each model's (N, 7) array for them."""
    keys = None
    for frame in predictions.values():
        part = frame[["image_key", "split"]]
        keys = part if keys is None else keys.merge(part, on=["image_key", "split"])
    keys = keys.sort_values("image_key").reset_index(drop=True)
    arrays = {name: keys.merge(frame, on=["image_key", "split"], how="left")[list(PROB_COLUMNS)].to_numpy(np.float64)
              for name, frame in predictions.items()}
    return keys, arrays


def _kl(true: np.ndarray, predicted: np.ndarray) -> float:
    return float(metrics.kl_divergence(true, predicted).mean())


def fit_weights(true: np.ndarray, arrays: list[np.ndarray]) -> np.ndarray:
    """Non-negative weights summing to 1 that minimise the mean KL of the weighted average on `true`."""
    if len(arrays) == 1:
        return np.ones(1)
    stack = np.stack(arrays)  # (members, N, 7)

    def loss(w: np.ndarray) -> float:
        return _kl(true, np.tensordot(w, stack, axes=1))

    start = np.full(len(arrays), 1 / len(arrays))
    found = optimize.minimize(loss, start, method="SLSQP", bounds=[(0.0, 1.0)] * len(arrays),
                              constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}])
    weights = np.clip(found.x if found.success else start, 0, None)
    return weights / weights.sum()


def fit_ensemble(labels: pd.DataFrame, predictions: Mapping[str, pd.DataFrame], *, max_members: int = 5) -> Ensemble:
    """Weight the models of `predictions` (name -> image_key, split, prob_*) on validation."""
    if not predictions:
        raise ValueError("an ensemble needs at least one model's predictions")
    if max_members < 1:
        raise ValueError(f"max_members must be at least 1, not {max_members}")
    keys, arrays = _aligned(predictions)
    truth = keys.merge(labels[["image_key", *PROB_COLUMNS]], on="image_key", how="left")[list(PROB_COLUMNS)]
    true = truth.to_numpy(np.float64)
    val = (keys["split"] == "val").to_numpy()
    if not val.any():
        raise ValueError("no validation images shared by every model")

    alone = {name: _kl(true[val], array[val]) for name, array in arrays.items()}
    members = list(arrays)
    while True:
        weights = fit_weights(true[val], [arrays[m][val] for m in members])
        keep = [m for m, w in sorted(zip(members, weights), key=lambda mw: -mw[1]) if w >= MIN_WEIGHT][:max_members]
        if len(keep) == len(members):
            break
        members = [m for m in members if m in keep]

    average = np.tensordot(weights, np.stack([arrays[m] for m in members]), axes=1)
    train = (keys["split"] == "train").to_numpy()
    reference = true[train if train.any() else val].mean(axis=0)  # the train mean (validation's if no train)
    power, clip = choose_power_and_clip(true[val], average[val], reference)
    combined = metrics.clip_distribution(metrics.sharpen(average, power), clip)
    frame = pd.concat([keys, pd.DataFrame(combined, columns=list(PROB_COLUMNS))], axis=1)
    return Ensemble(members=members, weights=[float(w) for w in weights], power=power, clip=clip,
                    predictions=frame, val_kl={**alone, "ensemble": _kl(true[val], combined[val])})


def relative_distance(true: np.ndarray, reference: np.ndarray) -> Callable[[np.ndarray], float]:
    """Scores predictions of `true`: mean KL, Chebyshev and 1 - Bhattacharyya, each divided by the same
    for the distribution `reference` (7 values) predicted for every image, summed: 3 for the reference
    itself. The reference's distances are computed once, for every prediction scored."""
    distances = (metrics.kl_divergence, metrics.chebyshev, lambda u, v: 1 - metrics.bhattacharyya(u, v))
    baseline = np.broadcast_to(reference, true.shape)
    scales = [max(float(distance(true, baseline).mean()), 1e-12) for distance in distances]
    return lambda predicted: float(sum(distance(true, predicted).mean() / scale
                                       for distance, scale in zip(distances, scales)))


def choose_power_and_clip(true: np.ndarray, average: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """The power of `POWER_GRID` and the floor of `metrics.CLIP_GRID` with the lowest `relative_distance` on
    (validation) `true`, relative to the train mean `reference`; ties go to the power nearest 1, then to
    the lower floor."""
    score = relative_distance(true, reference)
    scores = [(score(metrics.clip_distribution(metrics.sharpen(average, power), floor)), abs(power - 1), power, floor)
              for power in POWER_GRID for floor in metrics.CLIP_GRID]
    _, _, power, floor = min(scores)
    return float(power), float(floor)
