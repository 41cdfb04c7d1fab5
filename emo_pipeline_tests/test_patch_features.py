"""Patch features learned without labels: the encoding against a computation by hand, the whitening,
a dictionary that only the training pictures shape, and `patch_mlp` served as one module that gives
image files the distributions it was fitted to give."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from emo_pipeline.core.emotions import EMOTIONS, PROB_COLUMNS
from emo_pipeline.core.splits import stratified_split
from emo_pipeline.image_emotion.feature_mlp import FeatureMLPConfig
from emo_pipeline.image_emotion.patch_features import (
    PatchFeatureConfig,
    fit_encoder,
    load_pictures,
    patch_feature_table,
)
from emo_pipeline.image_emotion.patch_mlp import PatchMLPConfig, fit_patch_mlp
from emo_pipeline.image_emotion.predict import predict_images
from emo_pipeline.models import PatchEncoder, PatchMLP
from emo_pipeline.models.patch_mlp import resized
from emo_pipeline.storage.model_store import ModelCard, save_torch_model


def test_encoding_matches_the_definition_computed_patch_by_patch():
    rng = np.random.default_rng(0)
    picture = rng.uniform(0, 255, (3, 9, 9)).astype(np.float32)  # channels first, as torch holds pictures
    patch, dims, centroids = 3, 27, 5
    basis = rng.normal(size=(dims, dims))
    whitening = basis @ basis.T / dims  # symmetric, like a ZCA matrix
    mean, centres = rng.normal(size=dims), rng.normal(size=(centroids, dims))
    encoder = PatchEncoder(9, patch, centroids, contrast_epsilon=10.0)
    encoder.load_state_dict({"mean": torch.tensor(mean, dtype=torch.float32),
                             "whitening": torch.tensor(whitening, dtype=torch.float32),
                             "centroids": torch.tensor(centres, dtype=torch.float32)})
    positions = 9 - patch + 1  # 7: quadrants split rows and columns at 3
    expected = np.zeros((4, centroids))
    for row in range(positions):
        for column in range(positions):
            values = picture[:, row:row + patch, column:column + patch].astype(np.float64).reshape(-1)
            values = (values - values.mean()) / np.sqrt(values.var() + 10.0)
            whitened = whitening @ (values - mean)
            z = np.array([np.linalg.norm(whitened - c) for c in centres])
            quadrant = 2 * (row >= 3) + (column >= 3)
            expected[quadrant] += np.maximum(0, z.mean() - z)
    with torch.inference_mode():
        encoded = encoder(torch.from_numpy(picture)[None]).numpy()[0]
    np.testing.assert_allclose(encoded, expected.reshape(-1), rtol=1e-4, atol=1e-3)


def test_whitened_training_patches_are_decorrelated_with_unit_variance():
    rng = np.random.default_rng(1)
    # Each pixel shares half its noise with its right and lower neighbours: correlated patches.
    noise = rng.normal(size=(60, 3, 17, 17))
    pictures = noise[..., 1:, 1:] + noise[..., :-1, 1:] + noise[..., 1:, :-1]
    pictures = (128 + 30 * pictures).astype(np.float32)
    config = PatchFeatureConfig(sizes=(16,), patch_sizes=(4,), centroids=8, samples=60_000, whitening_epsilon=1e-6)
    encoder = fit_encoder(pictures, 4, config, seed=0)
    every = np.lib.stride_tricks.sliding_window_view(pictures, (3, 4, 4), axis=(1, 2, 3)).reshape(-1, 48)
    every = (every - every.mean(axis=1, keepdims=True)) / np.sqrt(every.var(axis=1, keepdims=True) + 10.0)
    raw = np.linalg.eigvalsh(np.cov(every, rowvar=False))
    eigenvalues = np.linalg.eigvalsh(np.cov((every - encoder.mean.numpy()) @ encoder.whitening.numpy(), rowvar=False))
    # Each normalised patch sums to 0, so one direction has no variance; the rest come out white.
    assert raw[1:].max() / raw[1:].min() > 5 and eigenvalues[0] < 1e-3
    np.testing.assert_allclose(eigenvalues[1:], 1.0, atol=0.1)  # sampling error of the fit
    assert encoder.centroids.shape == (8, 48)


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
    features = patch_feature_table(keys, paths, train, config, workers=1)
    table = features.table
    assert table.shape == (12, 1 + 2 * 4 * 6) and list(table["image_key"]) == keys
    assert [e.size for e in features.encoders] == [12, 16] and features.mirrored is None
    assert (table.drop(columns="image_key").to_numpy() >= 0).all()
    # Other pixels in a picture outside train change its own row and nothing else.
    Image.fromarray(np.full((20, 24, 3), 128, np.uint8)).save(paths[10])
    changed = patch_feature_table(keys, paths, train, config, workers=1).table
    same = [k for k in keys if k != "10"]
    np.testing.assert_array_equal(changed.set_index("image_key").loc[same].to_numpy(),
                                  table.set_index("image_key").loc[same].to_numpy())
    assert not np.array_equal(changed.iloc[10, 1:].to_numpy(), table.iloc[10, 1:].to_numpy())
    # ... while a training picture's pixels change the dictionary, so every row.
    Image.fromarray(np.full((20, 24, 3), 128, np.uint8)).save(paths[0])
    retrained = patch_feature_table(keys, paths, train, config, workers=1).table
    assert not np.array_equal(retrained.iloc[5, 1:].to_numpy(), changed.iloc[5, 1:].to_numpy())


def test_the_mirrored_table_encodes_each_pictures_mirror_image(tmp_path: Path):
    paths = _write_pictures(tmp_path, 6, seed=5)
    symmetric = np.random.default_rng(6).integers(0, 256, (20, 12, 3), dtype=np.uint8)
    Image.fromarray(np.concatenate([symmetric, symmetric[:, ::-1]], axis=1)).save(paths[5])  # its own mirror image
    mirror_files = []
    for path in paths[:2]:
        mirror_files.append(tmp_path / f"mirror_{path.name}")
        Image.open(path).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(mirror_files[-1])
    keys = [p.stem for p in paths]
    config = PatchFeatureConfig(sizes=(12, 16), patch_sizes=(3, 4), centroids=6, samples=2000, passes=5)
    features = patch_feature_table(keys, paths, np.arange(6) < 4, config, mirrored=True, workers=1)
    assert list(features.mirrored.columns) == list(features.table.columns)
    assert list(features.mirrored["image_key"]) == keys
    values, mirrored = features.table.iloc[:, 1:].to_numpy(), features.mirrored.iloc[:, 1:].to_numpy()
    assert np.abs(values[0] - mirrored[0]).max() > 1e-2 * np.abs(values[0]).max()  # the columns are not symmetric
    np.testing.assert_allclose(mirrored[5], values[5], rtol=1e-4, atol=1e-3)
    # The mirror image files, encoded as pictures of their own by the same dictionaries, give the mirrored rows.
    largest = load_pictures(mirror_files, 16, workers=1)
    with torch.inference_mode():
        direct = torch.cat([e(resized(largest, e.size)) for e in features.encoders], dim=1).numpy()
    np.testing.assert_allclose(direct, mirrored[:2], rtol=1e-4, atol=1e-3)


def test_settings_that_cannot_work_are_refused():
    with pytest.raises(ValueError, match="one patch size per picture size"):
        PatchFeatureConfig(sizes=(32, 64), patch_sizes=(6,))
    with pytest.raises(ValueError, match="smaller than its picture"):
        PatchFeatureConfig(sizes=(8,), patch_sizes=(8,))
    with pytest.raises(ValueError, match="no training picture"):
        patch_feature_table(["a"], ["a.png"], np.array([False]))
    with pytest.raises(ValueError, match="sqrt_families names hand-made feature families"):
        PatchMLPConfig(network=FeatureMLPConfig(sqrt_families=("lbp",)))


def _coloured_world(root: Path, n: int = 90) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pictures whose stripes' contrast and colour decide their emotion distribution."""
    rng = np.random.default_rng(4)
    rows = []
    for i in range(n):
        colour, contrast = rng.uniform(0, 1, 3), rng.uniform(0, 1)
        logits = np.array([3 * colour[0], colour[1], -colour[2], 3 * contrast, colour[2] * 2, 0.5, 0.0])
        probs = np.exp(logits) / np.exp(logits).sum()
        stripes = np.where(np.arange(24) % 6 < 3, contrast, -contrast)[None, :, None] * 0.4
        pixels = np.clip(colour + stripes + rng.normal(0, 0.05, (24, 24, 3)), 0, 1)
        path = root / f"{i}.png"
        Image.fromarray((pixels * 255).astype(np.uint8)).save(path)
        rows.append({"image_key": f"img/{i}", "image_path": str(path), **dict(zip(PROB_COLUMNS, probs)),
                     "dominant_emotion": EMOTIONS[int(probs.argmax())]})
    labels = pd.DataFrame(rows)
    return labels, stratified_split(labels["image_key"], labels["dominant_emotion"], seed=0)


def test_the_served_patch_network_gives_image_files_its_fitted_distributions_and_ignores_test_labels(tmp_path: Path):
    labels, split = _coloured_world(tmp_path)
    config = PatchMLPConfig(patches=PatchFeatureConfig(sizes=(12, 16), patch_sizes=(3, 4), centroids=12,
                                                       samples=3000, passes=5),
                            network=FeatureMLPConfig(sqrt_families=(), members=2, epochs=30, auxiliary_weight=0),
                            workers=1)
    result = fit_patch_mlp(labels, split, config, log=lambda line: None)
    assert result.scores["val"]["kl"] < result.scores["val_train_mean"]["kl"]
    assert result.options == {"sizes": [12, 16], "patch_sizes": [3, 4], "centroids": 12, "hidden": 2 * 128,
                              "contrast_epsilon": 10.0, "clip_value": 6.0, "square_roots": True}
    # Saved as any torch model of the store, rebuilt from its card alone, fed image files by `predict`.
    # Trained on the mirror images too, it predicts the mean over a picture and its mirror image (flip_tta).
    card = ModelCard(name="patch_mlp", kind="patches", architecture="patch_mlp", size=16, options=result.options,
                     clip=result.clip, flip_tta=config.mirror)
    save_torch_model(tmp_path / "models", card, result.model)
    some = labels.sample(10, random_state=0)
    predicted = predict_images(list(some["image_path"]), "patch_mlp", tmp_path / "models")
    table = result.predictions.set_index("image_key").loc[some["image_key"], list(PROB_COLUMNS)]
    np.testing.assert_allclose(predicted.distributions, table.to_numpy(), atol=1e-5)
    mirror = tmp_path / "mirror.png"
    Image.open(some["image_path"].iloc[0]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(mirror)
    np.testing.assert_allclose(predict_images([mirror], "patch_mlp", tmp_path / "models").distributions,
                               predicted.distributions[:1], atol=1e-5)
    # Those predictions went through the square roots the network was fitted on. A model saved before the
    # option existed (its card has no `square_roots`) takes none.
    images = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        older = PatchMLP(**{k: v for k, v in result.options.items() if k != "square_roots"})
        older.load_state_dict(result.model.state_dict())
        raw = (result.model.features(images) - older.feature_mean) / older.feature_scale
        expected = torch.softmax(older.output(torch.relu(older.hidden(raw.clamp(-6, 6)))), dim=1)
        np.testing.assert_allclose(older(images), expected, atol=1e-6)
    # New test labels: the same dictionaries, epochs, floor and predictions.
    test = labels["image_key"].isin(split.loc[split["split"] == "test", "image_key"])
    relabelled = labels.copy()
    relabelled.loc[test, list(PROB_COLUMNS)] = np.random.default_rng(3).dirichlet(np.ones(7), size=int(test.sum()))
    again = fit_patch_mlp(relabelled, split, config, log=lambda line: None)
    pd.testing.assert_frame_equal(again.predictions, result.predictions)
    assert again.scores["test"] != result.scores["test"]
