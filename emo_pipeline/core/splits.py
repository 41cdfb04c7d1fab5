"""Seeded, stratified train/validation/test splits with exact totals.

Sizes follow the global fractions exactly (1980 images at 70/15/15 give 1386/297/297) and each
class gets its share by largest remainder, so small classes still appear in every split they can.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")


def _apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """Split `total` into integers proportional to `weights` (largest remainder, ties by order)."""
    ideal = total * weights / weights.sum()
    counts = np.floor(ideal).astype(int)
    leftover = total - counts.sum()
    order = np.argsort(-(ideal - counts), kind="stable")
    counts[order[:leftover]] += 1
    return counts


def stratified_split(
    keys: Sequence[str],
    labels: Sequence[str],
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.70, 0.15, 0.15),
) -> pd.DataFrame:
    """Assign each key to train/val/test, stratified by label; same inputs and seed, same split.

    Returns a DataFrame with columns `image_key`, `split` in the order of `keys`.
    """
    keys = np.asarray(keys, dtype=object)
    labels = np.asarray(labels, dtype=object)
    if len(keys) != len(labels):
        raise ValueError(f"{len(keys)} keys but {len(labels)} labels")
    if len(set(keys)) != len(keys):
        raise ValueError("keys must be unique")
    if not np.isclose(sum(fractions), 1.0) or min(fractions) < 0:
        raise ValueError(f"fractions must be non-negative and sum to 1, got {fractions}")
    n = len(keys)
    n_val, n_test = (int(round(n * f)) for f in fractions[1:])

    classes, class_sizes = np.unique(labels.astype(str), return_counts=True)
    val_per_class = _apportion(n_val, class_sizes.astype(float))
    test_per_class = _apportion(n_test, class_sizes.astype(float))

    rng = np.random.default_rng(seed)
    # Sort keys first so the split does not depend on the order the caller happened to pass them in.
    order = np.argsort(keys.astype(str), kind="stable")
    assignment = np.empty(n, dtype=object)
    for cls, n_v, n_t in zip(classes, val_per_class, test_per_class):
        members = order[labels[order].astype(str) == cls]
        members = members[rng.permutation(len(members))]
        assignment[members[:n_v]] = "val"
        assignment[members[n_v:n_v + n_t]] = "test"
        assignment[members[n_v + n_t:]] = "train"
    return pd.DataFrame({"image_key": pd.array(keys, dtype="string"),
                         "split": pd.array(assignment, dtype="string")})
