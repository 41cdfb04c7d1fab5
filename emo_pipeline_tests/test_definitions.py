"""The code location: all definitions load, and the `raw` group materializes end to end."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from emo_pipeline.core.home import PROJECT_ROOT
from emo_pipeline.definitions import defs
from emo_pipeline_tests.conftest import pipeline_env
from emo_pipeline_tests.materialize import materialize, project_resources

RAW_ASSETS = {
    "emotion6_labels", "emotion6_rejected", "emotion6_split",
    "emotionroi_maps", "emotionroi_split", "emotionroi_rejected",
    "vg_images", "vg_objects", "vg_relationships", "vg_attributes", "vg_rejected",
}


def test_all_definitions_load():
    dg.Definitions.validate_loadable(defs)
    keys = {key.to_user_string() for key in defs.resolve_all_asset_keys()}
    assert keys >= RAW_ASSETS
    assert defs.resolve_job_def("raw_job") is not None
    graph = defs.resolve_asset_graph()
    warnings = sorted(k.to_user_string() for k in graph.asset_check_keys if not graph.get_check_spec(k).blocking)
    # Only the checks meant as warnings let the graph go on when they fail (docs/operations.md lists them).
    assert len(graph.asset_check_keys) >= 40
    assert warnings == ["esm_fcn8s_32:beats_mean_map", "esm_fcn8s_64:beats_mean_map",
                        "object_emotion_metrics:fc_beats_train_mean"]
    groups = {graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert {"raw", "features", "image_models", "esm", "evaluation", "detection", "datasets", "objects"} <= groups
    # The whole graph as three runs: this job, then the shards, then dataset_b_job cover every asset once.
    unsharded, after_shards = (
        {key.to_user_string() for key in defs.resolve_job_def(job).asset_layer.selected_asset_keys}
        for job in ("unsharded_job", "dataset_b_job"))
    by_hand = {"multi_split_evaluation"}  # refits the models on several splits: materialized by hand only
    assert keys - unsharded == after_shards | {"vg_emotion_predictions"} | by_hand and not unsharded & after_shards
    assert {"dataset_b", "dataset_b_objects", "dataset_b_relationships", "objects_emotion_fc_b",
            "emotion_objects_mlp_b", "emotion_object_scores", "emotion_object_metrics"} <= after_shards
    assert {"objects_emotion_fc_a", "emotion_objects_mlp_a"} <= unsharded
    # `make demo` (emo-pipeline demo) runs demo_job: every asset but the paper's large image models, the
    # compact CNN and the patch network, which paper_models_job, compact_cnn_job and patch_mlp_job train;
    # what reads their predictions takes whichever models are materialized.
    demo, paper, compact, patch = (
        {key.to_user_string() for key in defs.resolve_job_def(job).asset_layer.selected_asset_keys}
        for job in ("demo_job", "paper_models_job", "compact_cnn_job", "patch_mlp_job"))
    assert paper == {f"{m}_{part}" for m in ("alexnet", "alexnet_classifier", "vgg19_bn", "resnet101")
                     for part in ("model", "predictions")}
    assert compact == {"compact_cnn_model", "compact_cnn_predictions"}
    assert patch == {"patch_mlp_model", "patch_mlp_predictions"}
    assert demo == keys - paper - compact - patch - by_hand
    assert {"ensemble_model", "emotion_distribution_metrics", "dominant_emotion_accuracy", "feature_ridge_model",
            "feature_gbm_model", "feature_gbm_predictions", "feature_mlp_model", "feature_mlp_predictions"} <= demo
    # The gradient-boosted, network and patch models are candidates of the ensemble and scored by the
    # evaluation table.
    for reader in ("ensemble_model", "emotion_distribution_metrics"):
        parents = {k.to_user_string() for k in graph.get(dg.AssetKey(reader)).parent_keys}
        assert {"feature_gbm_predictions", "feature_mlp_predictions", "feature_ridge_predictions",
                "patch_mlp_predictions"} <= parents, reader


def _project_imports() -> dict[str, set[str]]:
    """Each module of the package -> the package modules it imports (at any depth of its code)."""
    package = PROJECT_ROOT / "emo_pipeline"
    modules = {".".join(("emo_pipeline", *p.relative_to(package).with_suffix("").parts)).removesuffix(".__init__"): p
               for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from package import module` depends on the module, `from module import name` on the module.
                found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                          for a in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def test_no_import_cycles():
    """Every import between the project's modules points one way (a package imports its modules, never
    the reverse through another module)."""
    graph = _project_imports()
    state: dict[str, str] = {}
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            # A module importing its own package's __init__ is the package's business, not a cycle.
            if module.startswith(f"{target}."):
                continue
            if state.get(target) == "open":
                cycles.append(" -> ".join([*path[path.index(target):], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_stage_defs_import_only_the_shared_module():
    """A stage's defs module imports the library, the shared Dagster pieces and its own stage folder, never
    another stage's defs."""
    offenders = []
    for module, imports in _project_imports().items():
        if not module.startswith("emo_pipeline.defs.") or module.startswith("emo_pipeline.defs.shared"):
            continue
        stage = module.split(".")[2]
        offenders += [f"{module} imports {target}" for target in imports
                      if target.startswith("emo_pipeline.defs.") and target.split(".")[2] not in ("shared", stage)]
    assert offenders == []


def test_the_library_never_imports_dagster():
    """Only `defs/` (the demo's runner included) and `definitions.py` know Dagster: the library runs from
    any script or notebook."""
    package = PROJECT_ROOT / "emo_pipeline"
    offenders = []
    for path in package.rglob("*.py"):
        if path.is_relative_to(package / "defs") or path == package / "definitions.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "dagster" or n.startswith(("dagster.", "dagster_")) for n in names):
                offenders.append(f"{path.relative_to(package)}:{node.lineno}")
    assert offenders == []


def test_raw_group_materializes_and_its_checks_pass(world: Path, tmp_path: Path):
    warehouse_root = tmp_path / "warehouse"
    result = materialize(project_resources(world, tmp_path), sorted(RAW_ASSETS), raise_on_error=True)
    assert result.success
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == RAW_ASSETS
    evaluations = result.get_asset_check_evaluations()
    failed = [(e.asset_key.to_user_string(), e.check_name, e.description) for e in evaluations if not e.passed]
    assert len(evaluations) >= 15 and failed == []

    # The views answer through the user's command, read-only.
    sql = subprocess.run(
        [sys.executable, "-m", "emo_pipeline.cli", "sql", "--warehouse", str(warehouse_root), "--format", "json",
         "SELECT split, count(*) AS images FROM emotion6_split GROUP BY split ORDER BY split"],
        capture_output=True, text=True, check=True)
    counts = {row["split"]: row["images"] for row in json.loads(sql.stdout)}
    assert set(counts) == {"train", "val", "test"}
    assert counts["val"] == counts["test"] == round(0.15 * sum(counts.values()))


@pytest.mark.slow
def test_dagster_cli_materializes_the_raw_group(world: Path, tmp_path: Path):
    """What a shell runs: `dagster asset materialize` with the multiprocess executor."""
    env = pipeline_env(tmp_path / "home", world)
    Path(env["DAGSTER_HOME"]).mkdir(parents=True)
    (Path(env["DAGSTER_HOME"]) / "dagster.yaml").write_text((PROJECT_ROOT / "dagster.yaml").read_text())
    dagster = Path(sys.executable).with_name("dagster")
    run = subprocess.run([str(dagster), "asset", "materialize", "-m", "emo_pipeline.definitions",
                          "--select", "group:raw"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "RUN_SUCCESS" in run.stderr + run.stdout
    sql = subprocess.run([sys.executable, "-m", "emo_pipeline.cli", "sql", "--format", "csv",
                          "SELECT count(*) AS n FROM vg_objects"], env=env, capture_output=True, text=True)
    assert sql.returncode == 0, sql.stderr
    assert int(sql.stdout.splitlines()[1]) > 0


def test_torch_steps_ask_for_the_gpu_locally_and_on_kubernetes():
    """Every step that builds a pytorch asset is in the `gpu` concurrency pool, and the pod dagster-k8s builds
    for a GPU step (from its tags, with dagster-k8s's own functions) asks for one GPU; other pods do not."""
    from dagster_k8s.job import DagsterK8sJobConfig, construct_dagster_k8s_job, get_user_defined_k8s_config

    job_config = DagsterK8sJobConfig(job_image="emo-pipeline:test", dagster_home="/opt/dagster/home")

    def pod_limits(name: str, tags: dict) -> dict | None:
        job = construct_dagster_k8s_job(job_config, ["dagster", "api", "execute_step"], f"{name}-step",
                                        get_user_defined_k8s_config(tags))
        return job.spec.template.spec.containers[0].resources.limits

    steps = {a.node_def.name: (a.op.tags, a.op.pool, any("pytorch" in s.kinds for s in a.specs))
             for a in defs.assets if isinstance(a, dg.AssetsDefinition)}
    torch_steps = {name for name, (_, _, torch_step) in steps.items() if torch_step}
    assert {"small_cnn", "esm_model", "object_detector", "vg_emotion_predictions",
            "objects_emotion_fc_b"} <= torch_steps
    for name, (tags, pool, torch_step) in steps.items():
        gpu_step = pool == "gpu"
        assert gpu_step or not torch_step, name
        assert pod_limits(name, tags) == ({"nvidia.com/gpu": "1"} if gpu_step else None), name


def test_the_executor_is_switched_by_configuration_alone(monkeypatch: pytest.MonkeyPatch):
    from emo_pipeline.definitions import choose_executor

    assert choose_executor("multiprocess").name == "multiprocess"
    assert choose_executor("k8s").name == "k8s"
    with pytest.raises(ValueError, match="EMO_EXECUTOR='threads': choose one of multiprocess, k8s"):
        choose_executor("threads")
    monkeypatch.setitem(sys.modules, "dagster_k8s", None)  # a code location image without the package
    with pytest.raises(ImportError, match="EMO_EXECUTOR=k8s needs the dagster-k8s package"):
        choose_executor("k8s")
    # The variable alone moves every job of the code location.
    shown = subprocess.run(
        [sys.executable, "-c", "from emo_pipeline.definitions import defs; "
         "print(sorted({j.executor_def.name for j in defs.resolve_all_job_defs()}))"],
        env={**os.environ, "EMO_EXECUTOR": "k8s"}, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split("\n")[-2] == "['k8s']"
