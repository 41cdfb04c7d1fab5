"""`emo-pipeline demo`: what it plans (stale or missing, and what is built on them), what a newcomer sees
(a line per step, a summary, the log file), a second run that does nothing, a failure named."""

import os
import re
import subprocess
from pathlib import Path

import dagster as dg
import pytest

from emo_pipeline.defs.automation.demo import plan_runs
from emo_pipeline.defs.shared.resources import DataRoots
from emo_pipeline.sources.fingerprints import content_fingerprint
from emo_pipeline_tests.conftest import environ
from emo_pipeline_tests.demo_command import demo_home, run_demo

# --- the plan, on a small graph of its own ---------------------------------------------------------

SHARDS = dg.StaticPartitionsDefinition(["s0", "s1", "s2"])


def _toy(model_code: str = "1", shards: dg.StaticPartitionsDefinition = SHARDS) -> dg.Definitions:
    """raw -> (model, predictions: one step that cannot be split) -> shards (partitioned) -> table;
    raw -> features, beside the model."""

    @dg.asset(code_version="1")
    def raw():
        return dg.MaterializeResult(data_version=dg.DataVersion("raw-1"))

    @dg.asset(deps=[raw], code_version="1")
    def features():
        return dg.MaterializeResult(data_version=dg.DataVersion("features-1"))

    @dg.multi_asset(specs=[dg.AssetSpec("model", deps=[raw], code_version=model_code),
                           dg.AssetSpec("predictions", deps=["model"], code_version=model_code)])
    def training():
        yield dg.MaterializeResult(asset_key="model", data_version=dg.DataVersion("model-1"))
        yield dg.MaterializeResult(asset_key="predictions", data_version=dg.DataVersion("predictions-1"))

    @dg.asset(deps=["predictions"], partitions_def=shards, backfill_policy=dg.BackfillPolicy.single_run())
    def predicted_shards():
        return dg.MaterializeResult()

    @dg.asset(deps=[predicted_shards])
    def table():
        return dg.MaterializeResult()

    return dg.Definitions(assets=[raw, features, training, predicted_shards, table],
                          jobs=[dg.define_asset_job("toy_job", selection=dg.AssetSelection.all())])


def _names(keys) -> set[str]:
    return {key.to_user_string() for key in keys}


def _run_plan(toy: dg.Definitions, instance: dg.DagsterInstance) -> None:
    job = toy.resolve_job_def("toy_job")
    for run in plan_runs(toy, instance, "toy_job", DataRoots()).runs:
        tags = ({"dagster/asset_partition_range_start": run.partitions[0],
                 "dagster/asset_partition_range_end": run.partitions[-1]} if run.partitions else {})
        assert job.execute_in_process(instance=instance, asset_selection=run.keys, tags=tags).success


def test_the_plan_rebuilds_what_is_stale_or_missing_and_what_is_built_on_it():
    instance = dg.DagsterInstance.ephemeral()
    toy = _toy()
    first = plan_runs(toy, instance, "toy_job", DataRoots())
    assert [(_names(run.keys), run.partitions) for run in first.runs] == [
        ({"raw", "features", "model", "predictions"}, ()),
        ({"predicted_shards"}, ("s0", "s1", "s2")),
        ({"table"}, ())]
    assert set(first.reasons.values()) == {"missing", "3 of 3 partitions missing"}
    _run_plan(toy, instance)
    assert plan_runs(toy, instance, "toy_job", DataRoots()).runs == []

    # New training code: the model step (both its assets), the shards built on it and the table.
    changed = _toy(model_code="2")
    plan = plan_runs(changed, instance, "toy_job", DataRoots())
    assert {_names([key]).pop(): why for key, why in plan.reasons.items()} == {
        "model": "has a new code version", "predictions": "has a new code version"}
    assert [(_names(run.keys), run.partitions) for run in plan.runs] == [
        ({"model", "predictions"}, ()), ({"predicted_shards"}, ("s0", "s1", "s2")), ({"table"}, ())]
    _run_plan(changed, instance)
    assert plan_runs(changed, instance, "toy_job", DataRoots()).runs == []

    # A new shard: that shard alone, and what is built on the shards.
    more = _toy(model_code="2", shards=dg.StaticPartitionsDefinition(["s0", "s1", "s2", "s3"]))
    plan = plan_runs(more, instance, "toy_job", DataRoots())
    assert [(_names(run.keys), run.partitions) for run in plan.runs] == [({"predicted_shards"}, ("s3",)),
                                                                        ({"table"}, ())]
    # A selection narrows the job: only what it names is planned.
    narrowed = plan_runs(more, instance, "toy_job", DataRoots(), select="key:predicted_shards")
    assert [(_names(run.keys), run.partitions) for run in narrowed.runs] == [({"predicted_shards"}, ("s3",))]


def test_the_content_fingerprint_ignores_times_and_sees_contents(tmp_path: Path):
    (tmp_path / "images").mkdir()
    picture, truth = tmp_path / "images" / "1.jpg", tmp_path / "truth.txt"
    picture.write_bytes(b"jpeg")
    truth.write_text("a\t0.25\n")
    first = content_fingerprint(tmp_path)
    os.utime(truth, ns=(1, 1))  # written again, byte for byte
    os.utime(picture, ns=(1, 1))
    assert content_fingerprint(tmp_path) == first
    truth.write_text("a\t0.35\n")  # same size, other content
    assert content_fingerprint(tmp_path) != first
    truth.write_text("a\t0.25\n")
    picture.write_bytes(b"jpeg!")  # a picture counts by size
    assert content_fingerprint(tmp_path) != first


# --- the command, on the raw tables, the features and the SVM -------------------------------------

SELECTION = "group:raw or key:emotion6_features or key:svm_dominant_emotion or key:svm_predictions"
STEPS = ("emotion6", "emotionroi", "visual_genome", "emotion6_split", "emotion6_features", "svm")


def _demo(env: dict, *args: str) -> subprocess.CompletedProcess:
    """`emo-pipeline demo` on the test's selection of the graph."""
    return run_demo(env, *args, selection=SELECTION)


def _done(out: str) -> list[str]:
    """The steps the command reported as finished, one line each: `  ok  <time>  <step> ...`."""
    return re.findall(r"^  ok +(?:\d+ min )?[\d.]+ s  (\S+)", out, flags=re.MULTILINE)


def _runs(env: dict) -> int:
    """Runs in the instance (its dagster.yaml reads DAGSTER_HOME)."""
    with environ(DAGSTER_HOME=env["DAGSTER_HOME"]), dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        return instance.get_runs_count()


@pytest.fixture
def demo_env(world_copy: Path, tmp_path: Path) -> dict:
    return demo_home(tmp_path / "home", world_copy)


@pytest.mark.slow
def test_demo_prints_a_line_per_step_and_a_second_run_does_nothing(demo_env: dict, world_copy: Path):
    first = _demo(demo_env)
    assert first.returncode == 0, first.stdout + first.stderr[-3000:]
    out = first.stdout
    assert "DEBUG" not in out and "Traceback" not in out  # those go to the log file
    assert sorted(_done(out)) == sorted(STEPS)
    svm = re.search(r"svm \(2 assets\) .*val accuracy ([0-9.]+) vs ([0-9.]+) most frequent", out)
    assert svm and float(svm[1]) > float(svm[2])
    assert re.search(r"emotion6_labels: [0-9,]+ rows", out)
    assert "14 assets materialized in 1 run" in out
    log = Path(re.search(r"Full Dagster event log: (.+)", out)[1])
    assert log.parent == Path(demo_env["EMO_HOME"]) / "logs"
    logged = log.read_text()
    assert "RUN_SUCCESS" in logged and logged.count("STEP_SUCCESS") >= len(STEPS)
    assert "emo-pipeline demo plan for demo_job: 14 of 14 assets to materialize" in logged
    assert _runs(demo_env) == 1

    # Unchanged data: nothing runs. The world written again byte for byte (new modification times) is
    # unchanged data too.
    second = _demo(demo_env)
    assert second.returncode == 0, second.stdout
    assert "every model is up to date" in second.stdout and "run 1 of" not in second.stdout
    for path in world_copy.rglob("*"):
        os.utime(path, ns=(10**18, 10**18))
    third = _demo(demo_env)
    assert "every model is up to date" in third.stdout
    assert _runs(demo_env) == 1

    # A changed EmotionROI split: its three tables are read again, nothing else (nothing selected reads them).
    split = world_copy / "EmotionROI" / "training_testing_split" / "testing.txt"
    lines = split.read_text().splitlines()
    split.write_text("\n".join(lines[:-1]) + "\n")
    fourth = _demo(demo_env)
    assert fourth.returncode == 0, fourth.stdout
    assert "3 of 14 assets to materialize (0 missing, 3 stale, 0 built on them" in fourth.stdout
    assert _done(fourth.stdout) == ["emotionroi"]
    assert _runs(demo_env) == 2


@pytest.mark.slow
def test_a_failing_step_is_named_with_the_log_file(demo_env: dict, tmp_path: Path):
    env = {**demo_env, "EMO_EMOTION6_DIR": str(tmp_path / "no_such_folder")}
    result = _demo(env)
    assert result.returncode == 1
    assert re.search(r"FAILED: emotion6: .*data folder .*no_such_folder .*does not exist", result.stdout)
    log = Path(re.search(r"Full Dagster event log, with the traceback: (.+)", result.stdout)[1]).read_text()
    # The run's failure and the step's traceback, which the run's own process writes. (A step process's
    # last lines, its STEP_FAILURE among them, reach the log through Dagster's log capture, which may
    # stop copying them before they arrive: it did once with two test workers on two cores.)
    assert "RUN_FAILURE" in log and "Steps failed: ['emotion6']" in log and "FileNotFoundError" in log
    # The other data sets were read all the same; what needs Emotion6 was not.
    assert sorted(_done(result.stdout)) == ["emotionroi", "visual_genome"]
