"""MLflow tracking under EMO_HOME: a sqlite store and an artifact folder, no server needed.

MLflow 3 refuses the plain `file:` store, and an experiment created without an artifact location
would drop artifacts into the working directory, so both are set explicitly here. The artifacts
(models included) can go to an object store instead (`artifact_root`, e.g. `s3://bucket/mlflow`):
MLflow writes and reads them there itself.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path


def tracking_uri(mlflow_dir: Path) -> str:
    return f"sqlite:///{Path(mlflow_dir).resolve() / 'mlflow.db'}"


def ensure_experiment(mlflow_dir: Path, name: str, artifact_root: str | None = None) -> str:
    """Create the experiment if needed and return its id. Its artifacts go to `<artifact_root>/<name>`,
    by default `mlflow_dir/artifacts/<name>`; an experiment keeps the location it was created with, so
    one that already lives elsewhere is an error rather than a silent mix."""
    from mlflow.tracking import MlflowClient

    mlflow_dir = Path(mlflow_dir).resolve()
    mlflow_dir.mkdir(parents=True, exist_ok=True)
    location = f"{artifact_root.rstrip('/')}/{name}" if artifact_root else (mlflow_dir / "artifacts" / name).as_uri()
    client = MlflowClient(tracking_uri=tracking_uri(mlflow_dir))
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name, artifact_location=location)
    if artifact_root and experiment.artifact_location != location:
        raise ValueError(f"MLflow experiment {name!r} keeps its artifacts at {experiment.artifact_location}, "
                         f"not {location}: name another experiment for the new location")
    return experiment.experiment_id


@contextlib.contextmanager
def tracking_store(mlflow_dir: Path) -> Iterator[str]:
    """The project's store as MLflow's tracking URI for a block, the previous one restored afterwards:
    MLflow keeps it in MLFLOW_TRACKING_URI, which every later subprocess would otherwise inherit."""
    import mlflow

    previous = os.environ.get("MLFLOW_TRACKING_URI")
    uri = tracking_uri(mlflow_dir)
    mlflow.set_tracking_uri(uri)
    try:
        yield uri
    finally:
        mlflow.set_tracking_uri(previous)  # None unsets the variable again


@contextlib.contextmanager
def mlflow_run(mlflow_dir: Path, experiment: str, run_name: str, tags: Mapping[str, str],
               artifact_root: str | None = None) -> Iterator[object]:
    """An active MLflow run in the project's store, tagged (e.g. with the Dagster run id and asset key)."""
    import mlflow

    with tracking_store(mlflow_dir):
        experiment_id = ensure_experiment(mlflow_dir, experiment, artifact_root)
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=dict(tags)) as run:
            yield run


def tag_model_version(name: str, version: str | int | None, tags: Mapping[str, str] | None) -> None:
    """Set `tags` on version `version` of registered model `name` (in the active tracking store)."""
    if not tags or version is None:
        return
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow.get_tracking_uri())
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, str(value))


def sklearn_requirements() -> list[str]:
    """What loading a skops-serialised scikit-learn model needs, pinned to this environment.

    Giving them to MLflow spares it inferring them, which loads the model again in a subprocess
    (about 15 s per model).
    """
    from importlib.metadata import version

    return [f"{package}=={version(package)}" for package in ("scikit-learn", "skops", "numpy", "scipy")]


def trusted_sklearn_types(model: object) -> list[str] | None:
    """The types skops does not trust by default that `model` is made of, when all are scikit-learn's,
    numpy's or scipy's (the model store's rule for loading, `model_store.load_sklearn_model`): e.g. the
    tree nodes of a HistGradientBoostingRegressor. MLflow records them beside the model to load it."""
    import skops.io

    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    unexpected = [t for t in untrusted if not t.startswith(("sklearn.", "numpy.", "scipy."))]
    if unexpected:
        raise ValueError(f"refusing to log a model made of unexpected types {unexpected[:5]}")
    return untrusted or None


def log_sklearn_model(model: object, name: str, input_example: object, registered_model_name: str | None = None,
                      version_tags: Mapping[str, str] | None = None):
    """Log a fitted scikit-learn model to the active run (skops format: loading it runs no pickle);
    register it under `registered_model_name` when given and tag that version. Returns MLflow's ModelInfo."""
    import mlflow.sklearn

    info = mlflow.sklearn.log_model(
        model, name=name, input_example=input_example, registered_model_name=registered_model_name,
        serialization_format="skops", pip_requirements=sklearn_requirements(),
        skops_trusted_types=trusted_sklearn_types(model))
    if registered_model_name:
        tag_model_version(registered_model_name, info.registered_model_version, version_tags)
    return info


def registered_versions(mlflow_dir: Path, name: str) -> list[dict]:
    """Every version of registered model `name`, oldest first: its version, data fingerprint (tag), the
    run's parameters and final metrics, and when the run started. Empty when the model is unknown."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri(mlflow_dir))
    try:
        versions = client.search_model_versions(f"name='{name}'")
    except MlflowException:
        return []
    out = []
    for version in versions:
        run = client.get_run(version.run_id)
        out.append({"version": int(version.version), "data_fingerprint": version.tags.get("data_fingerprint", ""),
                    "params": dict(run.data.params), "metrics": dict(run.data.metrics),
                    "start_time": run.info.start_time})
    return sorted(out, key=lambda v: v["version"])
