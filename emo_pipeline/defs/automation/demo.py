"""`emo-pipeline demo` (what `make demo` runs): the demo's graph materialized in-process against the
instance in $DAGSTER_HOME, one line per finished step on the terminal and the full Dagster event log
in a file under EMO_HOME.

What runs: of a job's assets (`demo_job` by default: every stage but the paper's large image models,
see `emo_pipeline.defs.automation`), those that are missing or stale and everything built on them,
in up to three runs: the assets before the Visual Genome shards, the shards (one run for all of
them, as `dagster asset materialize --partition-range` does it), and the assets built on the shards.
On unchanged data and code a second `make demo` trains nothing and says so.

Stale is Dagster's own notion, the one behind the UI's "Stale" label: the asset's code version
changed (a model's training code or profile settings, see `defs.shared.publisher.code_version`),
or an input's data version differs from the one recorded with its latest materialization. The raw
tables have no inputs inside Dagster: their data version is the content of the folder they read
(`defs.shared.source_versions.source_data_version`), computed here again and compared with the recorded one.

The runs use the job's own executor (multiprocess, two steps at a time). Everything they and their
step processes print goes to the log file; the terminal gets this module's lines.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import traceback
import uuid
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import dagster as dg

from emo_pipeline.core.home import emo_home
from emo_pipeline.defs.automation import TRIGGER_TAG

if TYPE_CHECKING:
    from emo_pipeline.defs.shared.resources import DataRoots

DEFAULT_JOB = "demo_job"
RUN_TOKEN_TAG = "emo/demo_run"  # finds each run while it executes
# The tags `dagster asset materialize --partition-range` puts on a single run over a range of partitions.
PARTITION_RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")
DATA_VERSION_TAG = "dagster/data_version"
WATCHED_EVENTS = {dg.DagsterEventType.ASSET_MATERIALIZATION, dg.DagsterEventType.ASSET_CHECK_EVALUATION,
                  dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE}


class DemoError(Exception):
    """Something to fix before anything runs (no instance, an unknown job): one line, no traceback."""


def job_definition(name: str) -> dg.JobDefinition:
    """The code location's job `name`: what each step process rebuilds (`dg.build_reconstructable_job`)."""
    from emo_pipeline.definitions import defs

    return defs.resolve_job_def(name)


# --- what is stale ----------------------------------------------------------------------------------

def _dagster_stale_status(instance: dg.DagsterInstance, graph, keys: Sequence[dg.AssetKey]
                          ) -> dict[dg.AssetKey, tuple[str, tuple[str, ...]]]:
    """Dagster's stale status of each key, for those STALE or MISSING: (why, partitions affected).

    Internal Dagster API, used here alone: `CachingStaleStatusResolver` is what the UI's "Stale" and
    "Missing" labels come from (code version against the latest materialization's, each input's
    data version against the one recorded with it, partition by partition). The public API offers
    it only to sensors and schedules (`RunRequest(stale_assets_only=True)`). Written against
    dagster 1.13.
    """
    from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
    from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
    from dagster._time import get_current_datetime

    view = AssetGraphView(temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
                          instance=instance, asset_graph=graph)
    resolver = CachingStaleStatusResolver(instance=instance, asset_graph=graph, loading_context=view)
    found: dict[dg.AssetKey, tuple[str, tuple[str, ...]]] = {}
    for key in keys:
        node = graph.get(key)
        partitions = tuple(node.partitions_def.get_partition_keys()) if node.is_partitioned else (None,)
        missing, stale, why = [], [], ""
        for partition in partitions:
            status = resolver.get_status(key, partition)
            if status == StaleStatus.MISSING:
                missing.append(partition)
            elif status == StaleStatus.STALE:
                stale.append(partition)
                if not why:
                    cause = resolver.get_stale_causes(key, partition)[0]
                    dependency = f" ({cause.dependency.asset_key.to_user_string()})" if cause.dependency else ""
                    why = f"{cause.reason}{dependency}"
        affected = tuple(p for p in partitions if p is not None and (p in missing or p in stale))
        if missing and not stale:
            found[key] = ("missing" if not node.is_partitioned else f"{len(missing)} of {len(partitions)} "
                          "partitions missing", affected)
        elif stale:
            found[key] = (why if not node.is_partitioned else f"{why}, {len(affected)} partitions", affected)
    return found


def _changed_sources(instance: dg.DagsterInstance, keys: set[dg.AssetKey], data_roots: DataRoots
                     ) -> tuple[dict[dg.AssetKey, str], set[dg.AssetKey]]:
    """The raw tables among `keys` whose folder's content (or reader) differs from what they last read,
    with why; and every raw table looked at."""
    from emo_pipeline.defs.automation import DATA_SETS
    from emo_pipeline.defs.shared.source_versions import READER_CODE_VERSIONS, source_data_version

    changed: dict[dg.AssetKey, str] = {}
    looked: set[dg.AssetKey] = set()
    for data_set in DATA_SETS:
        tables = [key for key in data_set.asset_keys if key in keys]
        if not tables:
            continue
        looked.update(tables)
        try:
            current = source_data_version(data_set.name, getattr(data_roots, data_set.root)()).value
        except FileNotFoundError as missing:
            changed.update(dict.fromkeys(tables, f"its folder is missing ({missing})"))
            continue
        for key in tables:
            latest = instance.get_latest_materialization_event(key)
            recorded = latest.asset_materialization.tags.get(DATA_VERSION_TAG) if latest else None
            if recorded is None:
                changed[key] = "missing" if latest is None else "never read with a content version"
            elif recorded != current:
                reader_changed = not recorded.startswith(READER_CODE_VERSIONS[data_set.name] + "-")
                changed[key] = "its reader's code changed" if reader_changed else "its files changed"
    return changed, looked


@dataclass
class PlannedRun:
    label: str
    keys: list[dg.AssetKey]
    partitions: tuple[str, ...] = ()


@dataclass
class Plan:
    job: str
    selected: set[dg.AssetKey]
    reasons: dict[dg.AssetKey, str]   # stale or missing themselves, and why
    runs: list[PlannedRun]

    @property
    def keys(self) -> set[dg.AssetKey]:
        return {key for run in self.runs for key in run.keys}


def plan_runs(defs: dg.Definitions, instance: dg.DagsterInstance, job: str, data_roots: DataRoots,
              select: str | None = None) -> Plan:
    """The runs that bring the job's assets (those of `select` among them, a Dagster selection string)
    up to date: the stale or missing ones and everything downstream of them in the selection."""
    graph = defs.resolve_asset_graph()
    selected = set(defs.resolve_job_def(job).asset_layer.selected_asset_keys)
    if select:
        selected &= dg.AssetSelection.from_string(select).resolve(graph)
    reasons, sources = _changed_sources(instance, selected, data_roots)
    stale = _dagster_stale_status(instance, graph, sorted(selected - sources))
    reasons.update({key: why for key, (why, _) in stale.items()})
    if not reasons:
        return Plan(job, selected, reasons, [])
    # What is built on a stale asset is rebuilt with it: its new version may change everything below.
    todo = dg.AssetSelection.assets(*reasons).downstream().resolve(graph) & selected
    for key in list(todo):  # a multi-asset that cannot be split runs whole
        assets_def = defs.resolve_assets_def(key)
        if not assets_def.can_subset:
            todo |= set(assets_def.keys) & selected
    partitioned = {key for key in graph.get_all_asset_keys() if graph.get(key).is_partitioned}
    after = dg.AssetSelection.assets(*partitioned).downstream().resolve(graph) - partitioned if partitioned else set()
    runs = []
    before = sorted(todo - partitioned - after)
    if before:
        runs.append(PlannedRun("before the Visual Genome shards" if partitioned & todo or after & todo else "", before))
    for key in sorted(todo & partitioned):
        every = tuple(graph.get(key).partitions_def.get_partition_keys())
        upstream_changed = key in dg.AssetSelection.assets(*(set(reasons) - {key})).downstream().resolve(graph) \
            if set(reasons) - {key} else False
        needed = every if upstream_changed or key not in stale else stale[key][1]
        # One run over a contiguous range; shards already current inside it are kept by the asset.
        span = every[every.index(needed[0]):every.index(needed[-1]) + 1]
        runs.append(PlannedRun(f"{len(span)} shards", [key], span))
    rest = sorted(todo & after)
    if rest:
        runs.append(PlannedRun("built on the shards", rest))
    return Plan(job, selected, reasons, runs)


# --- terminal and log file ------------------------------------------------------------------------

class Terminal:
    """Lines for the person at the terminal, from the main thread and the run watcher alike."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self._lock = threading.Lock()

    def line(self, text: str = "") -> None:
        with self._lock:
            self.stream.write(text + "\n")
            self.stream.flush()


@contextlib.contextmanager
def output_to_log(log_path: Path) -> Iterator[Terminal]:
    """From here on, everything this process and the processes it starts write to stdout or stderr
    (Dagster's event log at DEBUG, warnings, library output) goes to `log_path`; the Terminal writes
    to the terminal the command was started from."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    terminal = open(os.dup(saved_out), "w", encoding="utf-8", errors="replace", closefd=True)  # noqa: SIM115
    with open(log_path, "a", encoding="utf-8") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield Terminal(terminal)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            os.close(saved_out)
            os.close(saved_err)
            terminal.close()


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


# --- what each finished step shows ----------------------------------------------------------------

def _values(metadata: Mapping[str, Any]) -> dict[str, Any]:
    return {name: getattr(value, "value", value) for name, value in metadata.items()}


def _against(label: str, value: float, floor: float, floor_label: str, lower_is_better: bool,
             digits: int = 3) -> str:
    better = value < floor if lower_is_better else value > floor
    return f"{label} {value:.{digits}f} vs {floor:.{digits}f} {floor_label}{'' if better else ' (NOT better)'}"


def key_figure(asset: str, metadata: Mapping[str, Any]) -> str:
    """The figure a newcomer wants for a finished asset: a model's validation score beside its floor
    (train mean, mean map, most frequent), a table's rows."""
    from emo_pipeline.core.profiles import CLASSIFIERS

    m = _values(metadata)
    if asset.removesuffix("_model") in CLASSIFIERS and "val_top1" in m:
        return _against("val top-1", m["val_top1"], m["val_train_mean_top1"], "train mean", False)
    if "val_kl" in m and "val_train_mean_kl" in m:
        return _against("val KL", m["val_kl"], m["val_train_mean_kl"], "train mean", True)
    if "val_mse" in m and "val_mse_mean_map" in m:
        return _against("val MSE", m["val_mse"], m["val_mse_mean_map"], "mean map", True, 4)
    if "val_accuracy" in m and "majority_val_accuracy" in m:
        return _against("val accuracy", m["val_accuracy"], m["majority_val_accuracy"], "most frequent", False)
    if "val_mAP50" in m:
        return f"val mAP50 {m['val_mAP50']:.3f} over {m.get('n_classes', '?')} classes"
    if "pretraining_val_mAP50" in m:
        return (f"pretrained weights, no training (val mAP50 {m['pretraining_val_mAP50']:.3f} over "
                f"{m.get('n_classes', '?')} classes on the world they were trained on)")
    if "chosen_normalisation" in m:
        chosen = m["chosen_normalisation"]
        ndcg = m.get(f"val_ndcg10_{chosen}")
        if ndcg is not None and "val_ndcg10_most_frequent" in m:
            return _against(f"val nDCG@10 ({chosen})", ndcg, m["val_ndcg10_most_frequent"], "most frequent", False)
        return f"serves {chosen}"
    if "members" in m and "test_kl" in m and "test_train_mean_kl" in m:
        return f"{m['members']}: " + _against("test KL", m["test_kl"], m["test_train_mean_kl"], "train mean", True)
    if "test_kl" in m and "test_train_mean_kl" in m:
        return _against("test KL", m["test_kl"], m["test_train_mean_kl"], "train mean", True)
    if "figures_met" in m:
        return f"planted truth: {m['figures_met']} of {m['figures']} figures reach their targets"
    if "images_predicted" in m:
        return f"{m['images_predicted']:,} images predicted by {m.get('model', '?')}" + (
            f", {m['images_kept_from_earlier_run']:,} kept" if m.get("images_kept_from_earlier_run") else "")
    if "dagster/row_count" in m:
        return f"{m['dagster/row_count']:,} rows"
    return ""


INTERRUPTED = "interrupted"


def _figure(asset: str, metadata: Mapping[str, Any]) -> str:
    """`key_figure`, or nothing when the metadata is not what it expects (the line still shows the step)."""
    try:
        return key_figure(asset, metadata)
    except (KeyError, TypeError, ValueError):
        traceback.print_exc()  # into the log
        return ""


def _error_text(error) -> str:
    """The innermost cause of a step's error, first line: what the user's code raised."""
    while error is not None and error.cause is not None:
        error = error.cause
    if error is None:
        return "failed"
    if error.cls_name == "DagsterExecutionInterruptedError":  # Ctrl-C
        return INTERRUPTED
    return (error.message or "").strip().splitlines()[0] if (error.message or "").strip() else error.cls_name


@dataclass
class RunRecord:
    """What one run did, from its events."""

    materialized: dict[str, dict[str, Any]] = field(default_factory=dict)   # asset -> metadata
    failed_steps: dict[str, str] = field(default_factory=dict)              # step -> error
    failed_checks: list[str] = field(default_factory=list)
    warned_checks: list[str] = field(default_factory=list)


class Progress:
    """Turns a run's events into lines: one per finished step that materialized something, one per
    failed step and per failed check."""

    def __init__(self, terminal: Terminal):
        self.terminal = terminal
        self.record = RunRecord()
        self._by_step: dict[str, dict[str, Any]] = defaultdict(dict)
        self._partitions: dict[str, int] = defaultdict(int)

    def __call__(self, record) -> None:
        entry = record.event_log_entry
        event = entry.dagster_event
        kind, step = event.event_type, event.step_key or ""
        if kind == dg.DagsterEventType.ASSET_MATERIALIZATION:
            materialization = entry.asset_materialization
            name = materialization.asset_key.to_user_string()
            self.record.materialized[name] = dict(materialization.metadata)
            self._by_step[step][name] = materialization.metadata  # a partitioned asset: its last partition
            if materialization.partition:
                self._partitions[step] += 1
        elif kind == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            check = event.event_specific_data
            if not check.passed:
                name = f"{check.asset_key.to_user_string()}:{check.check_name}"
                warning = check.severity == dg.AssetCheckSeverity.WARN
                (self.record.warned_checks if warning else self.record.failed_checks).append(name)
                self.terminal.line(f"  {'warn' if warning else 'CHECK':<6} {'':>9}  {name}: "
                                   f"{check.description or 'failed'}")
        elif kind == dg.DagsterEventType.STEP_SUCCESS and self._by_step.get(step):
            assets = self._by_step[step]
            seconds = event.event_specific_data.duration_ms / 1000
            label = step if len(assets) == 1 else f"{step} ({len(assets)} assets)"
            if self._partitions[step]:
                label = f"{step} ({self._partitions[step]} partitions)"
            figures = [(name, figure) for name, figure in ((n, _figure(n, md)) for n, md in assets.items())
                       if figure]
            # A model's score says more than its predictions table's row count.
            shown = [(name, figure) for name, figure in figures if not figure.endswith(" rows")] or figures
            text = shown[0][1] if len(shown) == 1 else "; ".join(f"{name}: {figure}" for name, figure in shown)
            self.terminal.line(f"  {'ok':<6} {duration(seconds):>9}  {label:<34} {text}".rstrip())
        elif kind == dg.DagsterEventType.STEP_FAILURE:
            error = _error_text(event.event_specific_data.error)
            self.record.failed_steps[step] = error
            self.terminal.line(f"  {'FAILED' if error != INTERRUPTED else 'stop':<6} {'':>9}  {step}: {error}")


class RunWatcher(threading.Thread):
    """Reads the events of the run tagged `token` from the instance while `execute_job` runs it."""

    def __init__(self, instance: dg.DagsterInstance, token: str, on_record: Progress):
        super().__init__(daemon=True, name="demo-run-watcher")
        self.instance, self.token, self.on_record = instance, token, on_record
        self.run_id: str | None = None
        self._cursor: str | None = None
        self._done = threading.Event()

    def finish(self) -> None:
        self._done.set()
        self.join()

    def _drain(self) -> None:
        if self.run_id is None:
            found = self.instance.get_run_records(filters=dg.RunsFilter(tags={RUN_TOKEN_TAG: self.token}), limit=1)
            if not found:
                return
            self.run_id = found[0].dagster_run.run_id
        while True:
            page = self.instance.get_records_for_run(self.run_id, cursor=self._cursor, of_type=WATCHED_EVENTS,
                                                     limit=500)
            for record in page.records:
                self.on_record(record)
            self._cursor = page.cursor
            if not page.has_more:
                return

    def _look(self) -> None:
        """One look; a failed read (the event log's sqlite file busy) goes to the log and is tried again."""
        try:
            self._drain()
        except Exception:  # the next look reads from the same cursor
            traceback.print_exc()

    def run(self) -> None:
        while not self._done.wait(0.5):
            self._look()
        for _ in range(3):  # what the run wrote after the last look
            self._look()


# --- the summary ----------------------------------------------------------------------------------

def _folder_size(root: Path) -> int:
    """Bytes under `root`, each hard-linked file counted once (what `du` reports)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                stat = os.lstat(os.path.join(folder, name))
            except FileNotFoundError:
                continue
            if (stat.st_dev, stat.st_ino) not in seen:
                seen.add((stat.st_dev, stat.st_ino))
                total += stat.st_blocks * 512
    return total


def _leftovers(home: Path) -> list[str]:
    """Resume checkpoints and ultralytics run weights still on disk: a finished run leaves none."""
    found = [p for p in (home / "checkpoints").rglob("*") if p.is_file()]
    found += [p for p in (home / "detector").glob("runs/*/weights/*") if p.is_file()]
    return [str(p) for p in found]


def _best_model(home) -> str:
    """The best image model as dataset B chooses it (lowest validation Chebyshev), beside the train mean."""
    from emo_pipeline.image_emotion.predict import default_model, validation_scores
    from emo_pipeline.storage.warehouse import Warehouse

    try:
        scores = validation_scores(Warehouse(home.warehouse, home.tables))
        best = default_model(home.models, scores)
    except (FileNotFoundError, OSError, ValueError):
        return ""
    if best not in scores:
        return f"Best image model: {best}."
    floor = f", train mean {scores['train_mean']:.3f}" if "train_mean" in scores else ""
    return (f"Best image model: {best}, validation Chebyshev {scores[best]:.3f}{floor} "
            "(the lowest; dataset B is predicted with it).")


def _planted_truth(home) -> str:
    """How many planted-truth figures reach their targets, per stage (empty on real data)."""
    from emo_pipeline.storage.warehouse import Warehouse

    try:
        store = Warehouse(home.warehouse, home.tables)
        table = store.read_table("planted_truth_recovery") if store.has_table("planted_truth_recovery") else None
    except (FileNotFoundError, OSError, ValueError):
        return ""
    if table is None or table.empty:
        return ""
    stages = table.groupby("stage", sort=False)["met"].agg(["sum", "size"])
    per_stage = ", ".join(f"{stage} {int(row['sum'])} of {int(row['size'])}" for stage, row in stages.iterrows())
    return (f"Planted truth recovered: {int(table['met'].sum())} of {len(table)} figures reach their targets "
            f"({per_stage}).")


def _command(name: str) -> str:
    """How to call one of this environment's commands from the current folder."""
    path = Path(sys.executable).with_name(name)
    if path.is_file():
        relative = os.path.relpath(path)
        return relative if not relative.startswith("..") else str(path)
    return name


def _summary(terminal: Terminal, plan: Plan, records: list[RunRecord], began: float, log_path: Path, job: str) -> None:
    from emo_pipeline.defs.automation import COMPACT_CNN, PAPER_MODELS

    home = emo_home()
    materialized = {name: md for record in records for name, md in record.materialized.items()}
    # A trained model registers an MLflow model version (the detector records that it trained).
    trained = sorted(name for name, md in materialized.items()
                     if "mlflow_model" in md or getattr(md.get("trained"), "value", False) is True)
    terminal.line()
    if plan.runs:
        terminal.line(f"Done in {duration(time.perf_counter() - began)}: {len(materialized)} assets materialized "
                      f"in {len(records)} run{'s' if len(records) != 1 else ''}, {len(trained)} models trained.")
    best = _best_model(home)
    if best:
        terminal.line(best)
    planted = _planted_truth(home)
    if planted:
        terminal.line(planted)
    if job == DEFAULT_JOB:
        terminal.line(f"Not in the demo: {', '.join(PAPER_MODELS)} (the paper's large models; "
                      f"`{_command('emo-pipeline')} demo --job paper_models_job` trains them, for a GPU or a "
                      f"patient CPU), and {COMPACT_CNN} (ours, minutes on a CPU: `{_command('emo-pipeline')} demo "
                      f"--job {COMPACT_CNN}_job`).")
    warned = [c for record in records for c in record.warned_checks]
    if warned:
        terminal.line(f"Checks that warned (the graph went on): {', '.join(warned)}.")
    leftovers = _leftovers(home.root)
    if leftovers:
        terminal.line(f"Left on disk by a training step: {', '.join(leftovers[:5])}"
                      + (f" and {len(leftovers) - 5} more" if len(leftovers) > 5 else ""))
    terminal.line(f"EMO_HOME {home.root}: {_folder_size(home.root) / 2**20:,.0f} MiB (as `du -sh` counts it).")
    cli = _command("emo-pipeline")
    terminal.line("Next:")
    terminal.line("  make ui          # the Dagster UI: lineage, every asset's metadata and plots, these runs")
    terminal.line("  make mlflow-ui   # MLflow: parameters, training curves and registered versions of every model")
    terminal.line(f'  {cli} sql "SELECT model, split, kl, chebyshev FROM emotion_distribution_metrics '
                  'ORDER BY split, kl"')
    if planted:
        terminal.line(f'  {cli} sql "SELECT stage, figure, value, target, met FROM planted_truth_recovery"')
    terminal.line(f"  {cli} objects --joy 0.7 --surprise 0.3 -k 10")
    terminal.line(f"  {cli} scene --joy 0.8 --surprise 0.2 --out scenes/")
    terminal.line(f"Full Dagster event log: {log_path}")


# --- the command ----------------------------------------------------------------------------------

def _data_roots() -> DataRoots:
    """The data roots as the runs will see them: the environment variables, else the synthetic world."""
    from emo_pipeline.defs.shared.resources import DATA_ROOT_ENV, DataRoots

    return DataRoots(**{name: os.environ.get(env) or None for name, env in DATA_ROOT_ENV.items()})


def _execute(run: PlannedRun, job: str, instance: dg.DagsterInstance, terminal: Terminal) -> RunRecord:
    token = uuid.uuid4().hex
    tags = {TRIGGER_TAG: "demo", RUN_TOKEN_TAG: token}
    if run.partitions:
        tags.update(zip(PARTITION_RANGE_TAGS, (run.partitions[0], run.partitions[-1])))
    progress = Progress(terminal)
    watcher = RunWatcher(instance, token, progress)
    watcher.start()
    try:
        result = dg.execute_job(dg.build_reconstructable_job(__name__, "job_definition", reconstructable_args=(job,)),
                                instance=instance, tags=tags, asset_selection=run.keys)
    finally:
        watcher.finish()
    if not result.success and not progress.record.failed_steps:  # the watcher could not read them
        failures = {event.step_key: _error_text(event.event_specific_data.error)
                    for event in result.all_events if event.event_type == dg.DagsterEventType.STEP_FAILURE}
        progress.record.failed_steps.update(failures or {"run": "the run failed"})
    return progress.record


# The executor runs two steps at once (definitions.py). Torch's default of one thread per core then
# puts two threads on each core, and their spin-waits cost far more than they bring: an FCN-8s batch
# on 2 busy cores took 2.0 s with 2 threads against 0.17 s with 1. The step processes inherit this.
STEPS_AT_ONCE = 2


def _threads_per_step() -> int:
    return max(1, len(os.sched_getaffinity(0)) // STEPS_AT_ONCE)


def run_demo(job: str = DEFAULT_JOB, select: str | None = None) -> int:
    """Bring `job`'s assets (or those of `select` among them) up to date; the exit status."""
    began = time.perf_counter()
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # a value the user set is kept
        os.environ.setdefault(variable, str(_threads_per_step()))
    home = emo_home()
    dagster_home = os.environ.get("DAGSTER_HOME")
    if not dagster_home or not Path(dagster_home, "dagster.yaml").is_file():
        raise DemoError(f"DAGSTER_HOME={dagster_home or '(unset)'} holds no dagster.yaml: run `make demo`, or "
                        "`make home` and then this command with the same EMO_HOME")
    log_path = home.logs / f"demo-{datetime.now(UTC):%Y%m%d-%H%M%S}.log"
    with output_to_log(log_path) as terminal:
        try:
            return _run(terminal, job, select, began, log_path)
        except Exception as exc:  # the traceback goes to the log, one line to the terminal
            traceback.print_exc()
            terminal.line(f"error: {type(exc).__name__}: {exc}".splitlines()[0])
            terminal.line(f"Full log, with the traceback: {log_path}")
            return 1


def _run(terminal: Terminal, job: str, select: str | None, began: float, log_path: Path) -> int:
    terminal.line(f"emo-pipeline demo: {job}{f' ({select})' if select else ''}, profile "
                  f"{os.environ.get('EMO_PROFILE', 'demo')}, EMO_HOME {emo_home().root}")
    from emo_pipeline.definitions import defs

    if job not in {j.name for j in defs.resolve_all_job_defs()}:
        terminal.line(f"no job {job!r} in the code location; `dagster job list -m emo_pipeline.definitions` lists them")
        return 2
    loaded = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        plan = plan_runs(defs, instance, job, _data_roots(), select)
        _write_plan(plan)
        if not plan.runs:
            terminal.line(f"  every model is up to date: the {len(plan.selected)} assets of {job} match their code "
                          f"and data (checked in {duration(time.perf_counter() - loaded)}); nothing to run")
            _summary(terminal, plan, [], began, log_path, job)
            return 0
        missing = sum(1 for why in plan.reasons.values() if "missing" in why)
        terminal.line(f"  code location loaded in {duration(loaded - began)}; {len(plan.keys)} of {len(plan.selected)} "
                      f"assets to materialize ({missing} missing, {len(plan.reasons) - missing} stale, "
                      f"{len(plan.keys) - len(plan.reasons)} built on them; the log says why for each)")
        records: list[RunRecord] = []
        for number, run in enumerate(plan.runs, 1):
            started = time.perf_counter()
            shown = f"{run.partitions[0]}...{run.partitions[-1]}" if run.partitions else f"{len(run.keys)} assets"
            terminal.line(f"run {number} of {len(plan.runs)}: {shown}{f', {run.label}' if run.label else ''}")
            try:
                record = _execute(run, job, instance, terminal)
            except KeyboardInterrupt:
                terminal.line(f"interrupted; what finished is recorded in the instance. Full log: {log_path}")
                return 130
            records.append(record)
            if record.failed_steps and set(record.failed_steps.values()) == {INTERRUPTED}:
                terminal.line(f"interrupted: what finished is kept, and the next `emo-pipeline demo` does the rest. "
                              f"Full log: {log_path}")
                return 130
            if record.failed_steps:
                terminal.line()
                for step, error in record.failed_steps.items():
                    terminal.line(f"FAILED: {step}: {error}")
                left = len(plan.keys) - sum(len(r.materialized) for r in records)
                terminal.line(f"{left} assets of the plan were not materialized. Full Dagster event log, with the "
                              f"traceback: {log_path}")
                return 1
            terminal.line(f"  run {number} finished in {duration(time.perf_counter() - started)}")
        _summary(terminal, plan, records, began, log_path, job)
    return 0


def _write_plan(plan: Plan) -> None:
    """Why each asset runs, into the log (stdout is the log file here)."""
    print(f"emo-pipeline demo plan for {plan.job}: {len(plan.keys)} of {len(plan.selected)} assets to materialize")
    for key in sorted(plan.keys):
        print(f"  {key.to_user_string()}: {plan.reasons.get(key, 'built on a stale or missing asset')}")
    for number, run in enumerate(plan.runs, 1):
        print(f"  run {number}: {', '.join(k.to_user_string() for k in run.keys)}"
              + (f" partitions {run.partitions[0]}...{run.partitions[-1]}" if run.partitions else ""))
    sys.stdout.flush()
