"""Group `image_models`: `patch_mlp`, a network on patch features learned from the training pictures
without labels (see `emo_pipeline.image_emotion.patch_mlp`; this project's model, not the paper's).

`patch_mlp_model` is one torch module (the patch encoders, then the network), saved with its card and
registered in MLflow like the other image models, so `emo-pipeline predict --model patch_mlp`, the
ensemble and dataset B feed it images as they feed them; `patch_mlp_predictions` is its per-image
distribution. Several minutes on a CPU (the encoding of every picture), so it has a job of its own and
the demo leaves it out.
"""

import dagster as dg
import torch

from emo_pipeline.core.metrics import REPORTED
from emo_pipeline.defs.image_emotion.feature_models import mlp_curves, text_scores
from emo_pipeline.defs.shared.checks import predictions_check_spec, predictions_cover_split
from emo_pipeline.defs.shared.gpu import GPU_POOL, GPU_TAGS
from emo_pipeline.defs.shared.metadata import table_metadata, test_samples_metadata
from emo_pipeline.defs.shared.publisher import TrainingRun, code_version
from emo_pipeline.defs.shared.resources import (
    MLflowResource,
    ModelStoreResource,
    TorchDeviceResource,
    WarehouseResource,
)
from emo_pipeline.defs.shared.settings import apply_overrides, overrides_config
from emo_pipeline.image_emotion import feature_mlp, patch_features
from emo_pipeline.image_emotion import patch_mlp as patch_mlp_module
from emo_pipeline.image_emotion.feature_mlp import AUXILIARY_COLUMNS
from emo_pipeline.image_emotion.patch_mlp import ARCHITECTURE, PatchMLPConfig, fit_patch_mlp
from emo_pipeline.image_emotion.training import labels_fingerprint
from emo_pipeline.models import patch_mlp as patch_mlp_network
from emo_pipeline.storage.model_store import ModelCard

GROUP = "image_models"
NAME = "patch_mlp"
MODEL, PREDICTIONS = f"{NAME}_model", f"{NAME}_predictions"
CODE_VERSION = code_version(patch_mlp_module, patch_features, feature_mlp, patch_mlp_network)

PatchMLPOverrides = overrides_config(PatchMLPConfig, "PatchMLPOverrides")


@dg.multi_asset(
    name=NAME,
    specs=[
        dg.AssetSpec(MODEL, group_name=GROUP, deps=["emotion6_labels", "emotion6_split"], kinds={"pytorch", "mlflow"},
                     code_version=CODE_VERSION,
                     description="Patch encoders learned by k-means from the training pictures (no labels, nothing "
                                 "pretrained), then networks on their output to the 7-way emotion distribution; each "
                                 "member's epoch and the prediction floor chosen on validation. Registered in MLflow "
                                 f"as {MODEL} and saved with its card for `emo-pipeline predict`."),
        dg.AssetSpec(PREDICTIONS, group_name=GROUP, deps=[MODEL], kinds={"parquet"}, code_version=CODE_VERSION,
                     description="patch_mlp's predicted 7-way distribution for every Emotion6 image."),
    ],
    check_specs=[predictions_check_spec(PREDICTIONS)],
    op_tags=GPU_TAGS, pool=GPU_POOL,
)
def patch_mlp(context: dg.AssetExecutionContext, config: PatchMLPOverrides, warehouse: WarehouseResource,
              models: ModelStoreResource, mlflow: MLflowResource, torch_device: TorchDeviceResource):
    import mlflow as mlflow_api

    store = warehouse.get()
    labels = store.read_table("emotion6_labels")
    split = store.read_table("emotion6_split")
    settings = apply_overrides(PatchMLPConfig(), config)
    device = torch_device.torch_device()
    # The network also learns from the auxiliary targets: they are part of its data.
    fingerprint = labels_fingerprint(labels, split, AUXILIARY_COLUMNS)
    with TrainingRun(context, MODEL, settings, fingerprint, models=models, mlflow=mlflow, run_name=NAME,
                     params={"device": str(device)}) as run:
        result = fit_patch_mlp(labels, split, settings, device=device, log=context.log.info)
        network = result.network
        kept = {f"epoch_kept_member_{i}": e for i, e in enumerate(network.epochs_kept)}
        run.log_params({"clip": result.clip, "features": len(network.feature_columns),
                        "train_images": int((result.predictions["split"] == "train").sum()), **kept})
        run.log_metrics({f"{s}_{k}": v for s, values in result.scores.items() for k, v in values.items()})
        run.log_metrics({"features_seconds": result.features_seconds, "train_seconds": result.seconds})
        artifacts = {**mlp_curves(network), "model_selection.csv": network.selection.to_csv(index=False)}
        for file_name, text in artifacts.items():
            mlflow_api.log_text(text, file_name)
        size = max(settings.patches.sizes)
        card = ModelCard(name=NAME, kind="patches", architecture=ARCHITECTURE, size=size, options=result.options,
                         clip=result.clip, flip_tta=settings.mirror, profile=run.profile,
                         weights_source="none: patch dictionaries learned by k-means from the training pictures, "
                                        "networks trained from scratch")
        run.publish_torch(card, result.model, torch.zeros(2, 3, size, size).numpy())
    predictions_path = store.write_table(PREDICTIONS, result.predictions)
    scores = result.scores
    context.log.info(f"{NAME}: {text_scores(scores)}")
    yield dg.MaterializeResult(asset_key=MODEL, data_version=run.data_version, metadata=run.metadata(
        [f"{s}_{m}" for s in scores for m in REPORTED], digits=4, extra={
            "floor": result.clip,
            "features": len(network.feature_columns),
            "features_seconds": round(result.features_seconds, 1),
            "train_seconds": round(result.seconds, 1),
            **kept,
            "model_selection": dg.MetadataValue.md(network.selection.to_markdown(index=False, floatfmt=".5g")),
            **test_samples_metadata(NAME, result.predictions, labels),
        }))
    yield dg.MaterializeResult(asset_key=PREDICTIONS, data_version=run.data_version, metadata={
        **table_metadata(result.predictions, predictions_path), "mlflow_run_id": run.run_id})
    yield predictions_cover_split(PREDICTIONS, result.predictions, split)


defs = dg.Definitions(assets=[patch_mlp])
