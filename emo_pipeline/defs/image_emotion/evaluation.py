"""Group `evaluation`: the tables and figures that score the models against each other and the baselines.

`dominant_emotion_accuracy` scores every dominant-emotion model on validation and test beside the
majority-class baseline. A new model joins it by adding its predictions table to
`DOMINANT_EMOTION_PREDICTIONS`.

`multi_split_evaluation` fits the chosen distribution models again on several split seeds (see
`emo_pipeline.image_emotion.multi_split`): minutes to tens of minutes, so no job or sensor runs it; a
user materializes it from the UI (or runs `emo-pipeline evaluate` on a folder).
"""

import dagster as dg
import numpy as np
import pandas as pd

from emo_pipeline.core import metrics
from emo_pipeline.core.emotions import EMOTIONS, PROB_COLUMNS
from emo_pipeline.core.plots import metrics_bars_png
from emo_pipeline.core.profiles import CLASSIFIERS, EMOTION_MODELS
from emo_pipeline.defs.image_emotion.ensemble import CANDIDATES, ENSEMBLE
from emo_pipeline.defs.shared.gpu import GPU_POOL, GPU_TAGS
from emo_pipeline.defs.shared.metadata import png_metadata, table_metadata
from emo_pipeline.defs.shared.resources import ModelStoreResource, TorchDeviceResource, WarehouseResource
from emo_pipeline.defs.shared.settings import apply_overrides, overrides_config
from emo_pipeline.image_emotion.dominant import MAJORITY, accuracy_table, labelled_split, majority_predictions
from emo_pipeline.image_emotion.multi_split import MultiSplitConfig, check_models, evaluate_splits, summary_text

GROUP = "evaluation"
ACCURACY_TABLE = "dominant_emotion_accuracy"
ACCURACY_SPLITS = ("val", "test")

# model name -> its predictions table (image_key, split, true, predicted)
DOMINANT_EMOTION_PREDICTIONS = {"svm": "svm_predictions"}
# Torch classifiers predict a distribution over the emotions; their argmax is the dominant emotion.
CLASSIFIER_PREDICTIONS = {name: f"{name}_predictions" for name in CLASSIFIERS}
DISTRIBUTION_MODELS = [*CANDIDATES, ENSEMBLE]
DISTRIBUTION_TABLE = "emotion_distribution_metrics"
TRAIN_MEAN = "train_mean"


def _argmax_predictions(frame: pd.DataFrame, labelled: pd.DataFrame) -> pd.DataFrame:
    """(image_key, split, prob_*) -> (image_key, split, true, predicted) with the first maximum winning."""
    predicted = np.asarray(EMOTIONS)[frame[list(PROB_COLUMNS)].to_numpy().argmax(axis=1)]
    out = frame[["image_key"]].assign(predicted=pd.array(predicted, dtype="string"))
    return labelled.merge(out, on="image_key", validate="one_to_one")


@dg.asset(group_name=GROUP, deps=[*DOMINANT_EMOTION_PREDICTIONS.values(), *CLASSIFIER_PREDICTIONS.values(),
                                  "emotion6_labels", "emotion6_split"],
          kinds={"parquet"})
def dominant_emotion_accuracy(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Dominant-emotion accuracy of every model and of the majority class of train, one row per model
    and split (val, test)."""
    store = warehouse.get()
    labelled = labelled_split(store.read_table("emotion6_labels", columns=["image_key", "dominant_emotion"]),
                              store.read_table("emotion6_split"))
    predictions = {MAJORITY: majority_predictions(labelled)}
    predictions.update({model: store.read_table(table) for model, table in DOMINANT_EMOTION_PREDICTIONS.items()})
    predictions.update({model: _argmax_predictions(store.read_table(table), labelled)
                        for model, table in CLASSIFIER_PREDICTIONS.items() if store.has_table(table)})
    table = accuracy_table(predictions, ACCURACY_SPLITS)
    path = store.write_table(ACCURACY_TABLE, table)
    context.log.info("\n" + table.to_string(index=False))
    return dg.MaterializeResult(metadata={
        **table_metadata(table, path, preview_rows=len(table)),
        **{f"{row.model}_{row.split}_accuracy": round(float(row.accuracy), 4) for row in table.itertuples()},
    })


@dg.asset_check(asset=ACCURACY_TABLE, name="every_model_and_split", blocking=True,
                description="one row per model (majority and every predictions table) and split, "
                            "with an accuracy within [0, 1] over a non-empty split")
def accuracy_rows(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    table = warehouse.get().read_table(ACCURACY_TABLE)
    classifiers = [m for m, t in CLASSIFIER_PREDICTIONS.items() if warehouse.get().has_table(t)]
    models = (MAJORITY, *DOMINANT_EMOTION_PREDICTIONS, *classifiers)
    expected = {(m, s) for m in models for s in ACCURACY_SPLITS}
    present = list(zip(table["model"], table["split"]))
    valid = bool(table["accuracy"].between(0, 1).all() and (table["images"] > 0).all())
    passed = set(present) == expected and len(present) == len(expected) and valid
    return dg.AssetCheckResult(passed=passed, description=(
        f"{len(present)} rows for {len(expected)} (model, split) pairs; accuracies "
        f"{'within' if valid else 'NOT all within'} [0, 1] over non-empty splits"))


@dg.asset(group_name=GROUP, kinds={"parquet"},
          deps=[*(f"{name}_predictions" for name in DISTRIBUTION_MODELS), "emotion6_labels", "emotion6_split"])
def emotion_distribution_metrics(context: dg.AssetExecutionContext,
                                 warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Every distribution metric for every model and split (val, test), beside the train-mean baseline
    (the mean training distribution predicted for every image)."""
    store = warehouse.get()
    labels = store.read_table("emotion6_labels", columns=["image_key", *PROB_COLUMNS])
    split_table = store.read_table("emotion6_split")
    table = labels.merge(split_table, on="image_key")
    rows = {(TRAIN_MEAN, split): pair
            for split, pair in metrics.train_mean_pairs(labels, split_table, ACCURACY_SPLITS).items()}
    # A model that was never materialized (a user may skip VGG19 on a laptop) is listed, not fatal.
    available = [name for name in DISTRIBUTION_MODELS if store.has_table(f"{name}_predictions")]
    missing = [name for name in DISTRIBUTION_MODELS if name not in available]
    if missing:
        context.log.warning(f"no predictions yet for {', '.join(missing)}: materialize them to add their rows")
    for name in available:
        pairs = metrics.split_pairs(table, store.read_table(f"{name}_predictions"), ACCURACY_SPLITS)
        rows.update({(name, split): pair for split, pair in pairs.items()})
    result = metrics.metrics_table(rows)
    path = store.write_table(DISTRIBUTION_TABLE, result)
    context.log.info("\n" + result.round(4).to_string(index=False))
    test = result[result["split"] == "test"]
    return dg.MaterializeResult(metadata={
        **table_metadata(result, path, preview_rows=len(result)),
        "models": ", ".join(available),
        "missing_models": ", ".join(missing) or "none",
        "test_metrics": png_metadata(metrics_bars_png(test, ("mse", "chebyshev", "bhattacharyya", "kl")),
                                     "test metrics per model"),
    })


@dg.asset_check(asset=DISTRIBUTION_TABLE, name="every_model_and_split", blocking=True,
                description="one row per materialized distribution model and the train-mean baseline, for val and test")
def distribution_rows(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    store = warehouse.get()
    table = store.read_table(DISTRIBUTION_TABLE)
    available = [name for name in DISTRIBUTION_MODELS if store.has_table(f"{name}_predictions")]
    expected = {(m, s) for m in (TRAIN_MEAN, *available) for s in ACCURACY_SPLITS}
    present = list(zip(table["model"], table["split"]))
    finite = bool(np.isfinite(table[list(metrics.PER_IMAGE)].to_numpy()).all())
    return dg.AssetCheckResult(passed=set(present) == expected and len(present) == len(expected) and finite,
                               description=f"{len(present)} rows for {len(expected)} (model, split) pairs; "
                                           f"{'all' if finite else 'NOT all'} metrics finite")


MULTI_SPLIT_TABLE = "multi_split_evaluation"
MultiSplitOverrides = overrides_config(MultiSplitConfig, "MultiSplitOverrides")


@dg.asset(group_name=GROUP, kinds={"parquet", "sklearn", "pytorch"}, deps=["emotion6_labels", "emotion6_features"],
          op_tags=GPU_TAGS, pool=GPU_POOL)
def multi_split_evaluation(context: dg.AssetExecutionContext, config: MultiSplitOverrides,
                           warehouse: WarehouseResource, models: ModelStoreResource,
                           torch_device: TorchDeviceResource) -> dg.MaterializeResult:
    """The distribution models fitted on each of several split seeds (default 0, 1, 2): one row per seed
    and model with every test metric, the train mean beside them; the metadata shows the mean and
    standard deviation per model. Minutes per seed: materialize it by hand."""
    settings = apply_overrides(MultiSplitConfig(), config)
    torch_models = EMOTION_MODELS[models.active_profile()]
    try:
        chosen = check_models(settings.models, torch_models)
    except ValueError as exc:
        raise dg.Failure(str(exc)) from exc
    store = warehouse.get()
    labels = store.read_table("emotion6_labels")
    result = evaluate_splits(labels, settings.seeds, chosen, features=store.read_table("emotion6_features"),
                             torch_models=torch_models, device=torch_device.torch_device(), log=context.log.info)
    path = store.write_table(MULTI_SPLIT_TABLE, result.per_split)
    text = summary_text(result.summary)
    context.log.info("\n" + text)
    best = result.summary.iloc[0]
    return dg.MaterializeResult(metadata={
        **table_metadata(result.per_split, path, preview_rows=len(result.per_split)),
        "seeds": ", ".join(map(str, settings.seeds)),
        "summary": dg.MetadataValue.md(result.summary.round(4).to_markdown(index=False)),
        "best_model": str(best["model"]),
        **{f"best_test_{m}_mean": round(float(best[f"{m}_mean"]), 4) for m in ("chebyshev", "bhattacharyya", "kl")},
        **{f"ensemble_seed_{seed}": members for seed, members in result.members.items()},
    })


defs = dg.Definitions(assets=[dominant_emotion_accuracy, emotion_distribution_metrics, multi_split_evaluation],
                      asset_checks=[accuracy_rows, distribution_rows])
