"""The features, image_models and evaluation groups materialize in-process on a synthetic world:
tables with the right rows, the SVM registered in MLflow and loadable, the accuracy table queryable,
the feature ridge, gradient-boosted and network models and the patch network saved with a card that
`predict` reproduces."""

import json
import subprocess
import sys

import dagster as dg
import numpy as np
import pytest
import torch

from emo_pipeline.core.emotions import EMOTIONS, PROB_COLUMNS
from emo_pipeline.core.home import emo_home
from emo_pipeline.defs.shared.resources import MLflowResource
from emo_pipeline.image_emotion.features import FAMILIES, PAPER_FAMILIES, FeatureConfig, columns_of
from emo_pipeline.image_emotion.predict import predict_images
from emo_pipeline.storage.model_store import load_card, load_sklearn_model
from emo_pipeline.storage.warehouse import Warehouse
from emo_pipeline_tests.materialize import materialize, project_resources

ASSETS = ["emotion6_labels", "emotion6_rejected", "emotion6_split", "emotion6_features",
          "svm_dominant_emotion", "svm_predictions", "dominant_emotion_accuracy",
          "feature_ridge_model", "feature_ridge_predictions", "feature_gbm_model", "feature_gbm_predictions",
          "feature_mlp_model", "feature_mlp_predictions", "patch_mlp_model", "patch_mlp_predictions"]
SMALL_FEATURES = {"glcm_size": 64, "glcm_levels": 16, "glcm_distances": [1, 2], "colour_size": 48,
                  "colour_bins": 10, "workers": 1}
SMALL_GRID = {"c_grid": [1.0, 10.0], "gamma_factors": [0.03, 0.3]}
SMALL_PATCHES = {"sizes": [16, 32], "patch_sizes": [4, 6], "centroids": 32, "samples": 5000, "passes": 5,
                 "members": 2, "epochs": 30, "workers": 1}


@pytest.fixture(scope="module")
def materialized(world_factory, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("image_models")
    resources = project_resources(world_factory(seed=2), root,
                                  mlflow=MLflowResource(root=str(root / "mlflow"), experiment="test"))
    result = materialize(
        resources, ASSETS, raise_on_error=True,
        run_config={"ops": {"emotion6_features": {"config": SMALL_FEATURES}, "svm": {"config": SMALL_GRID},
                            "feature_gbm": {"config": {"max_iter": 150}},
                            "feature_mlp": {"config": {"members": 2, "epochs": 40}},
                            "patch_mlp": {"config": SMALL_PATCHES}}})
    return result, root


def test_assets_materialize_and_checks_pass(materialized):
    result, root = materialized
    assert result.success
    assert {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()} == set(ASSETS)
    evaluations = result.get_asset_check_evaluations()
    checked = {e.asset_key.to_user_string() for e in evaluations}
    assert {"emotion6_features", "svm_predictions", "dominant_emotion_accuracy", "feature_ridge_predictions",
            "feature_gbm_predictions", "feature_mlp_predictions", "patch_mlp_predictions"} <= checked
    assert [(e.asset_key.to_user_string(), e.check_name, e.description) for e in evaluations if not e.passed] == []

    store = Warehouse(root / "warehouse")
    labels = store.read_table("emotion6_labels")
    features = store.read_table("emotion6_features")
    assert len(labels) == len(features) == 240 and set(features["image_key"]) == set(labels["image_key"])
    # The demo profile's table: the paper's GLCM and CIECAM02 columns, then this project's 333.
    assert features.shape[1] == 1 + 6 * 2 * 4 + 6 * 10 + 333
    assert list(features.columns[1:]) == FeatureConfig(families=FAMILIES, **{
        k: tuple(v) if isinstance(v, list) else v for k, v in SMALL_FEATURES.items() if k != "workers"}).columns()
    predictions = store.read_table("svm_predictions")
    assert list(predictions.columns) == ["image_key", "split", "true", "predicted"] and len(predictions) == 240

    by_key = {m.asset_key.to_user_string(): m.metadata for m in result.asset_materializations_for_node("svm")}
    model_metadata = by_key["svm_dominant_emotion"]
    assert model_metadata["val_accuracy"].value > model_metadata["majority_val_accuracy"].value
    assert by_key["svm_predictions"]["mlflow_run_id"].value == model_metadata["mlflow_run_id"].value
    assert "data:image/png;base64," in model_metadata["confusion_test"].value


def test_the_registered_model_reproduces_the_predictions(materialized):
    import mlflow.sklearn
    from mlflow.tracking import MlflowClient

    from emo_pipeline.storage.tracking import tracking_store, tracking_uri

    result, root = materialized
    uri = tracking_uri(root / "mlflow")
    client = MlflowClient(tracking_uri=uri)
    (version,) = client.search_model_versions("name='svm_dominant_emotion'")
    model_metadata = next(m.metadata for m in result.asset_materializations_for_node("svm")
                          if m.asset_key == dg.AssetKey("svm_dominant_emotion"))
    assert version.run_id == model_metadata["mlflow_run_id"].value
    assert version.tags["dagster.run_id"] == result.run_id
    assert version.tags["dagster.asset_key"] == "svm_dominant_emotion"
    run = client.get_run(version.run_id)
    assert run.data.tags["dagster.asset_key"] == "svm_dominant_emotion, svm_predictions"
    assert run.data.tags["dagster.run_id"] == result.run_id
    assert run.data.metrics["val_accuracy"] == pytest.approx(model_metadata["val_accuracy"].value, abs=1e-4)

    with tracking_store(root / "mlflow"):
        model = mlflow.sklearn.load_model(f"models:/svm_dominant_emotion/{version.version}")
    store = Warehouse(root / "warehouse")
    features = store.read_table("emotion6_features")
    predictions = store.read_table("svm_predictions").set_index("image_key").loc[features["image_key"]]
    # The SVM reads the paper's GLCM and CIECAM02 columns, not the other families of the demo's table.
    paper = features[columns_of(list(features.columns), PAPER_FAMILIES)]
    assert paper.shape[1] == 6 * 2 * 4 + 6 * 10
    assert np.array_equal(model.predict(paper), predictions["predicted"].to_numpy())


def test_accuracy_table_has_svm_and_majority_on_val_and_test(materialized):
    _, root = materialized
    sql = subprocess.run(
        [sys.executable, "-m", "emo_pipeline.cli", "sql", "--warehouse", str(root / "warehouse"), "--format", "json",
         "SELECT model, split, accuracy, correct, images FROM dominant_emotion_accuracy ORDER BY model, split"],
        capture_output=True, text=True, check=True)
    rows = {(r["model"], r["split"]): r for r in json.loads(sql.stdout)}
    assert set(rows) == {(m, s) for m in ("majority", "svm") for s in ("val", "test")}
    assert all(r["images"] == 36 and r["accuracy"] == pytest.approx(r["correct"] / 36) for r in rows.values())
    assert rows[("svm", "val")]["accuracy"] > rows[("majority", "val")]["accuracy"]


def test_feature_ridge_beats_the_floor_and_its_card_reproduces_the_predictions(materialized):
    from mlflow.tracking import MlflowClient

    from emo_pipeline.storage.tracking import tracking_uri

    result, root = materialized
    by_key = {m.asset_key.to_user_string(): m.metadata for m in result.asset_materializations_for_node("feature_ridge")}
    metadata = by_key["feature_ridge_model"]
    for metric in ("kl", "chebyshev"):
        assert metadata[f"val_{metric}"].value < metadata[f"val_train_mean_{metric}"].value, metric
    client = MlflowClient(tracking_uri=tracking_uri(root / "mlflow"))
    (version,) = client.search_model_versions("name='feature_ridge_model'")
    assert version.tags["dagster.asset_key"] == "feature_ridge_model" and version.tags["data_fingerprint"]
    run_id = metadata["mlflow_run_id"].value
    assert version.run_id == run_id == by_key["feature_ridge_predictions"]["mlflow_run_id"].value

    # The card carries the features' own settings (this test computes them smaller than the defaults)
    # and the floor chosen on validation, so predicting an image file gives the table's distribution.
    card = load_card(emo_home().models, "feature_ridge")
    assert card.kind == "features" and card.clip == metadata["floor"].value
    assert card.options["glcm_size"] == SMALL_FEATURES["glcm_size"] and card.options["colour_bins"] == 10
    store = Warehouse(root / "warehouse")
    some = store.read_table("emotion6_labels").head(3)
    predicted = predict_images(list(some["image_path"]), "feature_ridge", emo_home().models)
    table = store.read_table("feature_ridge_predictions").set_index("image_key").loc[some["image_key"]]
    np.testing.assert_allclose(predicted.distributions, table[list(PROB_COLUMNS)].to_numpy(), atol=1e-6)
    # The card computes every family of the table (they set the decoding size); the ridge reads the paper's.
    assert tuple(card.options["families"]) == FAMILIES
    model, _ = load_sklearn_model(emo_home().models, "feature_ridge")
    assert list(model.feature_names_in_) == columns_of(list(model.feature_names_in_), PAPER_FAMILIES)
    assert len(model.feature_names_in_) == 6 * 2 * 4 + 6 * 10


@pytest.mark.parametrize("name", ["feature_gbm", "feature_mlp"])
def test_every_feature_model_beats_the_floor_and_its_registered_model_and_card_reproduce_the_predictions(
        materialized, name: str):
    import mlflow.sklearn
    from mlflow.tracking import MlflowClient

    from emo_pipeline.core.metrics import clip_distribution
    from emo_pipeline.storage.tracking import tracking_store, tracking_uri

    result, root = materialized
    by_key = {m.asset_key.to_user_string(): m.metadata for m in result.asset_materializations_for_node(name)}
    metadata = by_key[f"{name}_model"]
    for metric in ("kl", "chebyshev"):
        assert metadata[f"val_{metric}"].value < metadata[f"val_train_mean_{metric}"].value, metric
    assert metadata["features"].value == 6 * 2 * 4 + 6 * 10 + 333
    if name == "feature_gbm":
        assert all(1 <= metadata[f"iterations_{e}"].value <= 150 for e in EMOTIONS)
    else:
        assert all(1 <= metadata[f"epoch_kept_member_{i}"].value <= 40 for i in range(2))
    uri = tracking_uri(root / "mlflow")
    client = MlflowClient(tracking_uri=uri)
    (version,) = client.search_model_versions(f"name='{name}_model'")
    assert version.tags["dagster.asset_key"] == f"{name}_model" and version.tags["data_fingerprint"]
    assert version.run_id == metadata["mlflow_run_id"].value == by_key[f"{name}_predictions"]["mlflow_run_id"].value

    store = Warehouse(root / "warehouse")
    table = store.read_table(f"{name}_predictions").set_index("image_key")
    features = store.read_table("emotion6_features").set_index("image_key").loc[table.index]
    card = load_card(emo_home().models, name)
    assert card.kind == "features" and card.clip == metadata["floor"].value
    assert tuple(card.options["families"]) == FAMILIES
    # The registered version, with the card's floor, gives the table's distributions from the features...
    with tracking_store(root / "mlflow"):
        registered = mlflow.sklearn.load_model(f"models:/{name}_model/{version.version}")
    np.testing.assert_allclose(clip_distribution(registered.predict(features), card.clip),
                               table[list(PROB_COLUMNS)].to_numpy(), atol=1e-9)
    # ... and `predict` computes the features of image files as the table did and gives the same.
    some = store.read_table("emotion6_labels").head(3)
    predicted = predict_images(list(some["image_path"]), name, emo_home().models)
    np.testing.assert_allclose(predicted.distributions, table.loc[some["image_key"], list(PROB_COLUMNS)].to_numpy(),
                               atol=1e-6)


def test_the_patch_network_beats_the_floor_and_its_registered_model_and_card_reproduce_the_predictions(materialized):
    import mlflow.pyfunc
    from mlflow.tracking import MlflowClient

    from emo_pipeline.core.metrics import clip_distribution
    from emo_pipeline.image_emotion.image_data import load_rgb, normalise
    from emo_pipeline.storage.tracking import tracking_store, tracking_uri

    result, root = materialized
    by_key = {m.asset_key.to_user_string(): m.metadata for m in result.asset_materializations_for_node("patch_mlp")}
    metadata = by_key["patch_mlp_model"]
    for metric in ("kl", "chebyshev"):
        assert metadata[f"val_{metric}"].value < metadata[f"val_train_mean_{metric}"].value, metric
    assert metadata["features"].value == 2 * 4 * 32  # two sizes, four quadrants, 32 centroids
    assert all(1 <= metadata[f"epoch_kept_member_{i}"].value <= 30 for i in range(2))
    card = load_card(emo_home().models, "patch_mlp")
    assert (card.kind, card.architecture, card.size, card.flip_tta) == ("patches", "patch_mlp", 32, True)
    assert card.clip == metadata["floor"].value and card.options["centroids"] == 32

    store = Warehouse(root / "warehouse")
    table = store.read_table("patch_mlp_predictions").set_index("image_key")
    some = store.read_table("emotion6_labels").head(3)
    expected = table.loc[some["image_key"], list(PROB_COLUMNS)].to_numpy()
    # `predict` on the image files gives the table's distributions ...
    predicted = predict_images(list(some["image_path"]), "patch_mlp", emo_home().models)
    np.testing.assert_allclose(predicted.distributions, expected, atol=1e-5)
    # ... and so does the registered version, fed normalised 32 px images, with the card's floor.
    client = MlflowClient(tracking_uri=tracking_uri(root / "mlflow"))
    (version,) = client.search_model_versions("name='patch_mlp_model'")
    assert version.run_id == metadata["mlflow_run_id"].value == by_key["patch_mlp_predictions"]["mlflow_run_id"].value
    images = normalise(torch.from_numpy(np.stack([load_rgb(p, 32) for p in some["image_path"]]))).numpy()
    with tracking_store(root / "mlflow"):
        registered = mlflow.pyfunc.load_model(f"models:/patch_mlp_model/{version.version}")
    np.testing.assert_allclose(clip_distribution(registered.predict(images), card.clip), expected, atol=1e-5)
