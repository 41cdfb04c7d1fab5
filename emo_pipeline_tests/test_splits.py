"""The seeded, stratified 70/15/15 split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emo_pipeline.core.splits import stratified_split
from emo_pipeline.sources.emotion6 import read_emotion6


def test_real_emotion6_split_sizes_and_strata(real_emotion6: Path):
    labels = read_emotion6(real_emotion6, check_images=False).labels
    split = stratified_split(labels["image_key"], labels["dominant_emotion"], seed=0)
    assert split["split"].value_counts().to_dict() == {"train": 1386, "val": 297, "test": 297}
    counts = split.merge(labels, on="image_key").groupby(["dominant_emotion", "split"]).size().unstack()
    class_sizes = labels["dominant_emotion"].value_counts()
    # Each class gets its share of val and test to within one image (largest remainder), train the rest.
    for name, fraction, slack in (("val", 0.15, 1), ("test", 0.15, 1), ("train", 0.70, 2)):
        ideal = class_sizes * fraction
        assert ((counts[name] - ideal.reindex(counts.index)).abs() < slack).all(), name


def test_split_is_seeded_and_independent_of_input_order():
    rng = np.random.default_rng(1)
    keys = [f"k{i}" for i in range(500)]
    labels = rng.choice(["a", "b", "c"], size=500, p=[0.6, 0.3, 0.1])
    first = stratified_split(keys, labels, seed=5).set_index("image_key")["split"]
    reordered = stratified_split(keys[::-1], labels[::-1], seed=5).set_index("image_key")["split"]
    other_seed = stratified_split(keys, labels, seed=6).set_index("image_key")["split"]
    assert first.equals(reordered.loc[first.index])
    assert not first.equals(other_seed)


def test_split_refuses_bad_arguments():
    with pytest.raises(ValueError, match="unique"):
        stratified_split(["a", "a"], ["x", "y"])
    with pytest.raises(ValueError, match="sum to 1"):
        stratified_split(["a", "b"], ["x", "y"], fractions=(0.5, 0.5, 0.5))
