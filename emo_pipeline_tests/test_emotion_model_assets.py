"""Torch emotion models as assets: trained on a synthetic world, scored, logged and registered in MLflow."""

from pathlib import Path

import dagster as dg
import pytest

from emo_pipeline.definitions import defs
from emo_pipeline_tests.materialize import materialize, project_resources

MODELS = ("small_cnn", "small_cnn_classifier", "resnet18")

# Three torch models trained as assets (minutes on two cores): test_emotion_models.py covers the same
# training code in the fast loop.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def materialized(world_factory, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("emotion_models")
    resources = project_resources(world_factory(seed=5), tmp)
    selection = ["emotion6_labels", "emotion6_rejected", "emotion6_split", "emotion_distribution_metrics"]
    selection += [f"{m}_{part}" for m in MODELS for part in ("model", "predictions")]
    run_config = {"ops": {"resnet18": {"config": {"epochs": 5}}}}
    result = materialize(resources, selection, run_config=run_config, raise_on_error=True)
    return result, resources


def test_models_train_and_beat_the_train_mean_on_validation(materialized):
    result, resources = materialized
    assert result.success
    table = resources["warehouse"].get().read_table("emotion_distribution_metrics").set_index(["model", "split"])
    assert set(table.index.get_level_values("model")) == {"train_mean", "small_cnn", "resnet18"}
    baseline = table.loc[("train_mean", "val")]
    for model in ("small_cnn", "resnet18"):
        row = table.loc[(model, "val")]
        assert row["chebyshev"] < baseline["chebyshev"] and row["kl"] < baseline["kl"], model
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks)


def test_models_are_registered_in_mlflow_with_their_lineage(materialized):
    import mlflow
    from mlflow.tracking import MlflowClient

    from emo_pipeline.storage.tracking import tracking_uri

    result, resources = materialized
    client = MlflowClient(tracking_uri=tracking_uri(Path(resources["mlflow"].root)))
    for model in MODELS:
        # One registered model per model asset, named as the asset; one version per materialization.
        (version,) = client.search_model_versions(f"name='{model}_model'")
        assert version.tags["dagster.run_id"] == result.run_id
        assert version.tags["dagster.asset_key"] == f"{model}_model" and len(version.tags["data_fingerprint"]) == 16
        run = client.get_run(version.run_id)
        assert run.data.tags["dagster.run_id"] == result.run_id
        assert run.data.params["weights_source"].startswith("none: trained from scratch")
        assert "val_loss" in run.data.metrics
    mlflow.set_tracking_uri(tracking_uri(Path(resources["mlflow"].root)))
    model = mlflow.pytorch.load_model("models:/small_cnn_model/1")
    import torch

    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 7)


def test_metadata_says_how_the_model_was_trained(materialized):
    result, _ = materialized
    events = {e.asset_key.to_user_string(): e for e in result.get_asset_materialization_events()}
    metadata = events["resnet18_model"].materialization.metadata
    assert metadata["pretrained"].value is False
    assert metadata["weights_source"].value.startswith("none: trained from scratch")
    assert metadata["epochs_run"].value <= 5
    assert "training_curve" in metadata and "test_samples" in metadata
    # The weights stay; the resume checkpoints of a finished run are gone.
    assert Path(metadata["weights"].value).is_file()
    assert not (Path(metadata["weights"].value).parents[1] / "checkpoints" / "resnet18").exists()
    # The model and its predictions carry the data's fingerprint as data version, and a code version, so
    # the UI shows them stale when the data or the training code changes.
    for key in ("resnet18_model", "resnet18_predictions"):
        assert events[key].materialization.tags["dagster/data_version"] == metadata["data_fingerprint"].value
    versions = {defs.resolve_assets_def(k).code_versions_by_key[dg.AssetKey(k)] for k in ("resnet18_model",
                                                                                          "small_cnn_model")}
    assert len(versions) == 1 and None not in versions  # one training code for every torch image model
