"""The gradient-boosted feature model: beats the train mean on validation, keeps for each emotion the
iterations of its lowest validation error, never looks at the test split, and saves for `predict`."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emo_pipeline.core.emotions import EMOTIONS, PROB_COLUMNS
from emo_pipeline.image_emotion.feature_gbm import FeatureGBMConfig, fit_feature_gbm
from emo_pipeline_tests.conftest import (
    assert_beats_the_train_mean_and_predicts_every_image,
    feature_tables,
    saved_and_reloaded_predictions,
    with_random_labels,
)

SMALL = FeatureGBMConfig(max_iter=120, min_samples_leaf=10, max_features=0.5)


def _feature_world(n: int = 360, features: int = 10, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Features and distributions that depend on them through thresholds and an interaction (what trees find)."""
    rng = np.random.default_rng(seed)
    values = rng.uniform(0, 1, (n, features))
    logits = np.zeros((n, 7))
    logits[:, 0] = 2.5 * (values[:, 0] > 0.6)
    logits[:, 3] = 2.0 * ((values[:, 1] > 0.5) & (values[:, 2] < 0.5))
    logits[:, 4] = 3.0 * values[:, 3] ** 2
    logits[:, 6] = 1.5 * (values[:, 4] < 0.3)
    logits += rng.normal(0, 0.3, logits.shape)
    return feature_tables(values, logits, seed)


@pytest.fixture(scope="module")
def world() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return _feature_world()


@pytest.fixture(scope="module")
def fitted(world):
    return fit_feature_gbm(*world, SMALL)


def test_gbm_beats_the_train_mean_on_validation_and_predicts_distributions(world, fitted):
    table, _, split = world
    assert_beats_the_train_mean_and_predicts_every_image(fitted, table, split)
    values = fitted.predictions[list(PROB_COLUMNS)].to_numpy()
    assert (values >= 0).all() and (fitted.clip == 0 or (values > 0).all())


def test_each_emotion_keeps_the_iterations_of_its_lowest_validation_error(world, fitted):
    table, labels, split = world
    val_keys = split.loc[split["split"] == "val", "image_key"]
    X = table.set_index("image_key").loc[val_keys]
    Y = labels.set_index("image_key").loc[val_keys, list(PROB_COLUMNS)].to_numpy()
    assert fitted.val_curves.shape == (SMALL.max_iter, 7)
    for j, emotion in enumerate(EMOTIONS):
        kept = fitted.iterations[emotion]
        assert kept == int(np.argmin(fitted.val_curves[:, j])) + 1
        booster = fitted.model.estimators_[j]
        assert booster.n_iter_ == kept
        # The served booster is the prefix of the long fit that was scored: same validation error.
        assert np.mean((booster.predict(X) - Y[:, j]) ** 2) == pytest.approx(fitted.val_curves[kept - 1, j], rel=1e-12)
    row = fitted.selection.set_index("emotion").loc["anger"]
    assert row["val_mse"] <= row["val_mse_at_max_iter"] and row["val_mse"] < row["val_mse_train_mean"]


def test_the_test_labels_change_no_fitted_model(world, fitted):
    table, labels, split = world
    again = fit_feature_gbm(table, with_random_labels(labels, split, "test", seed=7), split, SMALL)
    assert again.iterations == fitted.iterations and again.clip == fitted.clip
    pd.testing.assert_frame_equal(again.predictions, fitted.predictions)
    np.testing.assert_array_equal(again.model.predict(table[fitted.feature_columns]),
                                  fitted.model.predict(table[fitted.feature_columns]))
    assert again.scores["val"] == fitted.scores["val"] and again.scores["test"] != fitted.scores["test"]

    # The comparison can fail: the same change to the training labels gives another model.
    changed = with_random_labels(labels, split, "train", seed=7)
    other = fit_feature_gbm(table, changed, split, SMALL)
    assert not np.allclose(other.predictions[list(PROB_COLUMNS)], fitted.predictions[list(PROB_COLUMNS)])


def test_the_saved_model_and_floor_reproduce_the_predictions(world, fitted, tmp_path: Path):
    again = saved_and_reloaded_predictions(fitted, world[0], "feature_gbm", tmp_path)
    np.testing.assert_allclose(again, fitted.predictions[list(PROB_COLUMNS)].to_numpy(), atol=1e-12)


def test_bad_settings_and_splits_are_refused(world):
    table, labels, split = world
    with pytest.raises(ValueError, match="max_features"):
        FeatureGBMConfig(max_features=0.0)
    with pytest.raises(ValueError, match="clip_grid"):
        FeatureGBMConfig(clip_grid=(0.2,))
    with pytest.raises(ValueError, match="val split"):
        fit_feature_gbm(table, labels, split.assign(split="train"), SMALL)
