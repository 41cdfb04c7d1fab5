"""`planted_truth_recovery`: the synthetic world's planted truth against the pipeline's tables, each figure
checked on inputs whose answer is known (the planted truth itself, boxes moved off their objects)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emo_pipeline.core.emotions import EMOTIONS
from emo_pipeline.defs.recovery import _world
from emo_pipeline.defs.shared.resources import DataRoots
from emo_pipeline.synthetic import recovery
from emo_pipeline_tests.planted_datasets import planted_detections


def test_box_iou_by_hand():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[5, 0, 10, 10], [20, 20, 5, 5], [0, 0, 10, 10]])
    # Half of each box overlaps: 50 / (100 + 100 - 50).
    assert recovery.box_iou(a, b) == pytest.approx(np.array([[50 / 150, 0.0, 1.0]]))


def test_the_planted_boxes_are_recovered_whole_and_boxes_beside_them_not_at_all(world: Path):
    truth = planted_detections(world)
    perfect = recovery.planted_object_recall(world, truth)
    assert (perfect["recall"] == 1.0).all()
    assert perfect["planted"].sum() == len(truth)

    rows = {r["figure"]: r for r in recovery.detector_rows(perfect)}
    assert rows["planted objects recovered (recall)"]["met"]
    assert rows["object kinds recovered"]["value"] == len(perfect) >= recovery.DETECTOR_KINDS_TARGET

    # Each box moved right by its own width: IoU 0 with its object.
    beside = truth.assign(x=truth["x"] + truth["w"])
    assert recovery.planted_object_recall(world, beside)["recovered"].sum() < 0.05 * len(truth)
    # The right box under another name counts for nothing; two boxes on one object count once.
    renamed = truth.assign(object=np.where(truth["object"] == "sky", "grass", truth["object"]))
    table = recovery.planted_object_recall(world, renamed).set_index("object")
    assert table.loc["sky", "recovered"] == 0
    twice = recovery.planted_object_recall(world, pd.concat([truth, truth]))
    assert (twice["recall"] == 1.0).all()


@pytest.mark.slow
def test_dataset_b_on_its_planted_distributions_agrees_on_every_image(objects_run):
    store, world = objects_run["store"], objects_run["world"]
    agreement = recovery.dominant_agreement(world, store.read_table("dataset_b"))
    assert int(np.trace(agreement.to_numpy())) == int(agreement.to_numpy().sum()) == len(store.read_table("dataset_b"))
    assert all(row["met"] for row in recovery.agreement_rows(agreement))


def test_a_prediction_tied_with_the_planted_emotion_misses():
    agreement = pd.DataFrame(0, index=list(EMOTIONS), columns=list(EMOTIONS))
    agreement.loc["joy", ["joy", "surprise"]] = [5, 5]
    agreement.loc["fear", ["fear", "anger"]] = [6, 5]
    rows = {r["figure"]: r for r in recovery.agreement_rows(agreement)}
    assert set(rows) == {"planted joy: predicted joy", "planted fear: predicted fear"}
    assert not rows["planted joy: predicted joy"]["met"] and rows["planted fear: predicted fear"]["met"]
    assert rows["planted fear: predicted fear"]["value"] == pytest.approx(6 / 11)


def test_top_objects_are_counted_against_the_planted_affinities(world: Path):
    affinities = json.loads((world / "planted_affinities.json").read_text())["objects"]
    joy = recovery.most_planted(affinities, "joy")
    rows = [{"dataset": d, "emotion": e, "rank": r + 1, "object": o}
            for d in ("a", "b") for e in EMOTIONS
            for r, o in enumerate(["sky", "grass", *(joy[:2] if d == "a" else joy[:3])])]
    table = recovery.top_object_rows(world, pd.DataFrame(rows))
    met = {(r["stage"], r["figure"].split(":")[0]): (r["value"], r["met"]) for r in table}
    assert met[("dataset B", "joy")] == (3, True) and met[("dataset A", "joy")] == (2, True)
    assert not met[("dataset B", "fear")][1]  # joy's objects are not fear's


def test_only_a_synthetic_world_has_planted_truth(world: Path, tmp_path: Path):
    assert _world(DataRoots(emotion6_dir=str(world / "Emotion6"), vg_dir=str(world / "VG"))) == world
    for name in ("Emotion6", "VG"):
        (tmp_path / name).mkdir()
    assert _world(DataRoots(emotion6_dir=str(tmp_path / "Emotion6"), vg_dir=str(tmp_path / "VG"))) is None
    # Emotion6 of the world, Visual Genome from elsewhere: dataset B is not the world's.
    assert _world(DataRoots(emotion6_dir=str(world / "Emotion6"), vg_dir=str(tmp_path / "VG"))) is None


def test_the_most_planted_objects_include_ties():
    affinities = {"a": [0.5] * 7, "b": [0.4] * 7, "c": [0.3] * 7, "d": [0.3] * 7, "e": [0.1] * 7}
    assert recovery.most_planted(affinities, "joy", count=3) == ["a", "b", "c", "d"]
    assert recovery.most_planted(affinities, "joy", count=2) == ["a", "b"]
