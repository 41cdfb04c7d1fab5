"""Objects <-> emotions: the score baseline in SQL, the GloVe models, the MLP, ranking metrics, `objects`.

The group runs on datasets A and B of a synthetic world built from what the generator planted (the
`objects_run` fixture, see `planted_datasets`), so the tests can demand that the planted object
affinities come back out.
"""

import json

import duckdb
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import ndcg_score

from emo_pipeline.cli import main
from emo_pipeline.core.emotions import EMOTIONS, PROB_COLUMNS
from emo_pipeline.core.home import emo_home
from emo_pipeline.models import EmotionObjectMLP
from emo_pipeline.objects.emotion_to_objects import (
    distribution_vector,
    object_targets,
    ranking_sql,
    score_objects,
)
from emo_pipeline.objects.objects_to_emotion import image_inputs, object_model_name, predict_with_card
from emo_pipeline.objects.ranking import ranking_metrics
from emo_pipeline.storage.model_store import load_torch_model


# --- The score baseline --------------------------------------------------------------------------------
def _small_objects() -> pd.DataFrame:
    rng = np.random.default_rng(4)
    distributions = rng.dirichlet(np.ones(7), size=6)
    rows = [(i, name) for i in range(6) for name in rng.choice(["dog", "cat", "tree", "sky"], size=rng.integers(1, 5))]
    frame = pd.DataFrame(rows, columns=["image_id", "object"])
    return frame.join(pd.DataFrame(distributions[frame["image_id"]], columns=list(EMOTIONS)))


def test_sql_scores_equal_the_formula_in_numpy():
    objects = _small_objects()
    con = duckdb.connect()
    con.register("dataset_b_objects", objects)
    table = score_objects(con, "b")
    names = sorted(objects["object"].unique())
    # score(e, o) = sum over images of count(o in i) * d_e(i); final = score - its mean over emotions
    images = objects.groupby("image_id")[list(EMOTIONS)].first()
    counts = objects.groupby(["image_id", "object"]).size().unstack(fill_value=0).reindex(columns=names)
    score = counts.to_numpy().T @ images.loc[counts.index].to_numpy()          # (objects, 7)
    final = score - score.mean(axis=1, keepdims=True)
    got = table.pivot(index="object", columns="emotion", values="final").loc[names, list(EMOTIONS)].to_numpy()
    raw = table.pivot(index="object", columns="emotion", values="score").loc[names, list(EMOTIONS)].to_numpy()
    np.testing.assert_allclose(raw, score, rtol=1e-12)
    np.testing.assert_allclose(got, final, atol=1e-12)
    assert len(table) == 7 * len(names)

    # Only the training images, when given.
    train = [0, 2, 3]
    part = score_objects(con, "b", train_keys=train)
    expected = objects[objects["image_id"].isin(train)].groupby("object")["joy"].sum()
    joy = part[part["emotion"] == "joy"].set_index("object")["score"]
    np.testing.assert_allclose(joy.loc[expected.index], expected)

    # The ranking of a distribution d: sum_e d_e * final(e, o), highest first.
    d = distribution_vector({"joy": 0.7, "surprise": 0.3})
    con.register("scores", table)
    ranked = con.execute(ranking_sql("scores", d, k=3)).fetchdf()
    expected_order = np.array(names)[np.argsort(-(final @ d), kind="stable")][:3]
    assert ranked["object"].tolist() == expected_order.tolist()


@pytest.mark.slow
def test_score_baseline_recovers_the_planted_affinities(objects_run):
    top = objects_run["store"].read_table("top_objects_per_emotion")
    planted = json.loads((objects_run["world"] / "planted_affinities.json").read_text())
    for dataset in ("a", "b"):
        for i, emotion in enumerate(EMOTIONS):
            most_planted = sorted(planted["objects"], key=lambda o: -planted["objects"][o][i])[:5]
            top10 = top[(top["dataset"] == dataset) & (top["emotion"] == emotion) & (top["rank"] <= 10)]["object"]
            assert len(set(most_planted) & set(top10)) >= 3, (dataset, emotion, most_planted, top10.tolist())
    assert objects_run["checks"]["seven_centred_scores_per_object"]


# --- Objects -> emotion -------------------------------------------------------------------------------
@pytest.mark.slow
def test_word_vectors_average_multi_word_names_and_report_unknown_ones(objects_run):
    vectors = objects_run["vectors"]
    assert (len(vectors), vectors.dim) == (400_000, 50)
    street, light = vectors.vectors_of(["street", "light"])
    np.testing.assert_allclose(vectors.name_vector("street light"), (street + light) / 2, rtol=1e-6)
    found, missing = vectors.name_vectors(["dog", "Street Light", "qzxqzx"])
    assert sorted(found) == ["Street Light", "dog"] and missing == ["qzxqzx"]
    # The cache is memory-mapped, so processes share it.
    assert isinstance(vectors.kv.vectors, np.memmap)


@pytest.mark.slow
def test_glove_fc_beats_the_train_mean_on_both_data_sets(objects_run):
    table = objects_run["store"].read_table("object_emotion_metrics").set_index(["dataset", "model"])
    for dataset in ("a", "b"):
        fc, mean = table.loc[(dataset, "fc")], table.loc[(dataset, "train_mean")]
        assert fc["kl"] < mean["kl"] and fc["chebyshev"] < mean["chebyshev"]
        assert fc["bhattacharyya"] > mean["bhattacharyya"]
    assert set(table.index.get_level_values("model")) == {"fc", "rnn", "lstm", "lstm_dropout", "train_mean"}
    assert objects_run["checks"]["fc_beats_train_mean"]


@pytest.mark.slow
def test_a_saved_phrase_model_reproduces_its_predictions(objects_run):
    store = objects_run["store"]
    name = object_model_name("lstm", "b")
    model, card = load_torch_model(emo_home().models, name)
    con = store.connect_scratch()
    inputs = image_inputs(con, "b")
    con.close()
    table = store.read_table(name).set_index("key").loc[inputs["key"].astype(str)]
    predicted = predict_with_card(model, card, objects_run["vectors"], inputs)
    np.testing.assert_allclose(predicted, table[list(PROB_COLUMNS)].to_numpy(), atol=1e-5)


@pytest.mark.slow
def test_the_registered_model_reproduces_the_assets_predictions(objects_run):
    """Registry convention: the model asset's name, a version per materialization, tagged with its lineage."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from emo_pipeline.objects.objects_to_emotion import mean_vectors
    from emo_pipeline.storage.tracking import tracking_uri

    name = object_model_name("fc", "b")
    uri = tracking_uri(objects_run["mlflow"])
    (version,) = MlflowClient(tracking_uri=uri).search_model_versions(f"name='{name}'")
    assert version.tags["dagster.asset_key"] == name and version.tags["data_fingerprint"]
    mlflow.set_tracking_uri(uri)
    loaded = mlflow.pytorch.load_model(f"models:/{name}/{version.version}")
    con = objects_run["store"].connect_scratch()
    inputs = image_inputs(con, "b")
    con.close()
    x, _, _ = mean_vectors(inputs["objects"].tolist(), objects_run["vectors"])
    table = objects_run["store"].read_table(name).set_index("key").loc[inputs["key"].astype(str)]
    with torch.inference_mode():
        predicted = loaded(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(predicted, table[list(PROB_COLUMNS)].to_numpy(), atol=1e-5)


# --- Emotion -> objects --------------------------------------------------------------------------------
def test_ranking_metrics_match_sklearn_ndcg():
    rng = np.random.default_rng(0)
    universe = [f"o{i}" for i in range(30)]
    ranked, truth, scores, relevance = [], [], [], []
    for _ in range(20):
        score = rng.random(len(universe))
        true = {universe[j] for j in rng.choice(len(universe), size=rng.integers(1, 8), replace=False)}
        ranked.append([universe[j] for j in np.argsort(-score)])
        truth.append(true)
        scores.append(score)
        relevance.append([o in true for o in universe])
    got = ranking_metrics(ranked, truth, k=10)
    assert got["ndcg"] == pytest.approx(ndcg_score(np.array(relevance, float), np.array(scores), k=10))
    hits = [len(set(r[:10]) & t) for r, t in zip(ranked, truth)]
    assert got["precision"] == pytest.approx(np.mean(hits) / 10)
    assert got["recall"] == pytest.approx(np.mean([h / len(t) for h, t in zip(hits, truth)]))


def test_target_normalisations_on_a_hand_made_image():
    # One image: 3 dogs (boxes 10x10) and 1 tree (20x20); vocabulary dog, tree, cat.
    objects = pd.DataFrame({"key": ["i"] * 4, "object": ["dog", "dog", "dog", "tree"],
                            "w": [10, 10, 10, 20], "h": [10, 10, 10, 20]})
    vocabulary = ["dog", "tree", "cat"]

    def row(normalisation):
        return object_targets(objects, ["i"], vocabulary, normalisation).toarray()[0]

    np.testing.assert_allclose(row("count_share"), [0.75, 0.25, 0])
    np.testing.assert_allclose(row("sqrt_count_share"), [np.sqrt(0.75), 0.5, 0])
    np.testing.assert_allclose(row("log_count_share"), [np.log(4) / np.log(5), np.log(2) / np.log(5), 0])
    np.testing.assert_allclose(row("per_image_average"), [0.5, 0.5, 0])
    np.testing.assert_allclose(row("box_area"), [300 / 700, 400 / 700, 0])
    with pytest.raises(ValueError, match="normalisation 'tfidf'"):
        row("tfidf")


def test_the_mlp_is_the_papers_network():
    model = EmotionObjectMLP(n_objects=123)
    linear = [m for m in model.layers if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(7, 500), (500, 2000), (2000, 1500), (1500, 123)]
    assert sum(isinstance(m, torch.nn.Dropout) and m.p == 0.5 for m in model.layers) == 2
    with torch.no_grad():
        out = model.eval()(torch.rand(4, 7))
    assert out.shape == (4, 123) and float(out.min()) >= 0 and float(out.max()) <= 1


@pytest.mark.slow
def test_emotion_object_metrics_compare_the_three_rankers(objects_run):
    table = objects_run["store"].read_table("emotion_object_metrics")
    for dataset in ("a", "b"):
        part = table[table["dataset"] == dataset]
        assert set(part["method"]) == {"score_baseline", "most_frequent", "mlp"}
        assert set(part.loc[part["method"] == "mlp", "normalisation"]) == {"count_share", "box_area"}
        assert set(part["k"]) == {5, 10, 15}
        assert part["images"].nunique() == 1 and part["images"].iloc[0] > 20
        assert part[["precision", "recall", "ndcg"]].apply(lambda c: c.between(0, 1)).all().all()
        assert part.loc[part["method"] == "mlp", "val_loss"].notna().all()
        # Recall grows with k for every ranker.
        for _, rows in part.groupby(["method", "normalisation"]):
            assert rows.sort_values("k")["recall"].is_monotonic_increasing


@pytest.mark.slow
def test_objects_command(objects_run, capsys):
    warehouse = ["--warehouse", str(objects_run["store"].root)]
    assert main(["objects", "--fear", "1", "-k", "10", "--json", *warehouse]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["distribution"] == {"fear": 1.0} and len(out["objects"]) == 10
    planted = json.loads((objects_run["world"] / "planted_affinities.json").read_text())["top_objects"]["fear"][:5]
    assert len(set(planted) & {o["object"] for o in out["objects"]}) >= 3

    assert main(["objects", "--joy", "0.7", "--surprise", "0.3", "-k", "4", "--model", "mlp", "--dataset", "a"]) == 0
    text = capsys.readouterr().out
    assert "dataset A, mlp; target joy 0.7, surprise 0.3" in text and len(text.strip().splitlines()) == 2 + 4

    for argv, message in [(["--happiness", "1"], "unknown emotion(s) 'happiness'"),
                          (["--anger", "-1", "--joy", "1"], "must be finite and non-negative, got anger=-1"),
                          ([], "give at least one emotion a positive weight")]:
        assert main(["objects", *argv, *warehouse]) == 2
        assert message in capsys.readouterr().err
    assert main(["objects", "--joy", "1", "--warehouse", str(objects_run["store"].root / "nowhere")]) == 2
    assert "materialize the `objects` group first" in capsys.readouterr().err
