"""Shared fixtures: the real data sets beside the checkout, a fresh EMO_HOME per test session."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from emo_pipeline.core.home import PROJECT_ROOT


def shared_datasets() -> Path:
    return Path(os.environ.get("EMO_SHARED_DATASETS", PROJECT_ROOT.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def real_emotion6() -> Path:
    path = shared_datasets() / "Emotion6"
    if not (path / "ground_truth.txt").is_file():
        pytest.skip(f"the real Emotion6 is not at {path} (set EMO_SHARED_DATASETS to the datasets folder)")
    return path


@pytest.fixture(scope="session")
def real_vg_sample() -> Path:
    path = shared_datasets() / "visual_genome_sample"
    if not (path / "objects.json").is_file():
        pytest.skip(f"the real Visual Genome sample is not at {path} (set EMO_SHARED_DATASETS)")
    return path


@contextlib.contextmanager
def environ(**values: str) -> Iterator[None]:
    """Environment variables set for a block of this process, restored afterwards."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def pipeline_env(home: Path, world: Path, **extra: str) -> dict[str, str]:
    """The environment of a `dagster` or `emo-pipeline` process on a synthetic world, with its own home."""
    return {
        **os.environ,
        "EMO_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "EMO_EMOTION6_DIR": str(world / "Emotion6"),
        "EMO_EMOTIONROI_DIR": str(world / "EmotionROI"),
        "EMO_VG_DIR": str(world / "VG"),
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        **extra,
    }


@pytest.fixture(autouse=True, scope="session")
def _isolated_home(tmp_path_factory: pytest.TempPathFactory):
    """Tests never touch the user's EMO_HOME."""
    home = tmp_path_factory.mktemp("emo_home")
    previous = os.environ.get("EMO_HOME")
    os.environ["EMO_HOME"] = str(home)
    yield home
    if previous is None:
        os.environ.pop("EMO_HOME", None)
    else:
        os.environ["EMO_HOME"] = previous


@pytest.fixture(scope="session")
def objects_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The `objects` and `scenes` groups materialized on the planted datasets A and B of a demo world.

    Returns the warehouse (`store`), the world folder, the asset check results by name, the word
    vectors and the MLflow folder; models and scenes go to the session's EMO_HOME.
    """
    import dagster as dg

    from emo_pipeline.definitions import defs
    from emo_pipeline.defs.shared.resources import MLflowResource, WarehouseResource, WordVectorsResource
    from emo_pipeline.synthetic import write_world
    from emo_pipeline.objects.word_vectors import load_glove
    from emo_pipeline_tests.planted_datasets import write_planted_datasets

    tmp = tmp_path_factory.mktemp("objects")
    world = tmp / "world"
    write_world(world, seed=11, scale="demo", images=False)
    store = write_planted_datasets(world, tmp / "warehouse")
    resources = {**defs.resources, "warehouse": WarehouseResource(root=str(store.root)),
                 "mlflow": MLflowResource(root=str(tmp / "mlflow")),
                 "word_vectors": WordVectorsResource(cache_dir=str(tmp / "word_vectors"))}
    definitions = dg.Definitions(assets=defs.assets, asset_checks=defs.asset_checks, resources=resources)
    graph = definitions.resolve_asset_graph()
    keys = [k for k in graph.get_all_asset_keys() if graph.get(k).group_name in ("objects", "scenes")]
    config = {"ops": {
        **{k.to_user_string(): {"config": {"epochs": 20}} for k in keys
           if k.to_user_string().startswith("objects_emotion_")},
        **{f"emotion_objects_mlp_{d}": {"config": {"epochs": 4, "normalisations": ["count_share", "box_area"]}}
           for d in "ab"}}}
    result = definitions.resolve_implicit_global_asset_job_def().execute_in_process(
        asset_selection=keys, run_config=config, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert result.success
    checks = {e.event_specific_data.check_name: e.event_specific_data.passed for e in result.all_events
              if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    return {"store": store, "world": world, "checks": checks, "vectors": load_glove(tmp / "word_vectors"),
            "mlflow": tmp / "mlflow"}
