"""Group `image_models`, torch family: image -> emotion distribution models trained on Emotion6.

One multi-asset per model (`<name>_model` + `<name>_predictions`), built by `emotion_model_asset`:
it trains with the shared loop (checkpoints under EMO_HOME resume a crashed run), writes the
predictions of every image as a table, saves the weights, and logs parameters, per-epoch losses,
metrics and the registered model to MLflow. Defaults come from the profile (`EMO_PROFILE`); the
config's `recipe` (`paper` | `improved`) switches the whole training recipe, and the metadata's
`recipe` names it with any setting that departs from it.
"""

import dagster as dg
import torch

from emo_pipeline.core import train_loop
from emo_pipeline.core.profiles import EMOTION_MODELS, emotion_model_config
from emo_pipeline.defs.shared.checks import predictions_check_spec, predictions_cover_split
from emo_pipeline.defs.shared.gpu import GPU_POOL, GPU_TAGS
from emo_pipeline.defs.shared.metadata import table_metadata, test_samples_metadata
from emo_pipeline.defs.shared.publisher import DISTRIBUTION_METADATA, TrainingRun, code_version
from emo_pipeline.defs.shared.resources import (
    MLflowResource,
    ModelStoreResource,
    TorchDeviceResource,
    WarehouseResource,
)
from emo_pipeline.defs.shared.settings import apply_overrides, overrides_config
from emo_pipeline.image_emotion import training
from emo_pipeline.image_emotion.training import (
    EmotionModelConfig,
    fit_emotion_model,
    labels_fingerprint,
    recipe_summary,
)
from emo_pipeline.storage.model_store import ModelCard

GROUP = "image_models"
CODE_VERSION = code_version(training, train_loop)

EmotionModelOverrides = overrides_config(EmotionModelConfig, "EmotionModelOverrides", exclude=("model",))


def emotion_model_asset(name: str) -> dg.AssetsDefinition:
    model_key, predictions_key = f"{name}_model", f"{name}_predictions"

    @dg.multi_asset(
        name=name,
        specs=[
            dg.AssetSpec(model_key, group_name=GROUP, deps=["emotion6_labels", "emotion6_split"], kinds={"pytorch"},
                         code_version=CODE_VERSION,
                         description=f"{name} trained on Emotion6 (weights file and MLflow registered model)."),
            dg.AssetSpec(predictions_key, group_name=GROUP, deps=[model_key], kinds={"parquet"},
                         code_version=CODE_VERSION,
                         description=f"{name}'s predicted 7-way distribution for every Emotion6 image."),
        ],
        check_specs=[predictions_check_spec(predictions_key)],
        op_tags=GPU_TAGS, pool=GPU_POOL,
    )
    def _asset(context: dg.AssetExecutionContext, config: EmotionModelOverrides, warehouse: WarehouseResource,
               models: ModelStoreResource, mlflow: MLflowResource, torch_device: TorchDeviceResource):
        store = warehouse.get()
        labels = store.read_table("emotion6_labels")
        split = store.read_table("emotion6_split")
        settings = apply_overrides(emotion_model_config(name, models.active_profile()), config)
        device = torch_device.torch_device()
        with TrainingRun(context, model_key, settings, labels_fingerprint(labels, split), models=models,
                         mlflow=mlflow, run_name=name, params={"device": str(device)}) as run:
            fitted = fit_emotion_model(labels, split, settings, run.checkpoints, device=device, log=context.log.info)
            run.log_distribution_fit(fitted, labels)
            # The card lets `emo-pipeline predict`, the ensemble and dataset B rebuild the model alone.
            card = ModelCard(name=name, kind="image", architecture=settings.model, size=settings.size,
                             options=fitted.options or {}, clip=fitted.clip, flip_tta=bool(settings.flip_tta),
                             profile=run.profile, weights_source=fitted.weights.source)
            run.publish_torch(card, fitted.model, torch.zeros(2, 3, settings.size, settings.size).numpy())
        predictions_path = store.write_table(predictions_key, fitted.predictions)
        context.log.info(f"{name}: finished; weights at {run.saved}, checkpoints removed")
        yield dg.MaterializeResult(asset_key=model_key, data_version=run.data_version, metadata=run.metadata(
            DISTRIBUTION_METADATA,
            extra={"recipe": recipe_summary(settings), "prediction_floor": fitted.clip,
                   **test_samples_metadata(name, fitted.predictions, labels)}))
        yield dg.MaterializeResult(asset_key=predictions_key, data_version=run.data_version,
                                   metadata=table_metadata(fitted.predictions, predictions_path))
        yield predictions_cover_split(predictions_key, fitted.predictions, split)

    return _asset


defs = dg.Definitions(assets=[emotion_model_asset(name) for name in EMOTION_MODELS["demo"]])
