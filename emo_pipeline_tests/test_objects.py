"""Objects <-> emotions: the score baseline in SQL, the GloVe models, the MLP, ranking metrics, `objects`.

The group runs on datasets A and B of a synthetic world built from what the generator planted (the
`objects_run` fixture, see `planted_datasets`), so the tests can demand that the planted object
affinities come back out.
"""

import base64
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
from emo_pipeline.core.profiles import emotion_objects_mlp_config
from emo_pipeline.models import EmotionObjectMLP
from emo_pipeline.objects.emotion_to_objects import (
    NORMALISATIONS,
    OBJECT_TABLES,
    MLPConfig,
    baseline_object_scores,
    distribution_vector,
    fit_calibration,
    fit_target_normaliser,
    mean_cross_entropy,
    mlp_data,
    mlp_scores,
    object_targets,
    ranking_sql,
    score_objects,
    validation_losses,
)
from emo_pipeline.objects.objects_to_emotion import image_inputs, object_model_name, predict_with_card, split_images
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
    import mlflow.pyfunc
    from mlflow.tracking import MlflowClient

    from emo_pipeline.objects.objects_to_emotion import mean_vectors
    from emo_pipeline.storage.tracking import tracking_uri

    name = object_model_name("fc", "b")
    uri = tracking_uri(objects_run["mlflow"])
    (version,) = MlflowClient(tracking_uri=uri).search_model_versions(f"name='{name}'")
    assert version.tags["dagster.asset_key"] == name and version.tags["data_fingerprint"]
    mlflow.set_tracking_uri(uri)
    loaded = mlflow.pyfunc.load_model(f"models:/{name}/{version.version}")
    con = objects_run["store"].connect_scratch()
    inputs = image_inputs(con, "b")
    con.close()
    x, _, _ = mean_vectors(inputs["objects"].tolist(), objects_run["vectors"])
    table = objects_run["store"].read_table(name).set_index("key").loc[inputs["key"].astype(str)]
    predicted = loaded.predict(x.astype(np.float32))
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


# The hand-made corpus of the target tests: a dog seen 4 times in the training images (twice in t1, once
# in t2 and t3: 3 images), a tree once; a validation image with two trees and a test image. Boxes in pixels.
def _corpus() -> tuple[pd.DataFrame, pd.DataFrame]:
    objects = pd.DataFrame([
        ("t1", "dog", 10, 10), ("t1", "dog", 10, 20), ("t1", "tree", 20, 20),
        ("t2", "dog", 10, 10), ("t3", "dog", 30, 10),
        ("v1", "dog", 10, 10), ("v1", "tree", 20, 20), ("v1", "tree", 20, 20),
        ("s1", "dog", 10, 10), ("s1", "cat", 5, 5)], columns=["key", "object", "w", "h"])
    split = pd.DataFrame({"key": ["t1", "t2", "t3", "v1", "s1"], "split": ["train"] * 3 + ["val", "test"]})
    return objects, split


def test_each_normalisation_on_hand_computed_targets():
    objects, _ = _corpus()
    vocabulary = ["dog", "tree"]

    def targets(normalisation, keys=("t1", "t2")):
        normaliser = fit_target_normaliser(objects, ["t1", "t2", "t3"], vocabulary, normalisation)
        return normaliser, object_targets(objects, list(keys), normaliser).toarray()

    # The paper's target: count in the image / count in the training images (dog 4, tree 1).
    normaliser, got = targets("inverse_total_count")
    assert normaliser.scale == 1.0
    np.testing.assert_allclose(got, [[2 / 4, 1 / 1], [1 / 4, 0]])
    _, got = targets("inverse_sqrt_count")
    np.testing.assert_allclose(got, [[2 / np.sqrt(4), 1 / 1], [1 / np.sqrt(4), 0]])
    # Values above 1 are divided by the largest training value: here t1's tree, 1 / log 2 = 1.44
    # (t1's dog: 2 / log 5 = 1.24).
    normaliser, got = targets("inverse_log_count")
    assert normaliser.scale == pytest.approx(1 / np.log(2))
    np.testing.assert_allclose(got, [[2 / np.log(5) * np.log(2), 1.0], [1 / np.log(5) * np.log(2), 0]], rtol=1e-6)
    # The mean count per training image holding the object: dog 4 / 3 images, tree 1 / 1.
    normaliser, got = targets("inverse_mean_count")
    assert normaliser.scale == pytest.approx(2 / (4 / 3))
    np.testing.assert_allclose(got, [[1.0, 1 / 1.5], [(1 / (4 / 3)) / 1.5, 0]], rtol=1e-6)
    # Each box counts its area (pixels) instead of 1, still over the training count.
    normaliser, got = targets("times_area")
    assert normaliser.scale == pytest.approx(400)   # t1's tree, 400 / 1; its dogs give (100 + 200) / 4
    np.testing.assert_allclose(got, [[(100 + 200) / 4 / 400, 1.0], [100 / 4 / 400, 0]], rtol=1e-6)
    normaliser, got = targets("times_sqrt_area")
    assert normaliser.scale == pytest.approx(20)   # the tree: sqrt(400) / 1
    np.testing.assert_allclose(got, [[(10 + np.sqrt(200)) / 4 / 20, 1.0], [10 / 4 / 20, 0]], rtol=1e-6)
    normaliser, got = targets("times_log_area")
    assert normaliser.scale == pytest.approx(np.log(401))
    np.testing.assert_allclose(got, [[(np.log(101) + np.log(201)) / 4 / np.log(401), 1.0],
                                     [np.log(101) / 4 / np.log(401), 0]], rtol=1e-6)

    # Not the paper's: sqrt of the object's share of the image's object rows, those outside the vocabulary
    # included (t1: 2 dogs of 3 rows).
    normaliser, got = targets("sqrt_image_share")
    assert normaliser.scale == 1.0
    np.testing.assert_allclose(got, [[np.sqrt(2 / 3), np.sqrt(1 / 3)], [1.0, 0]], rtol=1e-6)
    only_dogs = fit_target_normaliser(objects, ["t1", "t2", "t3"], ["dog"], "sqrt_image_share")
    np.testing.assert_allclose(object_targets(objects, ["t1"], only_dogs).toarray(), [[np.sqrt(2 / 3)]], rtol=1e-6)

    # A held-out image above 1 (v1's two trees: 2 / 1) is clipped to 1; an unknown object is left out.
    _, got = targets("inverse_total_count", keys=["v1", "s1"])
    np.testing.assert_allclose(got, [[1 / 4, 1.0], [1 / 4, 0]])
    with pytest.raises(ValueError, match="normalisation 'tfidf'"):
        fit_target_normaliser(objects, ["t1"], vocabulary, "tfidf")
    with pytest.raises(ValueError, match="1 vocabulary objects never occur in the training images \\('cat'\\)"):
        fit_target_normaliser(objects, ["t1"], ["dog", "cat"], "inverse_total_count")
    broken = objects.assign(w=objects["w"].where(objects["key"] != "t2"))
    with pytest.raises(ValueError, match="1 object rows have no box size \\(w, h\\), e.g. image t2 object 'dog'"):
        fit_target_normaliser(broken, ["t1", "t2"], vocabulary, "times_area")


def _corpus_inputs(split: pd.DataFrame) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(rng.dirichlet(np.ones(7), size=len(split)), columns=list(PROB_COLUMNS)).assign(
        key=split["key"].to_numpy())


@pytest.mark.parametrize("normalisation", NORMALISATIONS)
def test_test_images_change_no_target(normalisation):
    """The vocabulary, divisors and scale come from the training images: adding objects to the test
    image, more of a training object included, leaves every training and validation target as it was."""
    objects, split = _corpus()
    inputs = _corpus_inputs(split)
    config = MLPConfig(normalisation=normalisation, vocabulary_size=3)
    before = mlp_data(inputs, objects, split, config)
    extra = pd.DataFrame([("s1", "dog", 500, 500)] * 20 + [("s1", "tree", 90, 90), ("s1", "lamp", 40, 40)],
                         columns=objects.columns)
    changed = pd.concat([objects[objects["key"] != "s1"], extra], ignore_index=True)
    after = mlp_data(inputs, changed, split, config)
    assert before.vocabulary == after.vocabulary == ["dog", "tree"]
    assert before.normaliser.scale == after.normaliser.scale
    np.testing.assert_array_equal(before.normaliser.divisor, after.normaliser.divisor)
    for part in ("train", "val"):
        np.testing.assert_array_equal(before.targets[part].toarray(), after.targets[part].toarray())
    # While a training image's objects do change them.
    moved = changed.assign(key=changed["key"].replace({"s1": "t3"}))
    assert not np.array_equal(mlp_data(inputs, moved, split, config).targets["train"].toarray(),
                              before.targets["train"].toarray())


def test_the_baseline_and_the_mlp_get_the_same_validation_loss():
    objects, split = _corpus()
    inputs = _corpus_inputs(split)
    data = mlp_data(inputs, objects, split, MLPConfig(vocabulary_size=2))
    d_val = inputs.set_index("key").loc[data.keys["val"], list(PROB_COLUMNS)].to_numpy()
    model = EmotionObjectMLP(len(data.vocabulary)).eval()
    # The loss is the train loop's: torch's binary cross-entropy over every (image, object) cell.
    with torch.no_grad():
        expected = torch.nn.functional.binary_cross_entropy(
            model(torch.as_tensor(d_val, dtype=torch.float32)), torch.as_tensor(data.targets["val"].toarray()))
    got = mean_cross_entropy(lambda x: mlp_scores(model, x), d_val, data.targets["val"])
    assert got == pytest.approx(float(expected), rel=1e-6)

    con = duckdb.connect()
    con.register("dataset_b_objects", objects.merge(inputs.rename(columns=dict(zip(PROB_COLUMNS, EMOTIONS))))
                 .rename(columns={"key": "image_id"}))
    scores = score_objects(con, "b", train_keys=["t1", "t2", "t3"])
    table = validation_losses(inputs, objects, split, scores, {"inverse_total_count": (model, data.vocabulary)})
    assert table.loc[0, ["normalisation", "images", "objects"]].tolist() == ["inverse_total_count", 1, 2]
    assert table.loc[0, "mlp_loss"] == pytest.approx(got)
    # The calibrated baseline is a sigmoid of its scores: no worse on its training targets than a constant.
    d_train = inputs.set_index("key").loc[data.keys["train"], list(PROB_COLUMNS)].to_numpy()
    raw = baseline_object_scores(d_train, scores, data.vocabulary)
    calibration = fit_calibration(raw, data.targets["train"])
    fitted = mean_cross_entropy(lambda x: calibration(baseline_object_scores(x, scores, data.vocabulary)),
                                d_train, data.targets["train"])
    mean = data.targets["train"].toarray().mean()
    constant = mean_cross_entropy(lambda x: np.full((len(x), 2), mean), d_train, data.targets["train"])
    assert fitted <= constant + 1e-9
    # It keeps the baseline's ranking: scores that run against the targets get a flat map at the mean.
    assert calibration.slope > 0
    np.testing.assert_array_equal(np.argsort(-raw, axis=1), np.argsort(-calibration(raw), axis=1))
    flat = fit_calibration(-raw, data.targets["train"])
    assert flat.slope == 0 and flat(raw) == pytest.approx(np.full(raw.shape, mean))


def test_the_mlp_is_the_papers_network():
    # The paper profile: 1,500 objects, so the last layer is the paper's FC(1500, 1500).
    paper = emotion_objects_mlp_config("paper")
    assert (paper.vocabulary_size, paper.hidden, paper.dropout, paper.normalisation) == \
        (1500, (500, 2000, 1500), 0.5, "inverse_total_count")
    assert emotion_objects_mlp_config("demo").vocabulary_size < paper.vocabulary_size
    linear = [m for m in EmotionObjectMLP(paper.vocabulary_size, paper.hidden).layers if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(7, 500), (500, 2000), (2000, 1500), (1500, 1500)]

    model = EmotionObjectMLP(n_objects=123)
    assert sum(isinstance(m, torch.nn.Dropout) and m.p == 0.5 for m in model.layers) == 2
    with torch.no_grad():
        out = model.eval()(torch.rand(4, 7))
    assert out.shape == (4, 123) and float(out.min()) >= 0 and float(out.max()) <= 1


def test_the_mlp_can_start_at_each_objects_training_mean():
    model = EmotionObjectMLP(n_objects=3, hidden=(4, 5, 6)).eval()
    model.start_outputs_at(torch.tensor([0.02, 0.5, 0.0]))
    with torch.no_grad():
        model.layers[-2].weight.zero_()  # what the bias alone gives, whatever the hidden layers compute
        out = model(torch.rand(2, 7))
    # A mean of 0 is held just above it, so the logit stays finite.
    np.testing.assert_allclose(out.numpy(), [[0.02, 0.5, 1e-4]] * 2, rtol=1e-4)


@pytest.mark.slow
def test_emotion_object_metrics_compare_the_three_rankers(objects_run):
    table = objects_run["store"].read_table("emotion_object_metrics")
    for dataset in ("a", "b"):
        part = table[table["dataset"] == dataset]
        assert set(part["method"]) == {"score_baseline", "most_frequent", "mlp"}
        assert set(part.loc[part["method"] == "mlp", "normalisation"]) == {"inverse_total_count", "inverse_log_count"}
        assert set(part["k"]) == {5, 10, 15}
        assert part["images"].nunique() == 1 and part["images"].iloc[0] > 20
        assert part[["precision", "recall", "ndcg"]].apply(lambda c: c.between(0, 1)).all().all()
        # Fig. 14: each MLP's validation loss, recomputed here, is the train loop's best one; the score
        # baseline has one beside it, on the same targets and loss.
        mlp = part[(part["method"] == "mlp") & (part["k"] == 10)].set_index("normalisation")
        history = objects_run["store"].read_table(f"emotion_objects_mlp_{dataset}")
        best = history.groupby("normalisation")["val_loss"].min()
        np.testing.assert_allclose(mlp["val_loss"], best.loc[mlp.index], rtol=1e-4)
        assert (mlp["baseline_val_loss"] > 0).all()
        assert part.loc[part["method"] != "mlp", ["val_loss", "baseline_val_loss"]].isna().all().all()
        # Recall grows with k for every ranker.
        for _, rows in part.groupby(["method", "normalisation"]):
            assert rows.sort_values("k")["recall"].is_monotonic_increasing


@pytest.mark.slow
def test_the_score_baseline_counts_only_the_training_images(objects_run):
    """Fig. 13's scores come from the training split: each object's occurrences are its rows in the
    training images, and no test image's objects reach them."""
    store = objects_run["store"]
    scores = store.read_table("emotion_object_scores")
    con = store.connect_scratch()
    try:
        for dataset, (table, key) in OBJECT_TABLES.items():
            split = split_images(image_inputs(con, dataset), 0)
            rows = con.execute(f"SELECT {key} AS key, object FROM {table}").fetchdf()
            train = rows[rows["key"].isin(set(split.loc[split["split"] == "train", "key"]))]
            joy = scores[(scores["dataset"] == dataset) & (scores["emotion"] == "joy")]
            got = joy.set_index("object")["occurrences"]
            expected = train.groupby("object").size()
            assert len(train) < len(rows)
            pd.testing.assert_series_equal(got.sort_index(), expected.sort_index(), check_names=False,
                                           check_dtype=False)
    finally:
        con.close()
    assert objects_run["metadata"]["emotion_object_scores"]["split_seed"].value == 0


@pytest.mark.slow
def test_the_papers_objects_figures_are_on_the_assets(objects_run):
    """Figs. 9 and 11-14 as PNG figures in the assets' metadata, captioned with the paper's number."""
    metadata = objects_run["metadata"]
    figures = {("object_emotion_metrics", "fig9_test_examples_b"): "Fig. 9",
               ("emotion_object_metrics", "fig11_disgust_b"): "Fig. 11",
               ("emotion_object_metrics", "fig12_joy_b"): "Fig. 12",
               ("top_objects_per_emotion", "figure_a"): "Fig. 13",
               ("top_objects_per_emotion", "figure_b"): "Fig. 13",
               ("emotion_object_metrics", "fig14_validation_loss"): "Fig. 14"}
    for (asset, key), number in figures.items():
        text = metadata[asset][key].value
        alt, _, data = text.partition("](data:image/png;base64,")
        assert alt.startswith(f"![{number}:"), (asset, key, alt)
        png = base64.b64decode(data.rstrip(")"))
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000, (asset, key)
    table = metadata["emotion_object_metrics"]["validation_loss"].value
    assert "baseline_loss" in table and "mlp_loss" in table


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
