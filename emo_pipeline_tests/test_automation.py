"""Jobs, the weekly schedule, the data-roots sensor and the automation conditions (defs/automation/).

The automation conditions are evaluated on a copy of the real graph whose assets and checks do nothing
but report success (same keys, dependencies, partitions, conditions and blocking checks), so that the
runs the automation would launch can be replayed in a second each, without training anything.
"""

import json
import os
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from emo_pipeline.definitions import defs
from emo_pipeline.defs import automation
from emo_pipeline.defs.datasets import VG_PREDICTIONS, VG_SHARDS
from emo_pipeline.sources.emotion6 import GROUND_TRUTH
from emo_pipeline.sources.fingerprints import MISSING, fingerprint_folder
from emo_pipeline_tests.materialize import data_roots

REPO = defs.get_repository_def()
GRAPH = defs.resolve_asset_graph()
ALL = {key.to_user_string() for key in GRAPH.get_all_asset_keys()}
EMOTION6_RAW = {"emotion6_labels", "emotion6_rejected"}
EMOTIONROI_RAW = {"emotionroi_maps", "emotionroi_split", "emotionroi_rejected"}
VG_RAW = {"vg_images", "vg_objects", "vg_relationships", "vg_attributes", "vg_rejected"}
SHARDS = VG_SHARDS.get_partition_keys()


def _names(keys) -> set[str]:
    return {key.to_user_string() for key in keys}


def _job_assets(job_name: str) -> set[str]:
    return _names(defs.resolve_job_def(job_name).asset_layer.selected_asset_keys)


# --- schedule, sensors, jobs -----------------------------------------------------------------------

def test_weekly_schedule_runs_the_graph_and_is_off_by_default():
    schedule = REPO.get_schedule_def("weekly_graph_schedule")
    assert schedule.job_name == "unsharded_job"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    minute, hour, day_of_month, month, day_of_week = schedule.cron_schedule.split()
    assert minute.isdigit() and hour.isdigit() and day_of_month == month == "*"
    assert day_of_week.isdigit() and 0 <= int(day_of_week) <= 7  # one day a week
    assert schedule.execution_timezone == "UTC"
    # The rest of the graph (shards, dataset B's side) follows through the automation sensor, which
    # therefore has to cover every asset with a condition; Dagster adds no default sensor beside it.
    sensors = {sensor.name: sensor for sensor in REPO.sensor_defs}
    assert set(sensors) == {"data_roots_sensor", "downstream_automation_sensor"}
    assert sensors["downstream_automation_sensor"].default_status == dg.DefaultSensorStatus.STOPPED
    assert sensors["data_roots_sensor"].default_status == dg.DefaultSensorStatus.STOPPED
    assert sensors["data_roots_sensor"].minimum_interval_seconds == 60
    conditioned = {k for k in GRAPH.get_all_asset_keys() if GRAPH.get(k).automation_condition is not None}
    assert conditioned <= sensors["downstream_automation_sensor"].asset_selection.resolve(GRAPH)


def test_conditions_are_on_everything_with_an_upstream():
    without = {k.to_user_string() for k in GRAPH.get_all_asset_keys() if GRAPH.get(k).automation_condition is None}
    assert without == EMOTION6_RAW | EMOTIONROI_RAW | VG_RAW | set(automation.BY_HAND)
    assert GRAPH.get(dg.AssetKey("emotion6_split")).automation_condition == automation.FOLLOW_UPSTREAM
    shards = GRAPH.get(dg.AssetKey(VG_PREDICTIONS))
    assert shards.automation_condition == automation.FOLLOW_UPSTREAM
    assert shards.backfill_policy == dg.BackfillPolicy.single_run()


def test_jobs_select_what_their_names_say():
    unsharded, shards, after_shards = (_job_assets(job) for job in ("unsharded_job", "vg_predictions_job",
                                                                         "dataset_b_job"))
    assert shards == {VG_PREDICTIONS}
    assert len(SHARDS) == 16 and defs.resolve_job_def("vg_predictions_job").partitions_def == VG_SHARDS
    assert unsharded | shards | after_shards == ALL - set(automation.BY_HAND)
    assert not unsharded & shards and not unsharded & after_shards and not shards & after_shards

    assert _job_assets("raw_job") == EMOTION6_RAW | EMOTIONROI_RAW | VG_RAW | {"emotion6_split"}
    datasets_group = {k.to_user_string() for k in GRAPH.get_all_asset_keys() if GRAPH.get(k).group_name == "datasets"}
    assert _job_assets("datasets_job") == datasets_group - {VG_PREDICTIONS}
    assert _job_assets("datasets_job") == {"dataset_a", "dataset_a_objects", "dataset_b", "dataset_b_objects",
                                           "dataset_b_relationships"}
    evaluation_group = {k.to_user_string() for k in GRAPH.get_all_asset_keys()
                        if GRAPH.get(k).group_name == "evaluation"}
    assert evaluation_group == {"dominant_emotion_accuracy", "emotion_distribution_metrics", "paper_comparison",
                                "planted_truth_recovery", "multi_split_evaluation"}
    # The multi-split evaluation refits every model several times: by hand only, never automated.
    assert _job_assets("evaluation_job") == evaluation_group - {"multi_split_evaluation"} | {
        "object_emotion_metrics", "emotion_object_metrics", "scene_fidelity"}
    for job in ("unsharded_job", "demo_job"):
        assert "multi_split_evaluation" not in _job_assets(job)
    for job in automation.JOBS:
        assert defs.resolve_job_def(job.name).description


# --- fingerprints and the data-roots sensor --------------------------------------------------------

def test_fingerprint_sees_sizes_times_contents_and_skips_hidden_files(tmp_path: Path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "1.jpg").write_bytes(b"jpeg")
    truth = tmp_path / "truth.txt"
    truth.write_text("a\t0.25\n")
    first = fingerprint_folder(tmp_path, ["truth.txt"])
    assert (first.files, first.bytes) == (2, 11)
    assert fingerprint_folder(tmp_path, ["truth.txt"]) == first

    (tmp_path / ".DS_Store").write_bytes(b"x")
    assert fingerprint_folder(tmp_path, ["truth.txt"]) == first

    stat = truth.stat()
    truth.write_text("a\t0.35\n")  # same size, same modification time: only the content hash tells
    os.utime(truth, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert fingerprint_folder(tmp_path, []) == fingerprint_folder(tmp_path, [])
    assert fingerprint_folder(tmp_path, ["truth.txt"]) != first
    assert fingerprint_folder(tmp_path / "absent").digest == MISSING


def _tick(world: Path, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(cursor=cursor, resources={"data_roots": data_roots(world)})
    result = automation.data_roots_sensor(context)
    assert isinstance(result, dg.SensorResult) and result.cursor
    return result


def _requested(result: dg.SensorResult) -> list[set[str]]:
    return [_names(request.asset_selection) for request in result.run_requests or []]


def _rewrite_one_value_in_place(path: Path) -> None:
    """Swap the valence and arousal of the first image that has two different ones: same size, and the
    modification time put back, so that only the content hash can see it."""
    stat = path.stat()
    lines = path.read_text().split("\n")
    for i, line in enumerate(lines[1:], start=1):
        fields = line.split("\t")
        if len(fields) > 2 and fields[1] != fields[2] and len(fields[1]) == len(fields[2]):
            fields[1], fields[2] = fields[2], fields[1]
            lines[i] = "\t".join(fields)
            break
    else:
        raise AssertionError("no row to change")
    path.write_text("\n".join(lines))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size


def test_sensor_requests_the_raw_assets_of_the_data_set_that_changed(world_copy: Path):
    world = world_copy  # the test changes its data sets
    first = _tick(world, None)
    assert _requested(first) == []  # the first look only records
    recorded = json.loads(first.cursor)
    assert set(recorded) == {"emotion6", "emotionroi", "visual_genome"}
    assert MISSING not in {seen["fingerprint"] for seen in recorded.values()}

    second = _tick(world, first.cursor)
    assert _requested(second) == [] and json.loads(second.cursor) == recorded

    _rewrite_one_value_in_place(world / "Emotion6" / GROUND_TRUTH)
    changed = _tick(world, second.cursor)
    assert _requested(changed) == [EMOTION6_RAW]
    request = changed.run_requests[0]
    fingerprint = json.loads(changed.cursor)["emotion6"]["fingerprint"]
    assert fingerprint != recorded["emotion6"]["fingerprint"] and fingerprint[:16] in request.run_key
    assert request.tags["emo/data_set"] == "emotion6"
    assert _requested(_tick(world, changed.cursor)) == []  # recorded: not requested twice

    (world / "VG" / "VG_100K" / "new_image.jpg").write_bytes(b"\xff\xd8\xff\xe0 not much of a picture")
    vg = _tick(world, changed.cursor)
    assert _requested(vg) == [VG_RAW]
    assert vg.run_requests[0].run_key != request.run_key

    # A folder that goes away is recorded without a run (it would fail); its return is a change.
    (world / "EmotionROI").rename(world / "EmotionROI.away")
    gone = _tick(world, vg.cursor)
    assert _requested(gone) == [] and json.loads(gone.cursor)["emotionroi"]["fingerprint"] == MISSING
    (world / "EmotionROI.away").rename(world / "EmotionROI")
    back = _tick(world, gone.cursor)
    assert _requested(back) == [EMOTIONROI_RAW]

    # Every request is a run of raw_job, the job the sensor targets.
    assert automation.data_roots_sensor.job_name == "raw_job"
    assert _job_assets("raw_job") >= EMOTION6_RAW | EMOTIONROI_RAW | VG_RAW


# --- automation conditions -------------------------------------------------------------------------

FAILING_CHECKS: set[dg.AssetCheckKey] = set()


def _stub_assets(assets_def: dg.AssetsDefinition) -> dg.AssetsDefinition:
    @dg.multi_asset(name=assets_def.node_def.name, specs=list(assets_def.specs),
                    check_specs=list(assets_def.check_specs), can_subset=assets_def.can_subset,
                    backfill_policy=assets_def.backfill_policy)
    def _stub(context: dg.AssetExecutionContext):
        for key in sorted(context.selected_asset_keys):
            yield dg.MaterializeResult(asset_key=key)
        for check in context.selected_asset_check_keys:
            yield dg.AssetCheckResult(asset_key=check.asset_key, check_name=check.name,
                                      passed=check not in FAILING_CHECKS)
    return _stub


def _stub_checks(checks_def: dg.AssetChecksDefinition) -> dg.AssetChecksDefinition:
    @dg.multi_asset_check(name=f"stub_{checks_def.node_def.name}", specs=list(checks_def.check_specs),
                          can_subset=True)
    def _stub(context: dg.AssetCheckExecutionContext):
        for check in context.selected_asset_check_keys:
            yield dg.AssetCheckResult(asset_key=check.asset_key, check_name=check.name,
                                      passed=check not in FAILING_CHECKS)
    return _stub


class Automation:
    """The stub graph, an instance, and the automation sensor's last evaluation (its cursor)."""

    def __init__(self):
        self.defs = dg.Definitions(assets=[_stub_assets(a) for a in defs.assets],
                                   asset_checks=[_stub_checks(c) for c in defs.asset_checks],
                                   jobs=automation.JOBS)
        self.graph = self.defs.resolve_asset_graph()
        self.job = self.defs.resolve_implicit_global_asset_job_def()
        self.instance = dg.DagsterInstance.ephemeral()
        self.result = None

    def evaluate(self) -> dict[str, int]:
        """One tick: requested asset -> number of partitions requested."""
        self.result = dg.evaluate_automation_conditions(defs=self.defs, instance=self.instance,
                                                        cursor=self.result.cursor if self.result else None)
        requested = {key.to_user_string(): len(self.result.get_requested_partitions(key))
                     for key in self.graph.get_all_asset_keys()}
        return {name: count for name, count in requested.items() if count}

    def run(self, assets: set[str], *, shards: bool = False, succeed: bool = True) -> None:
        """One run of `assets` (with their checks), as a job, a sensor or the automation would launch it;
        `shards`: all 16 partitions of the sharded predictions in one run (their backfill policy)."""
        tags = ({ASSET_PARTITION_RANGE_START_TAG: SHARDS[0], ASSET_PARTITION_RANGE_END_TAG: SHARDS[-1]}
                if shards else {})
        result = self.job.execute_in_process(instance=self.instance, tags=tags, raise_on_error=False,
                                             asset_selection=[dg.AssetKey(name) for name in sorted(assets)])
        assert result.success == succeed

    def build_the_graph(self) -> None:
        """What `make demo` runs: the three jobs that together cover the graph, in order."""
        self.run(_job_assets("unsharded_job"))
        self.run({VG_PREDICTIONS}, shards=True)
        self.run(_job_assets("dataset_b_job"))


@pytest.fixture(scope="module")
def weekly() -> tuple[Automation, list[dict[str, int]]]:
    """A graph built by the three jobs, then what the weekly schedule sets off: unsharded_job, then
    whatever the automation requests, run the way the backfill daemon runs it."""
    auto = Automation()
    ticks = [auto.evaluate()]
    auto.build_the_graph()
    ticks.append(auto.evaluate())
    auto.run(_job_assets("unsharded_job"))
    ticks.append(auto.evaluate())
    auto.run({VG_PREDICTIONS}, shards=True)        # the backfill: the shards in one run,
    auto.run(set(ticks[-1]) - {VG_PREDICTIONS})    # then what is built on them
    ticks.append(auto.evaluate())
    return auto, ticks


def test_weekly_run_of_unsharded_job_is_followed_by_the_rest_of_the_graph(weekly):
    _, (fresh, built, after_weekly_run, after_backfill) = weekly
    assert fresh == {}  # nothing follows from source tables that were never read
    assert built == {}  # a graph built by the jobs in order leaves nothing to do
    # Nothing the weekly job ran is requested again; the 16 shards and everything built on them are.
    # The automation sensor submits a request with more than one partition, together with the requested
    # assets connected to it, as one backfill: the shards run as one run, the rest after them.
    assert after_weekly_run == {VG_PREDICTIONS: len(SHARDS), **dict.fromkeys(_job_assets("dataset_b_job"), 1)}
    assert _job_assets("unsharded_job") | set(after_weekly_run) == ALL - set(automation.BY_HAND)
    assert after_backfill == {}


def test_a_new_emotion6_ground_truth_retrains_what_depends_on_it_and_nothing_else(weekly):
    auto, _ = weekly
    labels = dg.AssetKey("emotion6_labels")
    downstream = (_names(dg.AssetSelection.assets(labels).downstream().resolve(auto.graph))
                  - {"emotion6_labels", *automation.BY_HAND})  # the by-hand assets are never requested
    unrelated = ALL - downstream - EMOTION6_RAW - set(automation.BY_HAND)
    assert {"emotion6_split", "emotion6_features", "alexnet_model", "resnet18_model", "svm_predictions",
            "feature_ridge_model", "feature_gbm_model", "feature_gbm_predictions", "ensemble_model",
            "esm_resnet_model", "emotion_distribution_metrics", "dataset_a", "emotion6_detections",
            VG_PREDICTIONS, "dataset_b"} <= downstream
    assert {"vg_images", "vg_objects", "emotionroi_maps", "emotionroi_split", "esm_fcn8s_32", "esm_fcn8s_64",
            "object_detector"} <= unrelated

    # What data_roots_sensor requests, with a blocking check of emotion6_labels failing: nothing follows.
    check = next(k for k in auto.graph.asset_check_keys if k.asset_key == labels)
    FAILING_CHECKS.add(check)
    try:
        auto.run(EMOTION6_RAW, succeed=False)
    finally:
        FAILING_CHECKS.discard(check)
    assert auto.evaluate() == {}

    # The same run with its checks passing: what is downstream follows, tick after tick, each tick's
    # request run as the automation would run it. A request only carries along what can share a run
    # with it, so the shards (partitioned) wait for the tick after the metrics that pick their model
    # are rebuilt, and what is built on them for the tick after the shards.
    auto.run(EMOTION6_RAW)
    first = auto.evaluate()
    assert set(first) == _reachable(auto.graph, labels, avoiding=dg.AssetKey(VG_PREDICTIONS)) - set(automation.BY_HAND)
    auto.run(set(first))
    second = auto.evaluate()
    assert second == {VG_PREDICTIONS: len(SHARDS)}
    auto.run({VG_PREDICTIONS}, shards=True)
    third = auto.evaluate()
    assert set(third) == downstream & _job_assets("dataset_b_job")
    auto.run(set(third))
    assert auto.evaluate() == {}

    requested = set(first) | set(second) | set(third)
    assert requested == downstream
    assert not requested & unrelated
    # Built on both datasets, these run once after dataset A and once more after dataset B changes.
    assert set(first) & set(third) <= _job_assets("dataset_b_job") - {"dataset_b"}


def _reachable(graph, start: dg.AssetKey, avoiding: dg.AssetKey) -> set[str]:
    """The assets below `start` (and the rest of its multi-asset) on paths that do not pass through
    `avoiding`, with the rest of any multi-asset that has to run whole."""
    source = graph.get(start).execution_set_asset_keys | {start}
    seen: set[dg.AssetKey] = set()
    todo = list(source)
    while todo:
        node = graph.get(todo.pop())
        for key in {*node.child_keys, *node.execution_set_asset_keys} - seen - source - {avoiding}:
            seen.add(key)
            todo.append(key)
    return _names(seen)
