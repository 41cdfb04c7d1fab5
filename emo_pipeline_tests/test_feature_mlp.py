"""The feature network: beats the train mean on validation, serves its members as one scikit-learn
network with their mean logits, keeps each member's best validation epoch, learns from the training
images' auxiliary targets, never looks at the test split, and saves for `predict`."""

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emo_pipeline.core.emotions import EMOTIONS, PROB_COLUMNS
from emo_pipeline.image_emotion.feature_mlp import FeatureMLPConfig, _served_network, auxiliary_targets, fit_feature_mlp
from emo_pipeline_tests.conftest import (
    assert_beats_the_train_mean_and_predicts_every_image,
    feature_tables,
    saved_and_reloaded_predictions,
    with_random_labels,
)

SMALL = FeatureMLPConfig(hidden=32, epochs=40, members=2, batch_size=32, max_lr=5e-3)


@pytest.fixture(scope="module")
def world() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Distributions that depend smoothly on the features, with valence, arousal and a keyword that do
    too; the first four columns are histogram bins (named as the joint HSV histogram's), which the
    network takes the square roots of."""
    rng = np.random.default_rng(0)
    values = rng.uniform(0, 1, (400, 10))
    logits = np.zeros((400, 7))
    logits[:, 0] = 3.0 * values[:, 0] - 1.5 * values[:, 5]
    logits[:, 2] = 2.5 * np.sqrt(values[:, 1] * values[:, 6])
    logits[:, 4] = 3.0 * (values[:, 2] - 0.5) ** 2 * 4
    logits[:, 6] = 2.0 * values[:, 7]
    logits += rng.normal(0, 0.3, logits.shape)
    table, labels, split = feature_tables(values, logits, seed=0)
    labels["valence"] = 1 + 8 * values[:, 3]
    labels["arousal"] = 1 + 8 * values[:, 8] * values[:, 9]
    labels["keyword"] = [EMOTIONS[i] for i in (logits[:, :6] + rng.normal(0, 1, (400, 6))).argmax(axis=1)]
    names = {f"f{j}": f"hsvjoint_{j}" for j in range(4)}
    return table.rename(columns=names), labels, split


@pytest.fixture(scope="module")
def fitted(world):
    return fit_feature_mlp(*world, SMALL)


def test_the_network_beats_the_train_mean_on_validation_and_predicts_distributions(world, fitted):
    table, _, split = world
    assert_beats_the_train_mean_and_predicts_every_image(fitted, table, split)
    assert (fitted.predictions[list(PROB_COLUMNS)].to_numpy() > 0).all()
    # The histogram columns go through their square roots; the others as they are.
    roots = fitted.model.named_steps["roots"]
    assert roots.transformers_[0][2] == [f"hsvjoint_{j}" for j in range(4)]
    first = table[fitted.feature_columns].head(3)
    np.testing.assert_allclose(roots.transform(first)[:, :4], np.sqrt(first.iloc[:, :4].to_numpy()))


def test_the_served_network_gives_the_members_normalised_geometric_mean():
    rng = np.random.default_rng(3)
    members = [{"w1": rng.normal(size=(5, 6)), "b1": rng.normal(size=5),
                "w2": rng.normal(size=(7, 5)), "b2": rng.normal(size=7)} for _ in range(3)]
    Z = rng.normal(size=(20, 6))

    def softmax(logits):
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    each = [softmax(np.maximum(Z @ m["w1"].T + m["b1"], 0) @ m["w2"].T + m["b2"]) for m in members]
    geometric = np.prod(each, axis=0) ** (1 / 3)
    expected = geometric / geometric.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(_served_network(members, 6).predict(Z), expected, rtol=1e-10)


def test_each_member_keeps_its_best_validation_epoch(fitted):
    assert fitted.val_curves.shape == (SMALL.epochs, SMALL.members)
    for member, row in fitted.selection.iterrows():
        curve = fitted.val_curves[:, member]
        assert row["epoch_kept"] == fitted.epochs_kept[member] == int(np.argmin(curve)) + 1
        assert row["val_kl"] == curve.min() <= row["val_kl_last_epoch"]
    assert fitted.selection["seed"].nunique() == SMALL.members


def test_the_test_labels_change_no_fitted_model(world, fitted):
    table, labels, split = world
    again = fit_feature_mlp(table, with_random_labels(labels, split, "test", seed=7), split, SMALL)
    assert again.epochs_kept == fitted.epochs_kept and again.clip == fitted.clip
    pd.testing.assert_frame_equal(again.predictions, fitted.predictions)
    assert again.scores["val"] == fitted.scores["val"] and again.scores["test"] != fitted.scores["test"]

    # The comparison can fail: the same change to the training labels gives another model.
    changed = with_random_labels(labels, split, "train", seed=7)
    other = fit_feature_mlp(table, changed, split, SMALL)
    assert not np.allclose(other.predictions[list(PROB_COLUMNS)], fitted.predictions[list(PROB_COLUMNS)])


def test_the_auxiliary_targets_are_the_training_images_standardised_and_shape_the_network(world, fitted):
    table, labels, split = world
    train_keys = split.loc[split["split"] == "train", "image_key"].to_numpy()
    targets = auxiliary_targets(labels, train_keys)
    rows = labels.set_index("image_key").loc[train_keys]
    valence = rows["valence"].to_numpy()
    np.testing.assert_allclose(targets.valence_arousal[:, 0], (valence - valence.mean()) / valence.std())
    assert targets.keywords == sorted(set(rows["keyword"]))
    assert [targets.keywords[i] for i in targets.keyword] == rows["keyword"].tolist()

    # Other valence, arousal and keywords for the training images, with the same distributions: another
    # network. Without the auxiliary targets the labels need no such columns.
    changed = with_random_labels(labels, split, "train", seed=7, columns="auxiliary")
    other = fit_feature_mlp(table, changed, split, SMALL)
    assert not np.allclose(other.predictions[list(PROB_COLUMNS)], fitted.predictions[list(PROB_COLUMNS)])
    without = dataclasses.replace(SMALL, auxiliary_weight=0.0)
    plain = fit_feature_mlp(table, labels[["image_key", *PROB_COLUMNS]], split, without)
    pd.testing.assert_frame_equal(plain.predictions, fit_feature_mlp(table, changed, split, without).predictions)
    with pytest.raises(ValueError, match="no valence, arousal, keyword column.*auxiliary_weight"):
        fit_feature_mlp(table, labels[["image_key", *PROB_COLUMNS]], split, SMALL)


def test_the_saved_model_and_floor_reproduce_the_predictions(world, fitted, tmp_path: Path):
    again = saved_and_reloaded_predictions(fitted, world[0], "feature_mlp", tmp_path)
    np.testing.assert_allclose(again, fitted.predictions[list(PROB_COLUMNS)].to_numpy(), atol=1e-12)


def test_bad_settings_and_splits_are_refused(world):
    table, labels, split = world
    with pytest.raises(ValueError, match="dropout"):
        FeatureMLPConfig(dropout=1.0)
    with pytest.raises(ValueError, match="clip_grid"):
        FeatureMLPConfig(clip_grid=(0.2,))
    with pytest.raises(ValueError, match="auxiliary_weight"):
        FeatureMLPConfig(auxiliary_weight=-1.0)
    with pytest.raises(ValueError, match="val split"):
        fit_feature_mlp(table, labels, split.assign(split="train"), SMALL)
