"""Group `image_models`: the ensemble, a weighted average of the distribution models, weights fitted on validation.

It reads whichever candidates' predictions are materialized (a laptop may skip VGG19-BN), picks its
members' weights on validation (see `emo_pipeline.image_emotion.ensemble`), writes `ensemble_predictions` in the same
columns as every other model, and a model card so that `emo-pipeline predict --model ensemble` runs
the same weighted average on new images.
"""

import dagster as dg

from emo_pipeline.core.metrics import REPORTED, split_metrics
from emo_pipeline.core.profiles import CLASSIFIERS, EMOTION_MODELS
from emo_pipeline.defs.image_emotion.torch_models import GROUP
from emo_pipeline.defs.shared.metadata import table_metadata
from emo_pipeline.defs.shared.resources import MLflowResource, ModelStoreResource, WarehouseResource
from emo_pipeline.image_emotion.ensemble import fit_ensemble
from emo_pipeline.storage.model_store import ModelCard, save_card

ENSEMBLE = "ensemble"
# Every model that predicts a distribution from an image, in the order the tables list them.
CANDIDATES = [*(name for name in EMOTION_MODELS["demo"] if name not in CLASSIFIERS), "feature_ridge", "feature_gbm",
              "feature_mlp", "patch_mlp", "esm_resnet"]


class EnsembleConfig(dg.Config):
    max_members: int = 5


@dg.multi_asset(
    name=ENSEMBLE,
    specs=[
        dg.AssetSpec(f"{ENSEMBLE}_model", group_name=GROUP, kinds={"python"},
                     deps=[f"{name}_predictions" for name in CANDIDATES] + ["emotion6_labels"],
                     description="Members, weights, sharpening power and floor of the weighted average of the "
                                 "distribution models, fitted on validation."),
        dg.AssetSpec(f"{ENSEMBLE}_predictions", group_name=GROUP, kinds={"parquet"}, deps=[f"{ENSEMBLE}_model"],
                     description="The ensemble's predicted 7-way distribution for every Emotion6 image."),
    ],
)
def ensemble(context: dg.AssetExecutionContext, config: EnsembleConfig, warehouse: WarehouseResource,
             models: ModelStoreResource, mlflow: MLflowResource):
    import mlflow as mlflow_api

    store = warehouse.get()
    available = [name for name in CANDIDATES if store.has_table(f"{name}_predictions")]
    if not available:
        raise dg.Failure(f"no model predictions to average: materialize one of {', '.join(CANDIDATES)} first")
    missing = [name for name in CANDIDATES if name not in available]
    if missing:
        context.log.warning(f"not materialized, so not candidates: {', '.join(missing)}")
    labels = store.read_table("emotion6_labels")
    result = fit_ensemble(labels, {name: store.read_table(f"{name}_predictions") for name in available},
                          max_members=config.max_members)
    described = ", ".join(f"{m} {w:.2f}" for m, w in zip(result.members, result.weights))
    context.log.info(f"ensemble of {described} (power {result.power:g}, floor {result.clip:g}); validation KL: "
                     + ", ".join(f"{name} {kl:.4f}" for name, kl in result.val_kl.items()))
    scores = split_metrics(result.predictions, labels)

    card = ModelCard(name=ENSEMBLE, kind="ensemble", architecture="weighted_mean", size=0, clip=result.clip,
                     members=tuple(result.members), member_weights=tuple(result.weights), power=result.power,
                     profile=models.active_profile())
    card_path = save_card(models.directory(), card)
    predictions_path = store.write_table(f"{ENSEMBLE}_predictions", result.predictions)
    with mlflow.start_run(context, run_name=ENSEMBLE) as run:
        mlflow_api.log_params({"members": ",".join(result.members), "candidates": ",".join(available),
                               "weights": ",".join(f"{w:.4f}" for w in result.weights),
                               "power": result.power, "clip": result.clip, "max_members": config.max_members})
        mlflow_api.log_metrics({f"{split}_{k}": v for split, values in scores.items() for k, v in values.items()})
        mlflow_api.log_dict(card.to_json(), "model_card.json")

    yield dg.MaterializeResult(asset_key=f"{ENSEMBLE}_model", metadata={
        "members": described,
        "candidates": ", ".join(available),
        "power": result.power,
        "floor": result.clip,
        "card": dg.MetadataValue.path(str(card_path)),
        "mlflow_run_id": run.info.run_id,
        **{f"val_kl_{name}": round(kl, 4) for name, kl in result.val_kl.items()},
        **{f"{s}_{m}": round(float(scores[s][m]), 4) for s in ("val", "test", "test_train_mean")
           for m in REPORTED},
    })
    yield dg.MaterializeResult(asset_key=f"{ENSEMBLE}_predictions",
                               metadata=table_metadata(result.predictions, predictions_path))


defs = dg.Definitions(assets=[ensemble])
