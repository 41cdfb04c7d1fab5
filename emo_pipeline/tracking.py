"""MLflow tracking under EMO_HOME: a sqlite store and an artifact folder, no server needed.

MLflow 3 refuses the plain `file:` store, and an experiment created without an artifact location
would drop artifacts into the working directory, so both are set explicitly here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path


def tracking_uri(mlflow_dir: Path) -> str:
    return f"sqlite:///{Path(mlflow_dir).resolve() / 'mlflow.db'}"


def ensure_experiment(mlflow_dir: Path, name: str) -> str:
    """Create the experiment (artifacts under `mlflow_dir/artifacts/<name>`) if needed; return its id."""
    from mlflow.tracking import MlflowClient

    mlflow_dir = Path(mlflow_dir).resolve()
    mlflow_dir.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=tracking_uri(mlflow_dir))
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=(mlflow_dir / "artifacts" / name).as_uri())


@contextlib.contextmanager
def mlflow_run(mlflow_dir: Path, experiment: str, run_name: str, tags: Mapping[str, str]) -> Iterator[object]:
    """An active MLflow run in the project's store, tagged (e.g. with the Dagster run id and asset key)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(mlflow_dir))
    experiment_id = ensure_experiment(mlflow_dir, experiment)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=dict(tags)) as run:
        yield run
