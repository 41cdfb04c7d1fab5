"""Patch features learned from the pictures without labels: single-layer k-means (Coates, Lee and Ng,
"An analysis of single-layer networks in unsupervised feature learning", AISTATS 2011).

Not the paper's method, and nothing pretrained: the dictionary is learned from the training pictures of
one split, so it belongs to that split (the test pictures take part in no choice). For each picture
size of `PatchFeatureConfig`:

- every picture resized to size x size px (the aspect ratio is not kept), RGB values 0-255;
- `samples` random patches of `patch` x `patch` px from the training pictures, each flattened in
  (row, column, channel) order, its mean removed and divided by sqrt(variance + `contrast_epsilon`),
  then ZCA-whitened: W = V diag(1 / sqrt(e + `whitening_epsilon`)) V^T from the eigenvalues e and
  vectors V of their covariance;
- scikit-learn's `MiniBatchKMeans` on the whitened patches: `centroids` centroids;
- a picture is encoded at every patch position (stride 1): z_k, the distance of the whitened patch to
  centroid k, gives the triangle activation max(0, mean_k z_k - z_k); the activations are summed over
  the four quadrants of the positions (rows and columns split at half their count, rounded down).
  Columns `patch<size>_q<quadrant>_c<centroid>`: 4 x `centroids` per size.

docs/models.md ("Patch features learned from the pictures") gives what these features did on the real
Emotion6 and what they cost.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image


@dataclass(frozen=True)
class PatchFeatureConfig:
    # On validation of the real Emotion6, split seed 0 (docs/models.md), 32 and 64 px together did best
    # among 32, 48, 64 or 96 px alone and all three, and quadrants better than a 3 x 3 grid, by gaps
    # close to what another k-means solution moves.
    sizes: tuple[int, ...] = (32, 64)
    patch_sizes: tuple[int, ...] = (6, 8)    # one per size
    centroids: int = 1600
    samples: int = 200_000                   # random training patches per size
    passes: int = 50                         # MiniBatchKMeans max_iter
    batch_size: int = 4096                   # MiniBatchKMeans batch
    contrast_epsilon: float = 10.0           # added to each patch's variance (values 0-255)
    whitening_epsilon: float = 0.1           # added to the covariance's eigenvalues
    seed: int = 0

    def __post_init__(self) -> None:
        if len(self.sizes) != len(self.patch_sizes) or not self.sizes:
            raise ValueError("give one patch size per picture size, and at least one size")
        if any(not 1 <= p < s for s, p in zip(self.sizes, self.patch_sizes)):
            raise ValueError(f"each patch must be smaller than its picture: sizes {self.sizes}, "
                             f"patches {self.patch_sizes}")
        if self.centroids < 1 or self.samples < self.centroids:
            raise ValueError("centroids must be at least 1 and samples at least as many")


@dataclass(frozen=True)
class PatchDictionary:
    """What one size's features are computed with: the whitening and the centroids."""

    size: int
    patch: int
    mean: np.ndarray        # (D,) mean of the normalised training patches, D = patch * patch * 3
    whitening: np.ndarray   # (D, D) symmetric ZCA matrix
    centroids: np.ndarray   # (K, D) in the whitened space
    contrast_epsilon: float


def load_pictures(paths: Sequence[str | os.PathLike], size: int) -> np.ndarray:
    """(N, size, size, 3) float32 RGB values 0-255, each picture resized (bilinear) without keeping its aspect."""
    pictures = np.empty((len(paths), size, size, 3), np.float32)
    for i, path in enumerate(paths):
        with Image.open(path) as im:
            pictures[i] = np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR), np.float32)
    return pictures


def normalised(patches: np.ndarray, contrast_epsilon: float) -> np.ndarray:
    """Each row (a flattened patch) minus its mean, divided by sqrt(its variance + contrast_epsilon)."""
    centred = patches - patches.mean(axis=1, keepdims=True)
    return centred / np.sqrt(patches.var(axis=1, keepdims=True) + contrast_epsilon)


def fit_dictionary(pictures: np.ndarray, patch: int, config: PatchFeatureConfig, seed: int) -> PatchDictionary:
    """The whitening and the centroids of one size, from random patches of `pictures` (training only)."""
    from sklearn.cluster import MiniBatchKMeans

    rng = np.random.default_rng(seed)
    count, size = len(pictures), pictures.shape[1]
    positions = size - patch + 1
    which = rng.integers(0, count, config.samples)
    rows, columns = rng.integers(0, positions, config.samples), rng.integers(0, positions, config.samples)
    sampled = np.stack([pictures[i, r:r + patch, c:c + patch].reshape(-1) for i, r, c in zip(which, rows, columns)])
    patches = normalised(sampled, config.contrast_epsilon)
    mean = patches.mean(axis=0)
    centred = patches - mean
    eigenvalues, vectors = np.linalg.eigh(np.cov(centred, rowvar=False))
    whitening = (vectors / np.sqrt(eigenvalues + config.whitening_epsilon)) @ vectors.T
    kmeans = MiniBatchKMeans(config.centroids, batch_size=config.batch_size, n_init=1, max_iter=config.passes,
                             random_state=seed).fit(centred @ whitening)
    return PatchDictionary(size=size, patch=patch, mean=mean.astype(np.float32),
                           whitening=whitening.astype(np.float32),
                           centroids=kmeans.cluster_centers_.astype(np.float32),
                           contrast_epsilon=config.contrast_epsilon)


def encode(pictures: np.ndarray, dictionary: PatchDictionary) -> np.ndarray:
    """(N, 4 K) float32: each picture's triangle activations summed over the four quadrants."""
    patch, centroids = dictionary.patch, dictionary.centroids
    positions = pictures.shape[1] - patch + 1
    half = positions // 2
    squared_centroids = (centroids * centroids).sum(axis=1)
    out = np.empty((len(pictures), 4 * len(centroids)), np.float32)
    for i, picture in enumerate(pictures):
        patches = sliding_window_view(picture, (patch, patch, 3))[:, :, 0].reshape(-1, patch * patch * 3)
        whitened = (normalised(patches, dictionary.contrast_epsilon) - dictionary.mean) @ dictionary.whitening
        squared = (whitened * whitened).sum(axis=1, keepdims=True) - 2 * whitened @ centroids.T + squared_centroids
        distances = np.sqrt(np.maximum(squared, 0))
        active = np.maximum(0, distances.mean(axis=1, keepdims=True) - distances).reshape(positions, positions, -1)
        out[i] = np.concatenate([active[:half, :half].sum(axis=(0, 1)), active[:half, half:].sum(axis=(0, 1)),
                                 active[half:, :half].sum(axis=(0, 1)), active[half:, half:].sum(axis=(0, 1))])
    return out


def patch_feature_table(image_keys: Sequence[str], paths: Sequence[str | os.PathLike], train: np.ndarray,
                        config: PatchFeatureConfig = PatchFeatureConfig(),
                        ) -> tuple[pd.DataFrame, list[PatchDictionary]]:
    """`image_key` and the patch columns of every picture, with dictionaries learned from the pictures
    where `train` (a boolean mask in the same order) is true; and those dictionaries."""
    train = np.asarray(train, bool)
    if not train.any():
        raise ValueError("no training picture to learn the patch dictionary from")
    columns, dictionaries = [pd.DataFrame({"image_key": list(image_keys)})], []
    for number, (size, patch) in enumerate(zip(config.sizes, config.patch_sizes)):
        pictures = load_pictures(paths, size)
        dictionary = fit_dictionary(pictures[train], patch, config, seed=config.seed + number)
        values = encode(pictures, dictionary)
        names = [f"patch{size}_q{q}_c{k}" for q in range(4) for k in range(config.centroids)]
        columns.append(pd.DataFrame(values, columns=names))
        dictionaries.append(dictionary)
    return pd.concat(columns, axis=1), dictionaries
