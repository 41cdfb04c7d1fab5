"""`planted_truth_recovery` (group `evaluation`): on the synthetic world, how much of what the generator
planted the pipeline's own tables recover (the detector's boxes, the best image model, dataset B's
predicted emotions, the score baseline's top objects), each figure beside its target. On real data
there is nothing planted: the table is empty and says so.
"""

import dagster as dg
import pandas as pd

from emo_pipeline.defs.shared.metadata import table_metadata
from emo_pipeline.defs.shared.resources import DataRoots, ModelStoreResource, WarehouseResource
from emo_pipeline.image_emotion.dominant import MAJORITY
from emo_pipeline.image_emotion.predict import default_model, validation_scores
from emo_pipeline.synthetic import recovery

TABLE = "planted_truth_recovery"


def _world(roots: DataRoots):
    """The synthetic world that Emotion6 and Visual Genome both come from, or None."""
    world = roots.emotion6().parent
    same = roots.vg().parent == world
    return world if same and recovery.is_world(world) else None


@dg.asset(group_name="evaluation", kinds={"parquet"},
          deps=["emotion6_detections", "emotion_distribution_metrics", "dominant_emotion_accuracy", "dataset_b",
                "top_objects_per_emotion"])
def planted_truth_recovery(context: dg.AssetExecutionContext, data_roots: DataRoots, warehouse: WarehouseResource,
                           models: ModelStoreResource) -> dg.MaterializeResult:
    """The synthetic world's planted truth against the pipeline's tables: one row per figure (stage,
    figure, value, target, met, detail)."""
    store = warehouse.get()
    world = _world(data_roots)
    if world is None:
        table = recovery.recovery_table([])
        path = store.write_table(TABLE, table)
        context.log.info(f"{TABLE}: the data is not a synthetic world, nothing was planted")
        return dg.MaterializeResult(metadata={**table_metadata(table, path), "world": "none (real data)"})

    recall = recovery.planted_object_recall(world, store.read_table("emotion6_detections"))
    metrics = store.read_table("emotion_distribution_metrics")
    accuracy = store.read_table("dominant_emotion_accuracy")
    best = default_model(models.directory(), validation_scores(store))
    top1 = float(metrics.loc[(metrics["model"] == best) & (metrics["split"] == "test"), "top1"].iloc[0])
    majority = float(accuracy.loc[(accuracy["model"] == MAJORITY) & (accuracy["split"] == "test"), "accuracy"].iloc[0])
    agreement = recovery.dominant_agreement(world, store.read_table("dataset_b"))
    rows = [*recovery.detector_rows(recall),
            *recovery.image_model_rows(best, top1, majority),
            *recovery.agreement_rows(agreement),
            *recovery.top_object_rows(world, store.read_table("top_objects_per_emotion"))]
    table = recovery.recovery_table(rows)
    path = store.write_table(TABLE, table)
    met = int(table["met"].sum())
    context.log.info(f"{TABLE}: {met} of {len(table)} figures meet their targets")
    missed = table.loc[~table["met"], ["stage", "figure", "value", "target"]]
    return dg.MaterializeResult(metadata={
        **table_metadata(table, path, preview_rows=0),
        "world": dg.MetadataValue.path(str(world)),
        "figures_met": met,
        "figures": len(table),
        "recovery": dg.MetadataValue.md(table.to_markdown(index=False, floatfmt=".3g")),
        "missed": dg.MetadataValue.md(missed.to_markdown(index=False, floatfmt=".3g") if len(missed) else "(none)"),
        "detector_recall_per_object": dg.MetadataValue.md(recall.to_markdown(index=False, floatfmt=".2f")),
        "dataset_b_planted_vs_predicted": dg.MetadataValue.md(
            pd.DataFrame(agreement).rename_axis(index="planted \\ predicted").to_markdown()),
    })


defs = dg.Definitions(assets=[planted_truth_recovery])
