"""Reliability: a killed run resumes to the same result, concurrent runs and readers never see a lock
error or a partial file, and dataset B's shards predicted in parallel runs equal a serial run.

The runs are real OS processes (`dagster asset materialize`, with the code location's multiprocess
executor and forkserver), each with its own EMO_HOME and DAGSTER_HOME under a temporary folder.
Meanwhile a reader thread in the test process does what a user would: it lists the warehouse's
Parquet files and opens each one, and queries every view of the DuckDB catalog.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from torch import nn
from torch.utils.data import TensorDataset

from emo_pipeline.core.home import PROJECT_ROOT
from emo_pipeline.core.train_loop import TrainConfig, seed_everything, train
from emo_pipeline.datasets.build import shard_keys
from emo_pipeline.storage.warehouse import Warehouse
from emo_pipeline_tests.conftest import environ, pipeline_env
from emo_pipeline_tests.materialize import materialize, project_resources

DAGSTER = Path(sys.executable).with_name("dagster")
EMOTION6_RAW = ["emotion6_labels", "emotion6_rejected", "emotion6_split"]
VG_RAW = ["vg_images", "vg_objects", "vg_relationships", "vg_attributes", "vg_rejected"]
PREDICTIONS = "vg_emotion_predictions"
EPOCHS = 6
RUN_TIMEOUT = 240  # seconds for one CLI run on two busy cores (imports alone take 10-20 s there)


# -- set-up -------------------------------------------------------------------------------------------

def _emo_home(path: Path):
    """EMO_HOME for in-process runs: models and checkpoints go there."""
    return environ(EMO_HOME=str(path))


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """The thread count the subprocesses get from OMP_NUM_THREADS, for in-process torch work."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def base(world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The session's world with its raw tables ingested, the small CNN trained for one epoch and scored."""
    tmp = tmp_path_factory.mktemp("reliability")
    home = tmp / "base"
    keys = [*EMOTION6_RAW, *VG_RAW, "small_cnn_model", "small_cnn_predictions", "emotion_distribution_metrics"]
    with _emo_home(home), _torch_threads(1):
        result = materialize(project_resources(world, home), keys,
                             run_config={"ops": {"small_cnn": {"config": {"epochs": 1}}}})
    assert result.success
    return {"tmp": tmp, "world": world, "home": home}


def _new_home(base: dict, name: str, tables: list[str] = (), models: bool = False) -> Path:
    """An EMO_HOME with the project's dagster.yaml, some of the base warehouse's tables and its models."""
    home = base["tmp"] / name
    (home / "dagster").mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster" / "dagster.yaml")
    # Dagster creates its sqlite storage on first use. Two runs that start at once on a fresh
    # DAGSTER_HOME both stamp the schema version, and the instance is unusable from then on
    # ("Version table 'alembic_version' has more than one head present"), so the instance is created
    # here first, as a deployed home's would be.
    with environ(DAGSTER_HOME=str(home / "dagster")), dg.DagsterInstance.get() as instance:
        instance.get_runs_count()
    source, target = Warehouse(base["home"] / "warehouse"), Warehouse(home / "warehouse")
    target.tables_dir.mkdir(parents=True)
    for table in tables:
        shutil.copy(source.table_path(table), target.table_path(table))
    if tables:
        target.refresh_views()
    if models:
        shutil.copytree(base["home"] / "models", home / "models")
    return home


def _env(base: dict, home: Path) -> dict[str, str]:
    # One torch thread per run: the same arithmetic in every run, and two runs fit two cores.
    return pipeline_env(home, base["world"], OMP_NUM_THREADS="1")


class Materialization:
    """`dagster asset materialize` in its own session (so that its executor's processes can be killed
    together), its output in a log file."""

    def __init__(self, base: dict, home: Path, select: list[str], *extra: str):
        self.home = home
        self.log = home / f"materialize_{time.monotonic_ns()}.log"
        self.command = [str(DAGSTER), "asset", "materialize", "-m", "emo_pipeline.definitions",
                        "--select", ",".join(select), *extra]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(self.command, cwd=home, env=_env(base, home), stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self) -> int:
        try:
            return self.process.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{' '.join(self.command)} ran over {RUN_TIMEOUT} s:\n{self.output()[-3000:]}") from None

    def succeed(self) -> str:
        code = self.wait()
        assert code == 0, f"{' '.join(self.command)} exited {code}:\n{self.output()[-5000:]}"
        return self.output()

    def session_processes(self) -> list[int]:
        """Processes still alive in the run's session (the CLI, the forkserver, step processes)."""
        alive = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # After the command name: state, ppid, pgrp, session; zombies are already dead.
            if int(fields[3]) == self.process.pid and fields[0] != "Z":
                alive.append(int(entry.name))
        return alive

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@contextlib.contextmanager
def _cleanup(runs: list[Materialization]) -> Iterator[None]:
    """Kill whatever a failing test leaves running."""
    try:
        yield
    finally:
        for run in runs:
            if run.process.poll() is None or run.session_processes():
                run.kill()


# -- the reader -------------------------------------------------------------------------------------------

class Reader(threading.Thread):
    """Polls warehouses as a user would while its `with` block runs, and once more at its end;
    collects every exception instead of stopping.

    Each poll lists the Parquet files under `tables/` (whole tables and partition files) and reads each
    one completely with pyarrow, then asks the catalog for its views and, in a second query, counts the
    rows of each. A name starting with '.' (a write in flight) must never show up as a table or a view.
    Opening the catalog costs DuckDB about 40 ms of CPU, so the reader pauses between polls to leave
    the runs most of the two cores.
    """

    def __init__(self, *roots: Path, pause: float = 0.2):
        super().__init__(daemon=True)
        self.stores = [Warehouse(root) for root in roots]
        self.pause = pause
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.polls = self.files_read = self.queries = 0
        self.tables_seen: set[str] = set()
        self.views_seen: set[str] = set()

    def run(self) -> None:
        while not self.stop.is_set():
            for store in self.stores:
                self.poll(store)
            self.polls += 1
            time.sleep(self.pause)

    def poll(self, store: Warehouse) -> None:
        try:
            files = sorted([*store.tables_dir.glob("*.parquet"), *store.tables_dir.glob("*/*.parquet")])
            for path in files:
                if path.name.startswith(".") or path.parent.name.startswith("."):
                    self.errors.append(f"temporary file listed as a table: {path}")
                pq.read_table(path)  # every column chunk and the footer: a half-written file fails here
                self.files_read += 1
                self.tables_seen.add(path.stem if path.parent == store.tables_dir else path.parent.name)
            if not store.catalog_path.is_file():
                return
            views = store.query("SELECT view_name FROM duckdb_views() WHERE NOT internal "
                                "AND schema_name = 'main'")["view_name"].tolist()
            self.queries += 1
            self.errors += [f"temporary file visible as view {v!r}" for v in views if v.startswith(".")]
            if views:
                union = " UNION ALL ".join(f"SELECT '{v}' AS view, count(*) AS n FROM \"{v}\"" for v in views)
                counts = store.query(union)
                self.queries += 1
                if sorted(counts["view"]) != sorted(views):
                    self.errors.append(f"counted {sorted(counts['view'])} of the views {sorted(views)}")
                self.views_seen.update(views)
        except Exception as exc:  # noqa: BLE001 - every failure a user would see is the finding
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def __enter__(self) -> Reader:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop.set()
        self.join(timeout=60)
        assert not self.is_alive(), "the reader hung"
        for store in self.stores:  # one last look at the final state
            self.poll(store)


def _assert_consistent(store: Warehouse, tables: set[str]) -> None:
    """Every table opens, the catalog has one view per table and no temporary file is left as one."""
    assert set(store.table_sources()) == tables
    views = set(store.query("SELECT view_name FROM duckdb_views() WHERE NOT internal")["view_name"])
    assert views == tables
    for name in tables:
        assert store.query(f'SELECT count(*) AS n FROM "{name}"')["n"].iloc[0] == store.table_row_count(name)
    leftovers = [p for p in store.tables_dir.rglob("*") if p.name.startswith(".")]
    assert leftovers == []


def test_the_reader_notices_a_partial_file_and_a_temporary_view(tmp_path: Path):
    """The reader of the tests below would catch what they rule out."""
    store = Warehouse(tmp_path / "warehouse")
    store.write_table("whole", pd.DataFrame({"a": range(1000)}))
    reader = Reader(store.root)
    reader.poll(store)
    assert reader.errors == [] and reader.views_seen == {"whole"} and reader.tables_seen == {"whole"}

    data = store.table_path("whole").read_bytes()
    store.table_path("half").write_bytes(data[:len(data) // 2])
    reader.poll(store)
    assert len(reader.errors) == 1 and "half.parquet" in reader.errors[0]

    store.table_path("half").unlink()
    con = duckdb.connect(str(store.catalog_path))
    con.execute('CREATE VIEW ".whole.parquet.tmp" AS SELECT 1 AS a')
    con.close()
    reader.poll(store)
    assert any("temporary file visible as view" in error for error in reader.errors[1:])


# -- 1. a run killed in the middle of training ---------------------------------------------------------------

def _checkpoint_epoch(home: Path) -> int:
    """The last finished epoch in the small CNN's resume checkpoint, 0 while there is none."""
    for path in (home / "checkpoints" / "small_cnn").glob("*/last.pt"):
        try:
            # mmap: only the pickled header is read, not the model and optimizer tensors.
            return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"])
        except (FileNotFoundError, RuntimeError, EOFError):
            return 0  # replaced or removed between listing and loading
    return 0


class Killer(threading.Thread):
    """Kills a run's whole session (CLI, forkserver, step process) once `epoch` is checkpointed."""

    def __init__(self, run: Materialization, epoch: int):
        super().__init__(daemon=True)
        self.victim, self.epoch = run, epoch
        self.failure: str | None = None

    def run(self) -> None:
        deadline = time.monotonic() + RUN_TIMEOUT
        while _checkpoint_epoch(self.victim.home) < self.epoch:
            if self.victim.process.poll() is not None:
                self.failure = f"the run ended before it was killed:\n{self.victim.output()[-3000:]}"
                return
            if time.monotonic() > deadline:
                self.failure = f"no checkpoint of epoch {self.epoch}:\n{self.victim.output()[-3000:]}"
                return
            time.sleep(0.01)
        with contextlib.suppress(ProcessLookupError):  # already gone: the exit status below tells
            os.killpg(self.victim.process.pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_run_killed_mid_training_resumes_to_identical_weights_and_predictions(base):
    tables = {*EMOTION6_RAW}
    crashed = _new_home(base, "crashed", sorted(tables))
    straight = _new_home(base, "uninterrupted", sorted(tables))
    # Patience above the epochs: early stopping cannot end the run before the kill.
    overrides = {"epochs": EPOCHS, "patience": EPOCHS + 1}
    config = base["tmp"] / "small_cnn.yaml"
    config.write_text(yaml.safe_dump({"ops": {"small_cnn": {"config": overrides}}}))
    select = ["small_cnn_model", "small_cnn_predictions"]

    runs: list[Materialization] = []
    with Reader(crashed / "warehouse", straight / "warehouse") as reader, _cleanup(runs):
        first = Materialization(base, crashed, select, "-c", str(config))
        runs.append(first)
        killer = Killer(first, epoch=2)
        killer.start()
        # The uninterrupted reference runs in this process meanwhile (the CLI spends its first tens of
        # seconds importing), with the CLI's single torch thread.
        with _emo_home(straight), _torch_threads(1):
            reference = materialize(project_resources(base["world"], straight), select,
                                    run_config={"ops": {"small_cnn": {"config": overrides}}})
        assert reference.success
        killer.join(timeout=RUN_TIMEOUT)
        assert killer.failure is None, killer.failure
        assert first.process.wait(timeout=30) == -signal.SIGKILL
        deadline = time.monotonic() + 30
        while first.session_processes():
            assert time.monotonic() < deadline, "processes of the killed run are still alive"
            time.sleep(0.05)

        killed_after = _checkpoint_epoch(crashed)
        assert 2 <= killed_after < EPOCHS, f"killed after epoch {killed_after}: not in the middle of training"
        assert not (crashed / "models" / "small_cnn.pt").exists()
        assert not Warehouse(crashed / "warehouse").has_table("small_cnn_predictions")
        _assert_consistent(Warehouse(crashed / "warehouse"), tables)

        second = Materialization(base, crashed, select, "-c", str(config))
        runs.append(second)
        log = second.succeed()

    assert f"resuming after epoch {killed_after}" in log
    # The finished run dropped its checkpoints; the warehouse holds the new table and its view.
    assert not list((crashed / "checkpoints" / "small_cnn").glob("*/last.pt"))
    for home in (crashed, straight):
        _assert_consistent(Warehouse(home / "warehouse"), tables | {"small_cnn_predictions"})

    resumed = torch.load(crashed / "models" / "small_cnn.pt", map_location="cpu", weights_only=True)
    uninterrupted = torch.load(straight / "models" / "small_cnn.pt", map_location="cpu", weights_only=True)
    assert resumed.keys() == uninterrupted.keys()
    for name, tensor in uninterrupted.items():
        assert torch.equal(resumed[name], tensor), name
    table = Path("warehouse") / "tables" / "small_cnn_predictions.parquet"
    assert (crashed / table).read_bytes() == (straight / table).read_bytes()

    assert reader.errors == []
    assert reader.polls > 10 and reader.files_read and reader.queries
    assert "small_cnn_predictions" in reader.tables_seen and "small_cnn_predictions" in reader.views_seen


def test_dropout_draws_resume_where_they_stopped(tmp_path: Path):
    """The global random state (dropout's) is part of the checkpoint: resumed == uninterrupted."""
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(96, 10, generator=generator)
    data = TensorDataset(inputs, torch.softmax(torch.randn(96, 7, generator=generator), dim=1))
    config = TrainConfig(epochs=4, lr=0.05, batch_size=32, patience=10)

    def model() -> nn.Module:
        seed_everything(0)
        return nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 7), nn.Softmax(dim=1))

    def crash_after_second(record):
        if record.epoch == 2:
            raise KeyboardInterrupt("killed")

    uninterrupted = model()
    train(uninterrupted, data, data, nn.functional.mse_loss, config, tmp_path / "a", log=lambda _: None)
    with pytest.raises(KeyboardInterrupt):
        train(model(), data, data, nn.functional.mse_loss, config, tmp_path / "b", log=lambda _: None,
              on_epoch=crash_after_second)
    torch.manual_seed(12345)  # whatever ran in between, the checkpoint decides the next draws
    resumed = model()
    assert train(resumed, data, data, nn.functional.mse_loss, config, tmp_path / "b",
                 log=lambda _: None).resumed_from == 2
    for name, tensor in uninterrupted.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name


# -- 2. two runs at once, a reader meanwhile ------------------------------------------------------------------

@pytest.mark.slow
def test_concurrent_runs_and_a_reader_see_no_lock_error_and_no_partial_file(base):
    """Emotion6's tables are rewritten by one run while the other ingests Visual Genome into the same
    warehouse and Dagster instance; a reader lists, opens and queries everything all along."""
    home = _new_home(base, "concurrent", EMOTION6_RAW)
    store = Warehouse(home / "warehouse")
    runs: list[Materialization] = []
    with Reader(store.root) as reader, _cleanup(runs):
        runs += [Materialization(base, home, EMOTION6_RAW), Materialization(base, home, VG_RAW)]
        for run in runs:
            run.succeed()

    assert reader.errors == []
    tables = {*EMOTION6_RAW, *VG_RAW}
    assert reader.views_seen == tables and reader.tables_seen == tables
    assert reader.polls > 10 and reader.queries > reader.polls
    _assert_consistent(store, tables)
    original = Warehouse(base["home"] / "warehouse")
    for name in sorted(tables):  # nothing lost or mixed up between the two runs
        pd.testing.assert_frame_equal(store.read_table(name), original.read_table(name), check_exact=True)


# -- 3. dataset B's shards in parallel runs against one serial run ---------------------------------------------

@pytest.mark.slow
def test_shards_predicted_in_parallel_runs_equal_a_serial_run(base):
    """With the single-run backfill policy a partition range is one run and one step, which predicts its
    shards one after another; the multiprocess executor runs steps, not partitions, in parallel. So shards
    run in parallel as parallel runs: here two `dagster asset materialize --partition-range` runs of eight
    shards each, at once against one warehouse, compared with one in-process run of all sixteen."""
    tables = list(Warehouse(base["home"] / "warehouse").table_sources())
    parallel = _new_home(base, "parallel", tables, models=True)
    serial = _new_home(base, "serial", tables, models=True)
    keys = shard_keys()
    halves = [keys[:len(keys) // 2], keys[len(keys) // 2:]]
    runs: list[Materialization] = []
    with Reader(parallel / "warehouse") as reader, _cleanup(runs):
        runs += [Materialization(base, parallel, [PREDICTIONS], "--partition-range", f"{half[0]}...{half[-1]}")
                 for half in halves]
        with _emo_home(serial), _torch_threads(1):
            result = materialize(project_resources(base["world"], serial), [PREDICTIONS],
                                 tags={"dagster/asset_partition_range_start": keys[0],
                                       "dagster/asset_partition_range_end": keys[-1]})
        assert result.success
        logs = [run.succeed() for run in runs]

    for half, log in zip(halves, logs):
        assert f"predicting {len(half)} shard(s) with small_cnn" in log
    assert reader.errors == []
    assert PREDICTIONS in reader.views_seen
    parallel_store, serial_store = Warehouse(parallel / "warehouse"), Warehouse(serial / "warehouse")
    _assert_consistent(parallel_store, {*tables, PREDICTIONS})
    for key in keys:
        assert (parallel_store.partition_path(PREDICTIONS, key).read_bytes()
                == serial_store.partition_path(PREDICTIONS, key).read_bytes()), key
    in_parallel = parallel_store.query(f"SELECT * FROM {PREDICTIONS} ORDER BY image_id")
    in_series = serial_store.query(f"SELECT * FROM {PREDICTIONS} ORDER BY image_id")
    pd.testing.assert_frame_equal(in_parallel, in_series, check_exact=True)
    assert len(in_parallel) == parallel_store.table_row_count("vg_images")
