"""Training recipe of the image -> emotion models: output bias at the train mean, the prediction floor
chosen on validation, the small CNN at other sizes; and the feature-based ridge model."""

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from emo_pipeline.core import metrics
from emo_pipeline.core.emotions import EMOTIONS, PROB_COLUMNS
from emo_pipeline.core.profiles import emotion_model_config
from emo_pipeline.core.splits import stratified_split
from emo_pipeline.core.train_loop import TrainConfig
from emo_pipeline.image_emotion.feature_ridge import FeatureRidgeConfig, fit_feature_ridge
from emo_pipeline.image_emotion.feature_splits import predict_distribution
from emo_pipeline.image_emotion.training import (
    EmotionModelConfig,
    builder_options,
    clip_distribution,
    fit_emotion_model,
    init_output_bias,
    output_layer,
)
from emo_pipeline.models import build_model
from emo_pipeline.storage.model_store import ModelCard, load_sklearn_model, save_sklearn_model
from emo_pipeline_tests.conftest import feature_tables

MEAN = np.array([0.05, 0.1, 0.15, 0.3, 0.2, 0.12, 0.08])


def _quiet(_: str) -> None:
    pass


# --- a tiny image data set: the colour of each picture decides its emotion distribution -----------------

def _image_world(root: Path, n: int = 84, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        colour = rng.uniform(0, 1, 3)
        logits = np.array([3 * colour[0], colour[1], -colour[2], 2 * colour[1], colour[2] * 2, 0.5, 0.0])
        probs = np.exp(logits) / np.exp(logits).sum()
        pixels = (np.clip(colour + rng.normal(0, 0.05, (16, 16, 3)), 0, 1) * 255).astype(np.uint8)
        path = root / f"{i}.png"
        Image.fromarray(pixels).save(path)
        rows.append({"image_key": f"img/{i}", "image_path": str(path), **dict(zip(PROB_COLUMNS, probs)),
                     "dominant_emotion": EMOTIONS[int(probs.argmax())]})
    labels = pd.DataFrame(rows)
    split = stratified_split(labels["image_key"], labels["dominant_emotion"], seed=seed)
    return labels, split


@pytest.fixture(scope="module")
def image_world(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame]:
    return _image_world(tmp_path_factory.mktemp("images"))


# --- output bias -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, size", [("small_cnn", 32), ("small_cnn", 64), ("compact_cnn", 64), ("resnet18", 32)])
def test_bias_init_makes_an_untrained_model_predict_the_mean(name: str, size: int) -> None:
    torch.manual_seed(0)
    model, _ = build_model(name, pretrained="none", input_size=size)
    layer = init_output_bias(model, MEAN, weight_scale=0.0)
    assert layer is output_layer(model) and layer.out_features == 7
    with torch.no_grad():
        out = model.eval()(torch.randn(3, 3, size, size))
    np.testing.assert_allclose(out.numpy(), np.tile(MEAN, (3, 1)), atol=1e-6)


def test_bias_init_with_a_weight_scale_keeps_the_inputs_mattering() -> None:
    torch.manual_seed(0)
    model, _ = build_model("small_cnn", pretrained="none")
    before = output_layer(model).weight.detach().clone()
    init_output_bias(model, MEAN, weight_scale=0.5)
    torch.testing.assert_close(output_layer(model).weight.detach(), 0.5 * before)


def test_output_layer_must_give_seven_values() -> None:
    with pytest.raises(ValueError, match="7 outputs"):
        output_layer(torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Softmax(dim=1)))


def test_untrained_fit_predicts_exactly_the_training_mean(image_world, tmp_path: Path) -> None:
    labels, split = image_world
    config = EmotionModelConfig("small_cnn", size=16, loss="kl", training=TrainConfig(epochs=0), clip_grid=(0.0,),
                                workers=1)
    fitted = fit_emotion_model(labels, split, config, tmp_path, log=_quiet)
    train_keys = split.loc[split["split"] == "train", "image_key"]
    mean = labels.set_index("image_key").loc[train_keys, list(PROB_COLUMNS)].to_numpy().mean(axis=0)
    predicted = fitted.predictions[list(PROB_COLUMNS)].to_numpy()
    np.testing.assert_allclose(predicted, np.tile(mean, (len(predicted), 1)), atol=1e-6)
    assert fitted.clip == 0.0 and fitted.options == {"input_size": 16}


def test_the_paper_recipe_starts_from_the_frameworks_initialisation_without_a_floor(image_world, tmp_path: Path):
    labels, split = image_world
    config = EmotionModelConfig("small_cnn", size=16, recipe="paper", training=TrainConfig(epochs=0), workers=1)
    assert (config.augment, config.output_bias, config.clip_grid) == (False, "default", (0.0,))
    fitted = fit_emotion_model(labels, split, config, tmp_path, log=_quiet)
    # Untrained, the model's outputs are its default initialisation's, which depend on the image: not
    # the train mean for every image, as under the improved recipe.
    predicted = fitted.predictions[list(PROB_COLUMNS)].to_numpy()
    assert np.ptp(predicted, axis=0).max() > 1e-4
    torch.manual_seed(config.training.seed)
    reference, _ = build_model("small_cnn", pretrained="none", input_size=16)
    assert torch.equal(output_layer(reference).bias, output_layer(fitted.model).bias.cpu())
    # No floor is tried, so none is applied.
    assert fitted.clip == 0.0 and set(fitted.clip_scores) == {0.0}
    # Nor are the predictions averaged with the mirror images: the improved recipe's addition.
    assert config.flip_tta is False and EmotionModelConfig("small_cnn", size=16).flip_tta is True


# --- the prediction floor ------------------------------------------------------------------------------------

def test_clip_distribution_by_hand() -> None:
    p = np.array([[0.5, 0.5, 0, 0, 0, 0, 0],
                  [0.94, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01]])
    # Row 1: five zeros raised to 0.02, sum 1.1; row 2: six 0.01 raised to 0.02, sum 1.06.
    expected = np.array([[0.5 / 1.1, 0.5 / 1.1, *[0.02 / 1.1] * 5],
                         [0.94 / 1.06, *[0.02 / 1.06] * 6]])
    for given in (p, torch.tensor(p)):
        clipped = clip_distribution(given, 0.02)
        assert type(clipped) is type(given)
        np.testing.assert_allclose(np.asarray(clipped), expected, rtol=1e-12)
        np.testing.assert_allclose(np.asarray(clipped).sum(axis=1), 1.0, rtol=1e-12)
    # Floor 0 only renormalises; a floor at or above 1/7 would erase every prediction and is refused.
    np.testing.assert_allclose(clip_distribution(p * 2, 0.0), p)
    with pytest.raises(ValueError):
        EmotionModelConfig("small_cnn", size=32, clip_grid=(0.0, 0.2))


def test_floor_chosen_on_validation_never_hurts_validation_kl(image_world, tmp_path: Path) -> None:
    labels, split = image_world
    config = EmotionModelConfig("small_cnn", size=16, loss="mse", training=TrainConfig(epochs=2, batch_size=8, lr=1e-3),
                                output_bias="default", workers=1)
    fitted = fit_emotion_model(labels, split, config, tmp_path, log=_quiet)
    scores = fitted.clip_scores
    assert 0.0 in scores and set(config.clip_grid) <= set(scores)
    assert scores[fitted.clip] <= scores[0.0] and scores[fitted.clip] == min(scores.values())
    # The floor that was chosen is the one applied to the predictions, on every split.
    val_true, val_predicted = metrics.split_pairs(labels, fitted.predictions)["val"]
    assert metrics.kl_divergence(val_true, val_predicted).mean() == pytest.approx(scores[fitted.clip], abs=1e-9)
    values = fitted.predictions[list(PROB_COLUMNS)].to_numpy()
    np.testing.assert_allclose(values.sum(axis=1), 1.0, atol=1e-9)
    assert set(fitted.predictions["split"]) == {"train", "val", "test"}


# --- builders ---------------------------------------------------------------------------------------------

def test_small_cnn_at_64_px_builds_and_runs() -> None:
    config = EmotionModelConfig("small_cnn", size=64)
    assert builder_options(config) == {"input_size": 64}
    assert builder_options(EmotionModelConfig("resnet18", size=64)) == {}
    model, _ = build_model("small_cnn", **builder_options(config))
    with torch.no_grad():
        out = model.eval()(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 7)
    torch.testing.assert_close(out.sum(dim=1), torch.ones(2))
    with pytest.raises(ValueError, match="64x64"):
        model(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="at least 32"):
        build_model("resnet18", input_size=16)


# --- feature ridge ----------------------------------------------------------------------------------------

def _feature_world(n: int = 400, features: int = 12, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Skewed positive features (like GLCM contrast) and distributions that depend on them non-linearly."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, features))
    values = np.exp(latent)
    w = rng.normal(size=(features, 7))
    logits = np.tanh(latent) @ w * 0.8 + rng.normal(0, 0.3, (n, 7))
    return feature_tables(values, logits, seed)


def test_feature_ridge_beats_the_train_mean_on_validation(tmp_path: Path) -> None:
    table, labels, split = _feature_world()
    config = FeatureRidgeConfig(alpha_grid=(0.3, 3.0), gamma_factors=(0.3, 1.0))
    result = fit_feature_ridge(table, labels, split, config)
    val, floor = result.scores["val"], result.scores["val_train_mean"]
    assert val["kl"] < 0.8 * floor["kl"] and val["chebyshev"] < 0.9 * floor["chebyshev"]
    assert len(result.selection) == 4 and result.best["alpha"] in (0.3, 3.0)
    assert result.selection["val_kl"].min() == pytest.approx(val["kl"])
    predictions = result.predictions
    assert list(predictions.columns) == ["image_key", "split", *PROB_COLUMNS] and len(predictions) == len(table)
    np.testing.assert_allclose(predictions[list(PROB_COLUMNS)].sum(axis=1), 1.0, atol=1e-9)
    assert (predictions[list(PROB_COLUMNS)].to_numpy() >= 0).all()

    # The pipeline and floor saved for `predict` give the same distributions from raw feature values.
    card = ModelCard(name="feature_ridge", kind="features", architecture="kernel_ridge_rbf", size=0, clip=result.clip)
    save_sklearn_model(tmp_path, card, result.pipeline)
    loaded, loaded_card = load_sklearn_model(tmp_path, "feature_ridge")
    ordered = table.set_index("image_key").loc[predictions["image_key"]]
    again = predict_distribution(loaded, ordered[result.feature_columns], loaded_card.clip)
    np.testing.assert_allclose(again, predictions[list(PROB_COLUMNS)].to_numpy(), atol=1e-9)


def test_feature_ridge_linear_kernel_and_bad_config() -> None:
    table, labels, split = _feature_world(n=200, seed=1)
    result = fit_feature_ridge(table, labels, split, FeatureRidgeConfig(kernel="linear", transform="standard",
                                                                        alpha_grid=(1.0, 10.0)))
    assert len(result.selection) == 2 and np.isnan(result.best["gamma"])
    assert result.scores["val"]["kl"] < result.scores["val_train_mean"]["kl"]
    with pytest.raises(ValueError, match="kernel"):
        FeatureRidgeConfig(kernel="poly")
    with pytest.raises(ValueError, match="validation|val split"):
        fit_feature_ridge(table, labels, split.assign(split="train"))


def _relabel_test(labels: pd.DataFrame, split: pd.DataFrame) -> pd.DataFrame:
    """The same labels with every test image's distribution replaced by a random one."""
    test = labels["image_key"].isin(split.loc[split["split"] == "test", "image_key"])
    changed = labels.copy()
    changed.loc[test, list(PROB_COLUMNS)] = np.random.default_rng(3).dirichlet(np.ones(7), size=int(test.sum()))
    return changed


def test_no_test_label_takes_part_in_the_ridge_or_the_cnn(image_world, tmp_path: Path) -> None:
    """Every choice (weights, epochs, alpha, gamma, floor) is made on train and validation: new test labels
    give the same predictions for every image."""
    table, labels, split = _feature_world()
    config = FeatureRidgeConfig(alpha_grid=(0.3, 3.0), gamma_factors=(0.3, 1.0))
    ridge = [fit_feature_ridge(table, frame, split, config) for frame in (labels, _relabel_test(labels, split))]
    pd.testing.assert_frame_equal(ridge[0].predictions, ridge[1].predictions)
    assert ridge[0].best == ridge[1].best and ridge[0].scores["test"] != ridge[1].scores["test"]

    labels, split = image_world
    small = EmotionModelConfig("small_cnn", size=16, loss="mse", training=TrainConfig(epochs=2, batch_size=8, lr=1e-3),
                               workers=1)
    compact = dataclasses.replace(emotion_model_config("compact_cnn", "demo"), size=16, workers=1,
                                  training=TrainConfig(epochs=2, batch_size=8, lr=2e-3, weight_decay=0.05,
                                                       optimizer="adamw", schedule="onecycle"))
    for config in (small, compact):
        cnn = [fit_emotion_model(frame, split, config, tmp_path / config.model / name, log=_quiet)
               for name, frame in (("as_given", labels), ("relabelled", _relabel_test(labels, split)))]
        pd.testing.assert_frame_equal(cnn[0].predictions, cnn[1].predictions)
        assert cnn[0].clip == cnn[1].clip
