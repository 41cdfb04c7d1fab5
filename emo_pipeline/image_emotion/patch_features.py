"""Patch features learned from the pictures without labels: single-layer k-means (Coates, Lee and Ng,
"An analysis of single-layer networks in unsupervised feature learning", AISTATS 2011).

Not the paper's method, and nothing pretrained: the dictionary is learned from the training pictures of
one split, so it belongs to that split (the test pictures take part in no choice). For each picture
size of `PatchFeatureConfig`:

- every picture is decoded as every image model's input is (`image_data.load_rgb`: squashed to a
  square, bilinear) at the largest size, then resized to the others (`models.patch_mlp.resized`),
  RGB values 0-255;
- `samples` random patches of `patch` x `patch` px from the training pictures, each flattened in
  (channel, row, column) order, its mean removed and divided by sqrt(variance + `contrast_epsilon`),
  then ZCA-whitened: W = V diag(1 / sqrt(e + `whitening_epsilon`)) V^T from the eigenvalues e and
  vectors V of their covariance;
- scikit-learn's `MiniBatchKMeans` on the whitened patches: `centroids` centroids;
- every picture is encoded by `models.patch_mlp.PatchEncoder` (triangle activations at every patch
  position, summed over the four quadrants). Columns `patch<size>_q<quadrant>_c<centroid>`:
  4 x `centroids` per size.
- with `mirrored`, every picture's mirror image is encoded too: these columns are not
  mirror-symmetric (a patch and its mirror image fall on different centroids, the quadrants swap),
  so a mirror image is one more example to train on and another view to average a prediction over.

The encoders are torch modules so that a served model (`image_emotion.patch_mlp`) encodes a new
image with the very code that encoded the training pictures. docs/models.md ("The patch network")
gives what these features did on the real Emotion6 and what they cost.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from emo_pipeline.image_emotion.image_data import decode_all, load_rgb, normalise
from emo_pipeline.models.patch_mlp import PatchEncoder, pixels, resized


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
    kmeans_batch: int = 4096                 # MiniBatchKMeans batch_size
    contrast_epsilon: float = 10.0           # added to each patch's variance (values 0-255)
    whitening_epsilon: float = 0.1           # added to the covariance's eigenvalues
    dictionary_seed: int = 0                 # size i's patches and k-means draw from dictionary_seed + i

    def __post_init__(self) -> None:
        if len(self.sizes) != len(self.patch_sizes) or not self.sizes:
            raise ValueError("give one patch size per picture size, and at least one size")
        if any(not 1 <= p < s for s, p in zip(self.sizes, self.patch_sizes)):
            raise ValueError(f"each patch must be smaller than its picture: sizes {self.sizes}, "
                             f"patches {self.patch_sizes}")
        if self.centroids < 1 or self.samples < self.centroids:
            raise ValueError("centroids must be at least 1 and samples at least as many")


def load_pictures(paths: Sequence[str | os.PathLike], size: int, workers: int = 2) -> torch.Tensor:
    """(N, 3, size, size) float32 RGB values 0-255, decoded and normalised as an image model's input
    (`image_data.load_rgb`, `image_data.normalise`), then back to pixel values as `PatchMLP` does."""
    return pixels(normalise(decode_all(paths, load_rgb, size, workers)))


def normalised(patches: np.ndarray, contrast_epsilon: float) -> np.ndarray:
    """Each row (a flattened patch) minus its mean, divided by sqrt(its variance + contrast_epsilon)."""
    centred = patches - patches.mean(axis=1, keepdims=True)
    return centred / np.sqrt(patches.var(axis=1, keepdims=True) + contrast_epsilon)


def fit_encoder(pictures: np.ndarray | torch.Tensor, patch: int, config: PatchFeatureConfig,
                seed: int) -> PatchEncoder:
    """The encoder of one size: whitening and centroids from random patches of `pictures` ((N, 3, S, S),
    RGB 0-255; the training pictures only)."""
    from sklearn.cluster import MiniBatchKMeans

    pictures = np.asarray(pictures, np.float32)
    rng = np.random.default_rng(seed)
    count, size = len(pictures), pictures.shape[-1]
    positions = size - patch + 1
    which = rng.integers(0, count, config.samples)
    rows, columns = rng.integers(0, positions, config.samples), rng.integers(0, positions, config.samples)
    sampled = np.stack([pictures[i, :, r:r + patch, c:c + patch].reshape(-1) for i, r, c in zip(which, rows, columns)])
    patches = normalised(sampled, config.contrast_epsilon)
    mean = patches.mean(axis=0)
    centred = patches - mean
    eigenvalues, vectors = np.linalg.eigh(np.cov(centred, rowvar=False))
    whitening = (vectors / np.sqrt(eigenvalues + config.whitening_epsilon)) @ vectors.T
    kmeans = MiniBatchKMeans(config.centroids, batch_size=config.kmeans_batch, n_init=1, max_iter=config.passes,
                             random_state=seed).fit(centred @ whitening)
    encoder = PatchEncoder(size, patch, config.centroids, config.contrast_epsilon)
    encoder.load_state_dict({"mean": torch.as_tensor(mean, dtype=torch.float32),
                             "whitening": torch.as_tensor(whitening, dtype=torch.float32),
                             "centroids": torch.as_tensor(kmeans.cluster_centers_, dtype=torch.float32)})
    return encoder


def feature_names(size: int, centroids: int) -> list[str]:
    return [f"patch{size}_q{q}_c{k}" for q in range(4) for k in range(centroids)]


@dataclass
class PatchFeatures:
    table: pd.DataFrame              # image_key and the patch columns of every picture
    mirrored: pd.DataFrame | None    # the same for each picture's mirror image, when asked for
    encoders: list[PatchEncoder]     # one per picture size, on the CPU


def patch_feature_table(image_keys: Sequence[str], paths: Sequence[str | os.PathLike], train: np.ndarray,
                        config: PatchFeatureConfig = PatchFeatureConfig(), *, mirrored: bool = False,
                        workers: int = 2, device: torch.device | str = "cpu",
                        log: Callable[[str], None] = lambda line: None) -> PatchFeatures:
    """`image_key` and the patch columns of every picture (and of its mirror image when `mirrored`), with
    encoders learned from the pictures where `train` (a boolean mask in the same order) is true.

    A mirror image is the decoded picture flipped left to right, then resized, as `models.MirrorAveraged`
    flips a served model's input. The dictionaries are learned from the pictures as they are.
    """
    train = np.asarray(train, bool)
    if not train.any():
        raise ValueError("no training picture to learn the patch dictionary from")
    began = time.perf_counter()
    largest = load_pictures(paths, max(config.sizes), workers)
    log(f"patch features: {len(largest)} pictures decoded in {time.perf_counter() - began:.0f} s")
    views = {"table": largest, "mirrored": largest.flip(-1)} if mirrored else {"table": largest}
    columns: dict[str, list[pd.DataFrame]] = {view: [pd.DataFrame({"image_key": list(image_keys)})] for view in views}
    encoders = []
    for number, (size, patch) in enumerate(zip(config.sizes, config.patch_sizes)):
        began = time.perf_counter()
        sized = {view: resized(full, size) for view, full in views.items()}
        encoder = fit_encoder(sized["table"][torch.from_numpy(train)], patch, config,
                              seed=config.dictionary_seed + number)
        fitted = time.perf_counter() - began
        encoder = encoder.to(device)
        for view, pictures in sized.items():
            with torch.inference_mode():
                values = encoder(pictures.to(device)).cpu().numpy()
            columns[view].append(pd.DataFrame(values, columns=feature_names(size, config.centroids)))
        encoders.append(encoder.cpu())
        log(f"patch features at {size} px: {config.centroids} centroids of {patch} x {patch} patches learned from "
            f"{int(train.sum())} pictures in {fitted:.0f} s, {len(largest)} pictures encoded"
            f"{' with their mirror images' if mirrored else ''} in {time.perf_counter() - began - fitted:.0f} s")
    tables = {view: pd.concat(parts, axis=1) for view, parts in columns.items()}
    return PatchFeatures(table=tables["table"], mirrored=tables.get("mirrored"), encoders=encoders)
