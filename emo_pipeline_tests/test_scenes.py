"""Emotion -> scene: statistics in DuckDB, scenes that carry their emotion, the `scene` command.

Runs on the planted datasets of a demo world (`objects_run`), so the scenes can be held to the
objects the generator planted for each emotion.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.stats import entropy

from emo_pipeline.cli import main
from emo_pipeline.core.emotions import EMOTIONS
from emo_pipeline.core.home import emo_home
from emo_pipeline.objects.emotion_to_objects import distribution_vector
from emo_pipeline.objects.objects_to_emotion import object_critic
from emo_pipeline.scenes.composer import ComposerConfig, compose_scene, load_statistics
from emo_pipeline.scenes.layout import relation_holds
from emo_pipeline.storage.model_store import load_torch_model


@pytest.mark.slow
def test_cooccurrence_pmi_relations_and_boxes_match_the_data(objects_run):
    store = objects_run["store"]
    objects = store.read_table("dataset_b_objects", columns=["image_id", "object"]).drop_duplicates()
    images = objects["image_id"].nunique()
    holds = objects.groupby("object")["image_id"].agg(set)
    pairs = store.read_table("object_cooccurrence")
    b = pairs[pairs["dataset"] == "b"].set_index(["object_a", "object_b"])
    for a, c in [("grass", "sky"), ("man", "shirt")]:
        a, c = sorted((a, c))
        together = len(holds[a] & holds[c])
        expected = np.log(together * images / (len(holds[a]) * len(holds[c])))
        assert b.loc[(a, c), "together"] == together
        assert b.loc[(a, c), "pmi"] == pytest.approx(expected)
    assert set(pairs["dataset"]) == {"a", "b"}

    relations = store.read_table("object_relations")
    np.testing.assert_allclose(relations.groupby(["subject", "object"])["share"].sum(), 1.0)
    boxes = store.read_table("object_boxes")
    assert boxes[["x", "y", "w", "h"]].apply(lambda c: c.between(0, 1)).all().all()
    assert boxes.groupby("object").size().max() <= 200
    stats = store.read_table("object_box_statistics").set_index("object")
    # The synthetic sky is drawn at the top of the picture, grass at the bottom.
    assert stats.loc["sky", "cy_mean"] < 0.35 < 0.6 < stats.loc["grass", "cy_mean"]


@pytest.mark.slow
def test_each_emotions_scene_holds_its_planted_objects(objects_run):
    scenes = objects_run["store"].read_table("emotion_scenes").set_index("scene")
    affinity = json.loads((objects_run["world"] / "planted_affinities.json").read_text())["objects"]
    for i, emotion in enumerate(EMOTIONS):
        most_planted = sorted(affinity, key=lambda o: -affinity[o][i])[:5]
        chosen = set(scenes.loc[emotion, "objects"])
        assert len(chosen) == 8
        assert len(chosen & set(most_planted)) >= 3, (emotion, sorted(chosen), most_planted)
    # Every scene's files: a label map whose ids are its objects' class ids, painted where they lie.
    for _, row in scenes.iterrows():
        graph = json.loads(Path(row["scene_graph"]).read_text())
        labels = np.array(Image.open(row["label_map"]))
        ids = {o["class_id"] for o in graph["objects"]}
        assert set(np.unique(labels)) <= ids | {0}
        assert [o["name"] for o in graph["objects"]] == list(row["objects"])


@pytest.mark.slow
def test_the_composer_carries_the_emotion_better_than_top_k_and_random(objects_run):
    table = objects_run["store"].read_table("scene_fidelity")
    mean = table.groupby("method")["kl"].mean()
    assert set(table.groupby("method").size()) == {27}       # 7 emotions and 20 mixtures each
    assert mean["composer"] < mean["top_k"] < mean["random"]


@pytest.mark.slow
def test_a_scene_is_deterministic_for_a_seed_and_lays_out_its_relations(objects_run):
    stats = load_statistics(objects_run["store"], "b")
    model, _ = load_torch_model(emo_home().models, "objects_emotion_fc_b")
    critic = object_critic(model, "fc", objects_run["vectors"])
    target = distribution_vector({"joy": 0.8, "surprise": 0.2})
    first, again = (compose_scene(stats, target, ComposerConfig(k=6), seed=3, critic=critic) for _ in range(2))
    assert first.to_json(stats) == again.to_json(stats)
    assert first.kl == pytest.approx(entropy(target, first.predicted), rel=1e-5)   # KL(target || critic)
    held = [relation_holds(p, first.boxes[s], first.boxes[o]) for s, p, o in first.relations]
    assert held.count(False) <= held.count(True)


@pytest.mark.slow
def test_scene_command(objects_run, tmp_path, capsys):
    where = ["--warehouse", str(objects_run["store"].root)]
    argv = ["scene", "--joy", "0.8", "--surprise", "0.2", "-k", "5", "--seed", "7", "--out", str(tmp_path), *where]
    assert main([*argv, "--json"]) == 0
    graph = json.loads(capsys.readouterr().out)
    assert len(graph["objects"]) == 5 and graph["target"]["joy"] == 0.8
    assert abs(sum(graph["predicted"].values()) - 1) < 1e-3
    labels = np.array(Image.open(graph["files"]["labels"]))
    assert labels.shape == (256, 256) and set(np.unique(labels)) <= {o["class_id"] for o in graph["objects"]} | {0}
    assert Image.open(graph["files"]["legend"]).format == "PNG"
    assert main(argv) == 0
    assert "critic    " in capsys.readouterr().out
    assert json.loads((tmp_path / "scene.json").read_text())["objects"] == [
        {**o} for o in graph["objects"]]   # the same seed wrote the same scene again

    assert main(["scene", "--awe", "1", "--out", str(tmp_path), *where]) == 2
    assert "unknown emotion(s) 'awe'" in capsys.readouterr().err
    assert main(["scene", "--joy", "1", "--out", str(tmp_path), "--warehouse", str(tmp_path / "none")]) == 2
    assert "materialize the `objects` and `scenes` groups first" in capsys.readouterr().err
