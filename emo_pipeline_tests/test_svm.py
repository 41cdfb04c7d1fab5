"""The SVM on hand-made features: beats the majority class where the signal is planted, chooses on
validation only, repeats itself; the majority baseline and the accuracy table by hand."""


import numpy as np
import pandas as pd
import pytest

from emo_pipeline.core.splits import stratified_split
from emo_pipeline.image_emotion.dominant import accuracy_table, labelled_split, majority_class, majority_predictions
from emo_pipeline.image_emotion.features import FeatureConfig, feature_table
from emo_pipeline.image_emotion.svm import SVMConfig, train_dominant_svm, training_table
from emo_pipeline.sources.emotion6 import read_emotion6

CONFIG = FeatureConfig(glcm_size=64, glcm_levels=16, glcm_distances=(1, 2), colour_size=48, colour_bins=10)
GRID = SVMConfig(c_grid=(1.0, 10.0, 100.0), gamma_factors=(0.03, 0.3))


@pytest.fixture(scope="module")
def table(world_factory) -> pd.DataFrame:
    out = world_factory(seed=5)
    labels = read_emotion6(out / "Emotion6").labels
    split = stratified_split(labels["image_key"], labels["dominant_emotion"], seed=0)
    features = feature_table(zip(labels["image_key"], labels["image_path"]), CONFIG, workers=1)
    assert not features.rejected and len(features.features) == len(labels) == 240
    return training_table(features.features, labels, split)


def test_svm_beats_the_majority_class_on_validation(table: pd.DataFrame):
    result = train_dominant_svm(table, CONFIG.columns(), GRID)
    assert result.accuracy["val"] > result.majority_accuracy["val"] + 0.15
    assert result.accuracy["test"] > result.majority_accuracy["test"]
    # The chosen model is the grid's best on validation, and it is the pipeline returned.
    assert result.accuracy["val"] == pytest.approx(result.selection["val_accuracy"].max())
    assert len(result.selection) == len(GRID.c_grid) * len(GRID.gamma_factors)
    val = table[table["split"] == "val"]
    assert (result.pipeline.predict(val[CONFIG.columns()]) == val["true"].to_numpy()).mean() == pytest.approx(
        result.accuracy["val"])
    # The baseline is train's majority class, scored like the model.
    assert result.majority_class == majority_class(table.loc[table["split"] == "train", "true"])
    assert result.majority_accuracy["val"] == pytest.approx((val["true"] == result.majority_class).mean())
    predictions = result.predictions
    assert list(predictions.columns) == ["image_key", "split", "true", "predicted"]
    assert sorted(predictions["image_key"]) == sorted(table["image_key"])


def test_same_table_same_model_and_predictions(table: pd.DataFrame):
    first = train_dominant_svm(table, CONFIG.columns(), GRID)
    second = train_dominant_svm(table.sample(frac=1.0, random_state=3).reset_index(drop=True)
                                .sort_values("image_key").reset_index(drop=True), CONFIG.columns(), GRID)
    assert first.best == second.best
    merged = first.predictions.merge(second.predictions, on=["image_key", "split", "true"])
    assert len(merged) == len(table) and (merged["predicted_x"] == merged["predicted_y"]).all()


def test_model_selection_never_looks_at_test_labels(table: pd.DataFrame):
    baseline = train_dominant_svm(table, CONFIG.columns(), GRID)
    scrambled = table.copy()
    test_rows = scrambled["split"] == "test"
    scrambled.loc[test_rows, "true"] = np.random.default_rng(0).permutation(scrambled.loc[test_rows, "true"].to_numpy())
    again = train_dominant_svm(scrambled, CONFIG.columns(), GRID)
    assert again.best == baseline.best
    assert (again.predictions["predicted"] == baseline.predictions["predicted"]).all()


def test_majority_baseline_and_accuracy_table_by_hand():
    labels = pd.DataFrame({"image_key": list("abcdefgh"),
                           "dominant_emotion": ["joy", "fear", "fear", "joy", "sadness", "joy", "fear", "anger"]})
    split = pd.DataFrame({"image_key": list("hgfedcba"),
                          "split": ["test", "test", "val", "val", "train", "train", "train", "train"]})
    labelled = labelled_split(labels, split)
    # train = a joy, b fear, c fear, d joy: a tie, which goes to the emotion first in column order (fear).
    assert majority_class(["joy", "fear", "fear", "joy"]) == "fear"
    majority = majority_predictions(labelled)
    assert set(majority["predicted"]) == {"fear"}
    # In split-table order h g f e d c b a: test h right, g wrong; val f right, e wrong.
    model = labelled.assign(predicted=["anger", "joy", "joy", "joy", "joy", "fear", "fear", "joy"])
    table = accuracy_table({"majority": majority, "model": model})
    got = {(r.model, r.split): (r.correct, r.images, r.accuracy) for r in table.itertuples()}
    # Majority (fear): val f joy, e sadness both wrong; test h anger wrong, g fear right.
    assert got == {("majority", "val"): (0, 2, 0.0), ("majority", "test"): (1, 2, 0.5),
                   ("model", "val"): (1, 2, 0.5), ("model", "test"): (1, 2, 0.5)}
    with pytest.raises(ValueError, match="empty"):
        majority_class([])


def test_empty_validation_split_is_refused(table: pd.DataFrame):
    with pytest.raises(ValueError, match="val split is empty"):
        train_dominant_svm(table[table["split"] != "val"], CONFIG.columns(), GRID)
