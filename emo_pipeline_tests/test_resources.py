"""Resources: data roots, MLflow tracking under EMO_HOME, the torch device."""

from pathlib import Path

import dagster as dg
import pytest

from emo_pipeline.defs.shared.resources import DataRoots, MLflowResource, TorchDeviceResource


def test_missing_data_root_says_how_to_fix_it(tmp_path: Path):
    roots = DataRoots(emotion6_dir=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"from \$EMO_EMOTION6_DIR\) does not exist: set EMO_EMOTION6_DIR"):
        roots.emotion6()


def test_mlflow_runs_are_tagged_with_their_dagster_lineage(tmp_path: Path):
    from mlflow.tracking import MlflowClient

    from emo_pipeline.storage.tracking import tracking_uri

    @dg.asset
    def tracked(context: dg.AssetExecutionContext, mlflow: MLflowResource) -> None:
        import mlflow as mlflow_api

        with mlflow.start_run(context):
            mlflow_api.log_metric("val_loss", 0.25, step=1)

    resource = MLflowResource(root=str(tmp_path / "mlflow"), experiment="test")
    result = dg.materialize([tracked], resources={"mlflow": resource})
    client = MlflowClient(tracking_uri=tracking_uri(tmp_path / "mlflow"))
    experiment = client.get_experiment_by_name("test")
    assert experiment.artifact_location.startswith((tmp_path / "mlflow" / "artifacts").as_uri())
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.tags["dagster.run_id"] == result.run_id
    assert run.data.tags["dagster.asset_key"] == "tracked"
    assert run.data.metrics["val_loss"] == 0.25


def test_torch_device_resolves_and_refuses_a_missing_gpu():
    import torch

    auto = TorchDeviceResource().torch_device()
    assert auto.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert TorchDeviceResource(device="cpu").autocast_dtype() is None
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="torch sees no CUDA device"):
            TorchDeviceResource(device="cuda").torch_device()
