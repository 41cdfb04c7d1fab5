"""Tables in an object store: the warehouse's Parquet files in S3 (a moto server on 127.0.0.1), written
and read through fsspec by the same code that writes local files, the catalog on local disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest
import s3fs
from moto.server import ThreadedMotoServer

from emo_pipeline.defs.shared.resources import MLflowResource, WarehouseResource
from emo_pipeline.storage.warehouse import Warehouse
from emo_pipeline_tests.conftest import environ
from emo_pipeline_tests.materialize import group_keys, materialize, project_resources
from emo_pipeline_tests.planted_datasets import write_planted_datasets

BUCKET = "emo-tables"
EMO_PIPELINE = Path(sys.executable).with_name("emo-pipeline")


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    """A local S3 server with one empty bucket; returns the AWS_* variables that point at it, which
    are also set in this process while the module runs."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL_S3": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    try:
        with environ(**env):
            s3fs.S3FileSystem(skip_instance_cache=True).mkdir(BUCKET)
            yield env
    finally:
        server.stop()


@pytest.fixture
def url(s3: dict[str, str]) -> str:
    """A fresh prefix in the bucket for one test."""
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}/tables"


def bucket_listing(url: str) -> list[str]:
    """Every object under `url`, relative to it, straight from the server (no listing cache)."""
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    prefix = url.removeprefix("s3://")
    return sorted(path.removeprefix(prefix + "/") for path in fs.find(prefix))


def test_tables_round_trip_through_s3_and_answer_sql(url: str, tmp_path: Path):
    store = Warehouse(tmp_path / "wh", url)
    scores = pd.DataFrame({"emotion": ["joy", "fear", "joy"], "score": [0.5, 0.25, 0.75]})
    assert store.write_table("scores", scores) == f"{url}/scores.parquet"
    for shard in range(3):
        store.write_partition("shards", f"shard-{shard}", pd.DataFrame({"shard": [shard] * (shard + 1)}),
                              refresh=False)
    store.refresh_views()

    assert bucket_listing(url) == ["scores.parquet", "shards/shard-0.parquet", "shards/shard-1.parquet",
                                   "shards/shard-2.parquet"]
    # Only the catalog is on local disk.
    assert sorted(p.name for p in (tmp_path / "wh").iterdir()) == ["catalog.duckdb", "catalog.lock"]
    pd.testing.assert_frame_equal(store.read_table("scores"), scores)
    assert store.read_table("shards")["shard"].tolist() == [0, 1, 1, 2, 2, 2]
    assert store.table_row_count("shards") == 6
    assert store.head("scores", rows=2)["score"].tolist() == [0.5, 0.25]
    assert store.has_partition("shards", "shard-1") and not store.has_partition("shards", "shard-9")
    assert store.table_sources() == {"scores": f"{url}/scores.parquet", "shards": f"{url}/shards/*.parquet"}
    result = store.query("SELECT emotion, sum(score) AS total FROM scores GROUP BY 1 ORDER BY 1")
    assert result.to_dict("records") == [{"emotion": "fear", "total": 0.25}, {"emotion": "joy", "total": 1.25}]
    assert store.query("SELECT count(*) AS n FROM shards")["n"][0] == 6

    # A table built with SQL from the others goes the same way.
    con = store.connect_scratch()
    try:
        store.write_query("joy", con, "SELECT * FROM scores WHERE emotion = 'joy'")
    finally:
        con.close()
    assert store.query("SELECT sum(score) AS s FROM joy")["s"][0] == 1.25


def test_failed_writes_leave_the_previous_object_and_nothing_else(url: str, tmp_path: Path):
    store = Warehouse(tmp_path / "wh", url)
    store.write_table("kept", pd.DataFrame({"a": [1, 2]}))
    con = store.connect_scratch()
    try:
        with pytest.raises(duckdb.Error, match="half way"):
            store.write_query("kept", con, "SELECT CASE WHEN a = 2 THEN error('half way') ELSE a END AS a FROM kept")
    finally:
        con.close()
    with pytest.raises(RuntimeError, match="crash"), store.table_outputs(["kept", "other"]) as outputs:
        pd.DataFrame({"a": [9]}).to_parquet(outputs["kept"])
        raise RuntimeError("crash before the second table was written")
    assert bucket_listing(url) == ["kept.parquet"]
    assert store.read_table("kept")["a"].tolist() == [1, 2]


@pytest.mark.slow
def test_datasets_built_in_s3_are_byte_identical_to_local_ones(objects_run: dict, url: str, tmp_path: Path):
    """The raw tables, the shards and datasets A and B (DuckDB joins over S3) as on local disk."""
    local = objects_run["store"]
    remote = write_planted_datasets(objects_run["world"], tmp_path / "wh", url)
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    names = set(remote.table_sources())
    assert {"vg_objects", "vg_emotion_predictions", "dataset_a", "dataset_b_objects"} <= names
    for name in sorted(names):
        files = sorted(local.tables_dir.glob(f"{name}/*.parquet")) or [local.table_path(name)]
        for file in files:
            key = file.relative_to(local.tables_dir).as_posix()
            assert fs.cat(f"{url.removeprefix('s3://')}/{key}") == file.read_bytes(), key
    assert remote.table_row_count("dataset_b") == local.table_row_count("dataset_b") > 0


@pytest.mark.slow
def test_raw_assets_materialize_into_s3_and_the_cli_queries_them(objects_run: dict, s3: dict[str, str],
                                                                url: str, tmp_path: Path):
    world, home = objects_run["world"], tmp_path / "home"
    # The resource as a deployment binds it: to EMO_TABLES, read when the run starts.
    with environ(EMO_TABLES=url, EMO_HOME=str(home)):
        resources = project_resources(world, home, warehouse=WarehouseResource.from_environment())
        result = materialize(resources, group_keys("raw"))
    assert result.success
    checks = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert checks and all(check.passed for check in checks)
    paths = {m.asset_key.to_user_string(): m.metadata["path"].value
             for m in result.asset_materializations_for_node("visual_genome")}
    assert paths["vg_objects"] == f"{url}/vg_objects.parquet"
    assert {"emotion6_labels.parquet", "vg_objects.parquet", "vg_rejected.parquet"} <= set(bucket_listing(url))
    assert not (home / "warehouse" / "tables").exists()

    # A user's `emo-pipeline sql`, in its own process, with the tables named by EMO_TABLES: once on the
    # machine that ran the assets, once on another whose catalog is rebuilt from the bucket's listing.
    records = json.loads((world / "VG" / "objects.json").read_text(encoding="utf-8"))
    expected = sum(len(record["objects"]) for record in records)
    env = {**os.environ, **s3, "EMO_HOME": str(home), "EMO_TABLES": url}
    query = "SELECT count(*) AS n FROM vg_objects"
    for extra in ([], ["--refresh", "--warehouse", str(tmp_path / "elsewhere")]):
        shown = subprocess.run([str(EMO_PIPELINE), "sql", query, "--format", "csv", *extra], env=env,
                               capture_output=True, text=True, timeout=120)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.split() == ["n", str(expected)]


def test_an_unreachable_store_is_a_one_line_error(tmp_path: Path):
    env = {**os.environ, "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_MAX_ATTEMPTS": "1", "EMO_HOME": str(tmp_path)}
    shown = subprocess.run([str(EMO_PIPELINE), "sql", "SELECT 1", "--refresh", "--tables", "s3://emo/tables"],
                           env=env, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 2
    assert shown.stderr.startswith("emo-pipeline sql: cannot list the tables at s3://emo/tables: "
                                   "EndpointConnectionError"), shown.stderr
    assert len(shown.stderr.splitlines()) == 1


def test_mlflow_artifacts_and_registered_models_live_in_s3(s3: dict[str, str], tmp_path: Path):
    """A model logged by an asset through the mlflow resource, with EMO_MLFLOW_ARTIFACTS set, is stored
    in the bucket and loads back from the registry with the same outputs; the model store keeps its own
    file (no link reaches a bucket)."""
    import mlflow.pyfunc
    import torch

    from emo_pipeline.models import build_model
    from emo_pipeline.storage.mlflow_models import log_stored_torch_model
    from emo_pipeline.storage.model_store import ModelCard, load_torch_model, save_torch_model
    from emo_pipeline.storage.tracking import ensure_experiment, tracking_store

    root = f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}/mlflow"
    torch.manual_seed(0)
    store, x = tmp_path / "models", torch.randn(3, 3, 32, 32)
    weights = save_torch_model(store, ModelCard(name="tiny", kind="image", architecture="small_cnn", size=32),
                               build_model("small_cnn", pretrained="none")[0])

    @dg.asset
    def tiny_model(context, mlflow: MLflowResource) -> None:
        with mlflow.start_run(context):
            log_stored_torch_model(store, "tiny", x.numpy()[:2], "tiny_model", {"data_fingerprint": "test"})

    with environ(EMO_MLFLOW_ARTIFACTS=root, EMO_HOME=str(tmp_path)):
        assert dg.materialize([tiny_model], resources={"mlflow": MLflowResource.from_environment()}).success
    listing = bucket_listing(root)
    assert any(key.endswith("/MLmodel") for key in listing) and any(key.endswith("/tiny.pt") for key in listing)
    assert not (tmp_path / "mlflow" / "artifacts").exists()
    assert weights.stat().st_nlink == 1

    with tracking_store(tmp_path / "mlflow"):
        loaded = mlflow.pyfunc.load_model("models:/tiny_model/1")
    model, _ = load_torch_model(store, "tiny")
    with torch.inference_mode():
        np.testing.assert_allclose(loaded.predict(x.numpy()), model(x).numpy(), atol=1e-6)
    # The experiment stays where it was made: moving it silently would split its runs.
    with pytest.raises(ValueError, match=f"keeps its artifacts at {root}/emo_pipeline"):
        ensure_experiment(tmp_path / "mlflow", "emo_pipeline", f"s3://{BUCKET}/elsewhere")
