"""Patch features learned without labels: the encoding against a computation by hand, the whitening,
and a dictionary that only the training pictures shape."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emo_pipeline.image_emotion.patch_features import (
    PatchDictionary,
    PatchFeatureConfig,
    encode,
    fit_dictionary,
    patch_feature_table,
)


def test_encoding_matches_the_definition_computed_patch_by_patch():
    rng = np.random.default_rng(0)
    picture = rng.uniform(0, 255, (9, 9, 3)).astype(np.float32)
    patch, dims, centroids = 3, 27, 5
    basis = rng.normal(size=(dims, dims))
    whitening = (basis @ basis.T / dims).astype(np.float32)  # symmetric, like a ZCA matrix
    dictionary = PatchDictionary(size=9, patch=patch, mean=rng.normal(size=dims).astype(np.float32),
                                 whitening=whitening, centroids=rng.normal(size=(centroids, dims)).astype(np.float32),
                                 contrast_epsilon=10.0)
    positions = 9 - patch + 1  # 7: quadrants split rows and columns at 3
    expected = np.zeros((4, centroids))
    for row in range(positions):
        for column in range(positions):
            values = picture[row:row + patch, column:column + patch, :].astype(np.float64).reshape(-1)
            values = (values - values.mean()) / np.sqrt(values.var() + 10.0)
            whitened = whitening.astype(np.float64) @ (values - dictionary.mean)
            z = np.array([np.linalg.norm(whitened - c) for c in dictionary.centroids.astype(np.float64)])
            quadrant = 2 * (row >= 3) + (column >= 3)
            expected[quadrant] += np.maximum(0, z.mean() - z)
    np.testing.assert_allclose(encode(picture[None], dictionary)[0], expected.reshape(-1), rtol=1e-4, atol=1e-3)


def test_whitened_training_patches_are_decorrelated_with_unit_variance():
    rng = np.random.default_rng(1)
    # Each pixel shares half its noise with its right and lower neighbours: correlated patches.
    noise = rng.normal(size=(60, 17, 17, 3))
    pictures = noise[:, 1:, 1:] + noise[:, :-1, 1:] + noise[:, 1:, :-1]
    pictures = (128 + 30 * pictures).astype(np.float32)
    config = PatchFeatureConfig(sizes=(16,), patch_sizes=(4,), centroids=8, samples=60_000, whitening_epsilon=1e-6)
    dictionary = fit_dictionary(pictures, 4, config, seed=0)
    every = np.lib.stride_tricks.sliding_window_view(pictures, (4, 4, 3), axis=(1, 2, 3)).reshape(-1, 48)
    every = (every - every.mean(axis=1, keepdims=True)) / np.sqrt(every.var(axis=1, keepdims=True) + 10.0)
    raw = np.linalg.eigvalsh(np.cov(every, rowvar=False))
    eigenvalues = np.linalg.eigvalsh(np.cov((every - dictionary.mean) @ dictionary.whitening, rowvar=False))
    # Each normalised patch sums to 0, so one direction has no variance; the rest come out white.
    assert raw[1:].max() / raw[1:].min() > 5 and eigenvalues[0] < 1e-3
    np.testing.assert_allclose(eigenvalues[1:], 1.0, atol=0.1)  # sampling error of the fit
    assert dictionary.centroids.shape == (8, 48)


def _write_pictures(folder: Path, count: int, seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_only_the_training_pictures_shape_the_dictionary(tmp_path: Path):
    paths = _write_pictures(tmp_path, 12, seed=2)
    keys = [p.stem for p in paths]
    train = np.arange(12) < 8
    config = PatchFeatureConfig(sizes=(12, 16), patch_sizes=(3, 4), centroids=6, samples=2000, passes=5)
    table, dictionaries = patch_feature_table(keys, paths, train, config)
    assert table.shape == (12, 1 + 2 * 4 * 6) and list(table["image_key"]) == keys
    assert [d.size for d in dictionaries] == [12, 16]
    assert (table.drop(columns="image_key").to_numpy() >= 0).all()
    # Other pixels in a picture outside train change its own row and nothing else.
    Image.fromarray(np.full((20, 24, 3), 128, np.uint8)).save(paths[10])
    changed, _ = patch_feature_table(keys, paths, train, config)
    same = [k for k in keys if k != "10"]
    np.testing.assert_array_equal(changed.set_index("image_key").loc[same].to_numpy(),
                                  table.set_index("image_key").loc[same].to_numpy())
    assert not np.array_equal(changed.iloc[10, 1:].to_numpy(), table.iloc[10, 1:].to_numpy())
    # ... while a training picture's pixels change the dictionary, so every row.
    Image.fromarray(np.full((20, 24, 3), 128, np.uint8)).save(paths[0])
    retrained, _ = patch_feature_table(keys, paths, train, config)
    assert not np.array_equal(retrained.iloc[5, 1:].to_numpy(), changed.iloc[5, 1:].to_numpy())


def test_settings_that_cannot_work_are_refused():
    with pytest.raises(ValueError, match="one patch size per picture size"):
        PatchFeatureConfig(sizes=(32, 64), patch_sizes=(6,))
    with pytest.raises(ValueError, match="smaller than its picture"):
        PatchFeatureConfig(sizes=(8,), patch_sizes=(8,))
    with pytest.raises(ValueError, match="no training picture"):
        patch_feature_table(["a"], ["a.png"], np.array([False]))
