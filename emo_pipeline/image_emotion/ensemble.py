"""An equal-weight average of emotion distribution models, its members chosen on validation.

Averaging models that err differently is the cheapest gain on Emotion6: differences between random
splits are as large as those between methods, and no single from-scratch model wins everywhere.
Members are chosen greedily (start from the best model on validation KL, add whichever model lowers
the average's validation KL most, stop when none does), so a model worse than the others only joins
when it helps. The floor applied to the average is then chosen on validation too; test is never seen.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from emo_pipeline.core import metrics
from emo_pipeline.core.emotions import PROB_COLUMNS


@dataclass
class Ensemble:
    members: list[str]
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


def fit_ensemble(labels: pd.DataFrame, predictions: Mapping[str, pd.DataFrame], *, max_members: int = 5) -> Ensemble:
    """Average the models of `predictions` (name -> image_key, split, prob_*) chosen on validation."""
    if not predictions:
        raise ValueError("an ensemble needs at least one model's predictions")
    keys, arrays = _aligned(predictions)
    truth = keys.merge(labels[["image_key", *PROB_COLUMNS]], on="image_key", how="left")[list(PROB_COLUMNS)]
    true = truth.to_numpy(np.float64)
    val = (keys["split"] == "val").to_numpy()
    if not val.any():
        raise ValueError("no validation images shared by every model")

    alone = {name: _kl(true[val], array[val]) for name, array in arrays.items()}
    members = [min(alone, key=alone.get)]
    best = alone[members[0]]
    while len(members) < max_members:
        trials = {name: _kl(true[val], np.mean([arrays[m][val] for m in [*members, name]], axis=0))
                  for name in arrays if name not in members}
        if not trials or min(trials.values()) >= best:
            break
        name = min(trials, key=trials.get)
        members.append(name)
        best = trials[name]

    average = np.mean([arrays[m] for m in members], axis=0)
    clip = metrics.choose_clip(true[val], average[val])
    combined = metrics.clip_distribution(average, clip)
    frame = pd.concat([keys, pd.DataFrame(combined, columns=list(PROB_COLUMNS))], axis=1)
    return Ensemble(members=members, clip=clip, predictions=frame,
                    val_kl={**alone, "ensemble": _kl(true[val], combined[val])})
