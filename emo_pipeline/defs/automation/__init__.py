"""Jobs, the weekly schedule, the data-roots sensor and the automation conditions of the graph.

`JOBS` (the whole graph as three runs around the 16 dataset B shards; raw, datasets, evaluation; the
demo's graph, and the paper's large image models, the compact CNN and the patch network, which it leaves out),
`FOLLOW_UPSTREAM`, `weekly_graph_schedule`, `data_roots_sensor` and `downstream_automation_sensor`
(the schedule and sensors are off by default). How they work together: docs/operations.md.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from emo_pipeline.defs.shared.resources import DataRoots
from emo_pipeline.sources import emotion6, emotionroi
from emo_pipeline.sources.fingerprints import MISSING, Fingerprint, fingerprint_folder
from emo_pipeline.sources.visual_genome import OBJECT_ALIAS_FILE, RELATIONSHIP_ALIAS_FILE, VG_TABLES

STOPPED_SCHEDULE = dg.DefaultScheduleStatus.STOPPED
STOPPED_SENSOR = dg.DefaultSensorStatus.STOPPED
TRIGGER_TAG = "emo/trigger"

# --- jobs -------------------------------------------------------------------------------------------

SHARDED = dg.AssetSelection.assets("vg_emotion_predictions")
# Refits the distribution models on several split seeds (tens of minutes): materialized by hand only,
# in no job, and the automation sensor leaves it alone.
BY_HAND = ("multi_split_evaluation",)
BY_HAND_SELECTION = dg.AssetSelection.assets(*BY_HAND)

raw_job = dg.define_asset_job(
    "raw_job", selection=dg.AssetSelection.groups("raw"),
    description="Read the three source data sets into the warehouse.")
unsharded_job = dg.define_asset_job(
    "unsharded_job", selection=dg.AssetSelection.all() - SHARDED.downstream() - BY_HAND_SELECTION,
    description="Every asset except the sharded Visual Genome predictions and what is built on them "
                "(first of the three runs of the whole graph).")
vg_predictions_job = dg.define_asset_job(
    "vg_predictions_job", selection=SHARDED,
    description="The emotion distribution of every Visual Genome image, 16 shards (second of the three runs "
                "of the whole graph). A backfill of all 16 runs as one run (single-run backfill policy).")
dataset_b_job = dg.define_asset_job(
    "dataset_b_job", selection=SHARDED.downstream() - SHARDED,
    description="Dataset B and everything built on it, from the predicted shards (last of the three runs of "
                "the whole graph).")
datasets_job = dg.define_asset_job(
    "datasets_job", selection=dg.AssetSelection.groups("datasets") - SHARDED,
    description="Datasets A and B (per image, per object, per relationship) rebuilt from the tables they "
                "join: the Emotion6 labels and detections, the predicted shards and the Visual Genome "
                "annotations. The shards themselves are vg_predictions_job.")
EVALUATION = (dg.AssetSelection.groups("evaluation")
              | dg.AssetSelection.assets("object_emotion_metrics", "emotion_object_metrics", "scene_fidelity"))
evaluation_job = dg.define_asset_job(
    "evaluation_job", selection=EVALUATION - BY_HAND_SELECTION,
    description="Every score table, from the models and predictions already there: the dominant-emotion "
                "accuracy and distribution metrics of the image models, both directions of the object "
                "models (object_emotion_metrics, emotion_object_metrics) and the scenes' fidelity.")

# The paper's large image models (43M-140M parameters): the slowest steps of the graph on a CPU, and at
# the demo's sizes and epochs they stayed at the train mean on the synthetic world (validation top-1
# no better than it; validation KL within 6% of it). The ensemble and the evaluation tables use
# whichever models are materialized, so the demo runs without them.
PAPER_MODELS = ("alexnet", "alexnet_classifier", "vgg19_bn", "resnet101")


def _model_assets(*names: str) -> dg.AssetSelection:
    """The model and predictions assets of each image model named."""
    return dg.AssetSelection.assets(*(f"{name}_{part}" for name in names for part in ("model", "predictions")))


PAPER_MODEL_ASSETS = _model_assets(*PAPER_MODELS)
paper_models_job = dg.define_asset_job(
    "paper_models_job", selection=PAPER_MODEL_ASSETS,
    description="The paper's AlexNet (distribution and classifier), VGG19-BN and ResNet-101 on Emotion6, for a "
                "GPU or a patient CPU. Afterwards `emo-pipeline demo` brings the ensemble, the evaluation tables "
                "and what is built on them up to date.")
# This project's compact CNN: its 40 epochs at 64 px take about 9 minutes per split of the real Emotion6
# in fp32 (4.5 in bf16, on CPUs with AVX-512 bf16) and took two of the demo's five on the demo world (fp32,
# two busy cores), so it has a job of its own as well.
COMPACT_CNN = "compact_cnn"
COMPACT_CNN_ASSETS = _model_assets(COMPACT_CNN)
compact_cnn_job = dg.define_asset_job(
    f"{COMPACT_CNN}_job", selection=COMPACT_CNN_ASSETS,
    description="This project's compact CNN on Emotion6 (minutes on a CPU). Afterwards `emo-pipeline demo` brings "
                "the ensemble, the evaluation tables and what is built on them up to date.")
# This project's network on learned patch features: about four and a half minutes per split of the real
# Emotion6 on two cores, half of it learning the patch dictionaries and encoding every picture and its
# mirror image, so it is left out of the demo like the compact CNN.
PATCH_MLP = "patch_mlp"
PATCH_MLP_ASSETS = _model_assets(PATCH_MLP)
patch_mlp_job = dg.define_asset_job(
    f"{PATCH_MLP}_job", selection=PATCH_MLP_ASSETS,
    description="This project's network on patch features learned from the training pictures (minutes on a CPU). "
                "Afterwards `emo-pipeline demo` brings the ensemble, the evaluation tables and what is built on "
                "them up to date.")
DEMO = dg.AssetSelection.all() - PAPER_MODEL_ASSETS - COMPACT_CNN_ASSETS - PATCH_MLP_ASSETS - BY_HAND_SELECTION
demo_job = dg.define_asset_job(
    "demo_job", selection=DEMO,
    description="Every stage but the paper's large image models, the compact CNN and the patch network, what "
                "`emo-pipeline demo` (`make demo`) runs: only the assets that are stale or missing and what is built "
                "on them, in up to three runs around the 16 Visual Genome shards.")

JOBS = [raw_job, unsharded_job, vg_predictions_job, dataset_b_job, datasets_job, evaluation_job, demo_job,
        paper_models_job, compact_cnn_job, patch_mlp_job]

# --- automation conditions --------------------------------------------------------------------------

FOLLOW_UPSTREAM = (
    dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()
).with_label("eager, upstream blocking checks passed")


def follow_upstream(spec: dg.AssetSpec) -> dg.AssetSpec:
    """`FOLLOW_UPSTREAM` for an asset that has an upstream, unless it declares a condition itself. The
    source tables (no upstream) are left to data_roots_sensor and the jobs, `BY_HAND` to the user."""
    if not spec.deps or spec.automation_condition is not None or spec.key.to_user_string() in BY_HAND:
        return spec
    return spec.replace_attributes(automation_condition=FOLLOW_UPSTREAM)


downstream_automation_sensor = dg.AutomationConditionSensorDefinition(
    "downstream_automation_sensor",
    target=dg.AssetSelection.all(),
    default_status=STOPPED_SENSOR,
    run_tags={TRIGGER_TAG: "automation"},
    description="Requests each asset when something upstream of it was updated (by data_roots_sensor, "
                "weekly_graph_schedule or by hand) and the upstream blocking checks passed. Off by default.")

# --- weekly schedule --------------------------------------------------------------------------------

WEEKLY_CRON = "0 3 * * 0"  # Sundays, 03:00

weekly_graph_schedule = dg.ScheduleDefinition(
    name="weekly_graph_schedule",
    job=unsharded_job,
    cron_schedule=WEEKLY_CRON,
    execution_timezone="UTC",
    default_status=STOPPED_SCHEDULE,
    tags={TRIGGER_TAG: "weekly"},
    description="The whole graph every Sunday at 03:00 UTC: unsharded_job, then (with "
                "downstream_automation_sensor running) the shards and dataset B's side as one backfill. "
                "Off by default.")

# --- data-roots sensor ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WatchedDataSet:
    name: str
    root: str                  # the DataRoots method that returns its folder
    hashed: tuple[str, ...]    # small files whose contents are hashed, relative to the folder
    tables: tuple[str, ...]    # the raw assets read from it

    @property
    def asset_keys(self) -> list[dg.AssetKey]:
        return sorted(dg.AssetKey(table) for table in self.tables)

    def fingerprint(self, data_roots: DataRoots) -> tuple[Fingerprint, str]:
        """The fingerprint and a description of where it was taken."""
        try:
            folder: Path = getattr(data_roots, self.root)()
        except FileNotFoundError as missing:
            return Fingerprint(MISSING), str(missing)
        return fingerprint_folder(folder, self.hashed), str(folder)


DATA_SETS = (
    WatchedDataSet("emotion6", "emotion6", (emotion6.GROUND_TRUTH,), emotion6.TABLES),
    WatchedDataSet("emotionroi", "emotionroi", tuple(emotionroi.SPLIT_FILES.values()), emotionroi.TABLES),
    WatchedDataSet("visual_genome", "vg", (OBJECT_ALIAS_FILE, RELATIONSHIP_ALIAS_FILE),
                   tuple(f"vg_{table}" for table in VG_TABLES)),
)


def _read_cursor(cursor: str | None) -> dict[str, dict]:
    """The recorded state per data set: {"fingerprint": str, "changes": int}; anything else is dropped
    (and that data set recorded afresh)."""
    try:
        state = json.loads(cursor) if cursor else {}
    except json.JSONDecodeError:
        return {}
    if not isinstance(state, dict):
        return {}
    return {name: {"fingerprint": seen["fingerprint"], "changes": seen.get("changes", 0)}
            for name, seen in state.items()
            if isinstance(seen, dict) and isinstance(seen.get("fingerprint"), str)
            and isinstance(seen.get("changes", 0), int)}


@dg.sensor(
    name="data_roots_sensor",
    job=raw_job,
    minimum_interval_seconds=60,
    default_status=STOPPED_SENSOR,
    description="Fingerprints the three data folders (files, sizes, modification times, ground-truth hashes) "
                "and, when one changes, requests a run of that data set's raw assets. Off by default.",
)
def data_roots_sensor(context: dg.SensorEvaluationContext, data_roots: DataRoots) -> dg.SensorResult:
    previous = _read_cursor(context.cursor)
    state: dict[str, dict] = {}
    requests: list[dg.RunRequest] = []
    notes: list[str] = []
    for data_set in DATA_SETS:
        fingerprint, where = data_set.fingerprint(data_roots)
        seen = previous.get(data_set.name)
        summary = "missing" if fingerprint.missing else f"{fingerprint.files} files, {fingerprint.bytes:,} bytes"
        if seen is None:
            state[data_set.name] = {"fingerprint": fingerprint.digest, "changes": 0}
            notes.append(f"{data_set.name}: recorded ({summary})")
            context.log.info(f"{data_set.name}: first look at {where}, recorded ({summary})")
            continue
        if seen["fingerprint"] == fingerprint.digest:
            state[data_set.name] = seen
            notes.append(f"{data_set.name}: unchanged")
            continue
        changes = seen["changes"] + 1
        state[data_set.name] = {"fingerprint": fingerprint.digest, "changes": changes}
        if fingerprint.missing:
            notes.append(f"{data_set.name}: folder gone")
            context.log.warning(f"{data_set.name}: {where}; nothing requested until the folder is back")
            continue
        context.log.info(f"{data_set.name}: {where} changed ({summary}), requesting "
                         + ", ".join(k.to_user_string() for k in data_set.asset_keys))
        requests.append(dg.RunRequest(
            run_key=f"{data_set.name}:{changes}:{fingerprint.digest[:16]}",
            asset_selection=data_set.asset_keys,
            tags={TRIGGER_TAG: "data_roots_sensor", "emo/data_set": data_set.name,
                  "emo/fingerprint": fingerprint.digest[:16]},
        ))
    cursor = json.dumps(state, sort_keys=True)
    if requests:
        return dg.SensorResult(run_requests=requests, cursor=cursor)
    return dg.SensorResult(skip_reason="; ".join(notes), cursor=cursor)


defs = dg.Definitions(jobs=JOBS, schedules=[weekly_graph_schedule],
                      sensors=[data_roots_sensor, downstream_automation_sensor])
