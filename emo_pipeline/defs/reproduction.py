"""`paper_comparison` (group `evaluation`): every number the paper reports beside ours, and the job
`reproduce_paper` that materializes what its Emotion6 and EmotionROI rows need.

Ours come from the MLflow registry: for each model, the versions trained on the data the model asset was
last materialized with (the same data fingerprint), the latest under each recipe (`paper`, `improved`;
methods without recipes give both columns the same run). The paper's numbers and their sources are in
`emo_pipeline/core/paper_reported.csv`.
"""

import math

import dagster as dg

from emo_pipeline.core.reproduction import RECIPES, comparison_table, read_reported
from emo_pipeline.defs.shared.metadata import table_metadata
from emo_pipeline.defs.shared.resources import DataRoots, MLflowResource, WarehouseResource
from emo_pipeline.objects.emotion_to_objects import mlp_model_name
from emo_pipeline.objects.objects_to_emotion import FAMILIES, object_model_name
from emo_pipeline.storage.tracking import registered_versions

TABLE = "paper_comparison"
IMAGE_MODELS = ("alexnet", "vgg19_bn", "resnet101", "small_cnn_classifier", "alexnet_classifier")
FCNS = ("esm_fcn8s_32", "esm_fcn8s_64")
# The registered models (= model asset keys) the Emotion6 and EmotionROI rows read.
EMOTION6_MODELS = (*(f"{m}_model" for m in IMAGE_MODELS), "esm_resnet_model", "svm_dominant_emotion", *FCNS)
OBJECT_MODELS = (*(object_model_name(f, "b") for f in FAMILIES), *(mlp_model_name(d) for d in ("a", "b")))
NO_COUNTERPART = {
    "peng2015": "Peng et al. (2015), quoted by the paper: not a model of this project",
    "esm_val_untuned": "the paper's validation loss before its tuning: no counterpart",
}


def _sources(row) -> tuple[list[str], str] | None:
    """(registered models to read, MLflow metric key) for a reported row; None when there is none."""
    key = f"{row.split}_{row.metric}"
    if row.model in ("svm",):
        return ["svm_dominant_emotion"], f"{row.split}_accuracy"
    if row.model in IMAGE_MODELS or row.model == "esm_resnet":
        return [f"{row.model}_model"], f"{row.split}_top1" if row.metric == "accuracy" else key
    if row.model == "esm_fcn8s":
        return list(FCNS), key
    if row.dataset == "b" and row.model in FAMILIES:
        return [object_model_name(row.model, "b")], key
    return None


# The paper's emotion -> objects target (§3.6.2: count over the object's training total); Fig. 14 and
# §5.5.2 are read for the MLP trained on it.
PAPER_TARGET = "inverse_total_count"


def _object_loss(store, row) -> tuple[float | None, str]:
    """Fig. 14 / §5.5.2: the loss of the MLP (or of the score baseline on the same targets) from
    `emotion_object_metrics` (validation) or the MLP's history (train, at its best validation epoch)."""
    if not store.has_table("emotion_object_metrics"):
        return None, "not materialized yet (emotion_object_metrics)"
    table = store.read_table("emotion_object_metrics")
    mlp = table[(table["dataset"] == row.dataset) & (table["method"] == "mlp")
                & (table["normalisation"] == PAPER_TARGET)]
    if mlp.empty:
        return None, f"no MLP on target {PAPER_TARGET} in emotion_object_metrics"
    if row.split == "val":
        column = "val_loss" if row.model == "mlp" else "baseline_val_loss"
        return float(mlp[column].iloc[0]), f"binary cross-entropy on target {PAPER_TARGET}, validation images"
    history = store.read_table(mlp_model_name(row.dataset))
    history = history[history["normalisation"] == PAPER_TARGET]
    best = history.loc[history["val_loss"].idxmin()]
    return float(best["train_loss"]), (f"target {PAPER_TARGET}: training loss at the best validation epoch "
                                       f"({int(best['epoch'])})")


def _current_versions(instance: dg.DagsterInstance, mlflow_dir, name: str) -> dict[str, dict]:
    """recipe -> the latest registered version of `name` trained on the data its asset last saw."""
    event = instance.get_latest_materialization_event(dg.AssetKey(name))
    if event is None or event.asset_materialization is None:
        return {}
    fingerprint = event.asset_materialization.tags.get("dagster/data_version", "")
    chosen: dict[str, dict] = {}
    for version in registered_versions(mlflow_dir, name):
        if version["data_fingerprint"] != fingerprint:
            continue
        recipe = version["params"].get("recipe")
        for target in ([recipe] if recipe in RECIPES else RECIPES):
            chosen[target] = version  # versions come oldest first: the latest wins
    return chosen


def _data_notes(row, roots: DataRoots) -> list[str]:
    synthetic = {"emotion6": roots.emotion6_dir is None, "emotionroi": roots.emotionroi_dir is None,
                 "a": roots.emotion6_dir is None, "b": roots.vg_dir is None}
    notes = []
    if synthetic[row.dataset]:
        notes.append({"emotion6": "demo world, not the real Emotion6", "emotionroi": "synthetic EmotionROI",
                      "a": "dataset A of the demo world", "b": "dataset B of the demo world"}[row.dataset])
    if row.model == "esm_resnet" and roots.emotionroi_dir is None:
        notes.append("its stimuli maps were learnt on the synthetic EmotionROI")
    return notes


@dg.asset(group_name="evaluation", kinds={"parquet"},
          deps=[*EMOTION6_MODELS, "emotion6_split", *OBJECT_MODELS, "emotion_object_metrics"])
def paper_comparison(context: dg.AssetExecutionContext, warehouse: WarehouseResource, mlflow: MLflowResource,
                     data_roots: DataRoots) -> dg.MaterializeResult:
    """Every number the paper reports (section, figure, its words) beside ours under the `paper` and the
    `improved` recipe, the difference, and a note where the runs are not comparable."""
    store = warehouse.get()
    reported = read_reported()
    split_sizes = (store.read_table("emotion6_split")["split"].value_counts().to_dict()
                   if store.has_table("emotion6_split") else {})
    versions: dict[str, dict[str, dict]] = {}
    ours: dict[tuple[str, str], float] = {}
    notes: dict[str, str] = {}
    for row in reported.itertuples(index=False):
        row_notes = _data_notes(row, data_roots)
        if row.metric == "images":
            if row.split in split_sizes:
                ours.update({(row.id, recipe): float(split_sizes[row.split]) for recipe in RECIPES})
            notes[row.id] = "; ".join(row_notes)
            continue
        if row.model in ("mlp", "score_baseline"):
            value, note = _object_loss(store, row)
            if value is not None:
                ours.update({(row.id, recipe): value for recipe in RECIPES})
            notes[row.id] = "; ".join([*row_notes, note])
            continue
        source = _sources(row)
        if source is None:
            notes[row.id] = NO_COUNTERPART.get(row.model, NO_COUNTERPART.get(row.id, "no counterpart in this project"))
            continue
        names, metric = source
        for name in names:
            if name not in versions:
                versions[name] = _current_versions(context.instance, mlflow.directory(), name)
        for recipe in RECIPES:
            # Several candidates (the two FCN sizes): the one with the lower validation loss, as chosen on validation.
            candidates = [(name, versions[name][recipe]) for name in names if recipe in versions[name]]
            candidates = [(n, v) for n, v in candidates if metric in v["metrics"]]
            if not candidates:
                continue
            name, version = min(candidates, key=lambda c: c[1]["metrics"].get("val_mse", 0.0))
            ours[(row.id, recipe)] = version["metrics"][metric]
            if len(names) > 1:
                row_notes.append(f"{recipe}: {name}, chosen on validation")
            if version["params"].get("pretrained_loaded") == "False":
                row_notes.append(f"{recipe}: without ImageNet weights")
            reverse = version["metrics"].get(f"{row.split}_kl_reverse")
            if row.metric == "kl" and reverse is not None:
                row_notes.append(f"{recipe}: KL(pred || true) {reverse:.3f}")
        if not any((row.id, recipe) in ours for recipe in RECIPES):
            row_notes.append(f"not materialized yet ({', '.join(names)})")
        notes[row.id] = "; ".join(dict.fromkeys(row_notes))
    table = comparison_table(reported, ours, notes)
    path = store.write_table(TABLE, table)
    filled = int(table[["ours_paper", "ours_improved"]].notna().any(axis=1).sum())
    shown = table.drop(columns=["paper_says"]).assign(
        **{c: table[c].map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}")
           for c in ("paper", "ours_paper", "ours_improved", "difference")})
    context.log.info(f"{TABLE}: {filled} of {len(table)} reported numbers have ours beside them")
    return dg.MaterializeResult(metadata={
        **table_metadata(table, path, preview_rows=0),
        "rows_with_ours": filled,
        "comparison": dg.MetadataValue.md(shown.to_markdown(index=False)),
    })


REPRODUCE_TARGETS = [*(f"{m}_model" for m in (*IMAGE_MODELS, "esm_resnet")), "svm_dominant_emotion", *FCNS]
reproduce_paper = dg.define_asset_job(
    "reproduce_paper",
    selection=(dg.AssetSelection.assets(*REPRODUCE_TARGETS).upstream().required_multi_asset_neighbors()
               | dg.AssetSelection.assets(TABLE)),
    description="What paper_comparison needs for the paper's Emotion6 and EmotionROI numbers (Figs. 6 and 7, "
                "§5.1, §5.3): the raw data, features, the SVM, the classifiers, AlexNet, VGG19-BN, ResNet-101, "
                "the FCNs and the ESM-ResNet, then the comparison. Run it with "
                "EMO_PROFILE=paper (recipe paper), then with recipe improved, to fill both columns.")

defs = dg.Definitions(assets=[paper_comparison], jobs=[reproduce_paper])
