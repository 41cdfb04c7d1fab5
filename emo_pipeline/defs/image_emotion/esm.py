"""Group `esm`: the emotion stimuli map (ESM) models.

- `esm_model` (one multi-asset, `esm_fcn8s_32` and `esm_fcn8s_64`): FCN-8s trained on EmotionROI at
  the paper's two sides, scored on EmotionROI's test split beside the mean training map. Either size
  can be materialized alone.
- `esm_resnet` (`esm_resnet_model` + `esm_resnet_predictions`): the ESM-enhanced ResNet trained on
  Emotion6, each image joined with the map the FCN predicts for it; its predictions table has the
  columns of every other model's, so the evaluation table and the ensemble score it alike.

Weights go to `$EMO_HOME/models/` with a model card (`emo_pipeline.storage.model_store`), so the ESM-ResNet
finds its FCN there and `emo-pipeline predict` can rebuild both; MLflow gets parameters, per-epoch
losses, metrics and a registered model. Defaults come from the profile (`EMO_PROFILE`); `recipe`
(`paper` | `improved`) in either asset's config switches its training recipe.
"""

import math

import dagster as dg
import numpy as np
import pandas as pd
import torch

from emo_pipeline.core import train_loop
from emo_pipeline.core.digests import file_sha256, frame_fingerprint
from emo_pipeline.core.plots import esm_comparison_png
from emo_pipeline.core.profiles import ESM_MODELS, esm_model_config, esm_resnet_config
from emo_pipeline.core.profiles import ESM_RESNET as ESM_RESNET_CONFIGS
from emo_pipeline.defs.shared.checks import predictions_check_spec, predictions_cover_split
from emo_pipeline.defs.shared.gpu import GPU_POOL, GPU_TAGS
from emo_pipeline.defs.shared.metadata import png_metadata, table_metadata, test_samples_metadata
from emo_pipeline.defs.shared.publisher import DISTRIBUTION_METADATA, TrainingRun, code_version
from emo_pipeline.defs.shared.resources import (
    MLflowResource,
    ModelStoreResource,
    TorchDeviceResource,
    WarehouseResource,
)
from emo_pipeline.defs.shared.settings import apply_overrides, overrides_config
from emo_pipeline.image_emotion import esm
from emo_pipeline.image_emotion.esm import ESMConfig, ESMResNetConfig, fit_esm_model, fit_esm_resnet
from emo_pipeline.image_emotion.image_data import load_rgb
from emo_pipeline.image_emotion.training import labels_fingerprint, recipe_summary
from emo_pipeline.storage.model_store import ModelCard, ModelNotFound, load_torch_model

GROUP = "esm"
CODE_VERSION = code_version(esm, train_loop)
ESM_MODEL = "esm_model"  # the op that trains the FCNs
FCN_KEYS: tuple[str, ...] = tuple(ESM_MODELS["demo"])  # esm_fcn8s_32, esm_fcn8s_64
ESM_RESNET = "esm_resnet"
ESM_RESNET_MODEL, ESM_RESNET_PREDICTIONS = f"{ESM_RESNET}_model", f"{ESM_RESNET}_predictions"
# The FCN whose maps the ESM-ResNet reads by default, in any profile (the 64 px one in both today).
ESM_RESNET_FCNS = sorted({config.esm_model for config in ESM_RESNET_CONFIGS.values()})


def _maps_fingerprint(maps: pd.DataFrame, split: pd.DataFrame) -> str:
    return frame_fingerprint(
        maps[["image_key", "image_path", "esm_path"]].merge(split, on="image_key").sort_values("image_key"))


# --- FCN-8s on EmotionROI ------------------------------------------------------------------------------

# For every selected size; `size` is each asset's own.
ESMModelOverrides = overrides_config(ESMConfig, "ESMModelOverrides", exclude=("size",))


def _fcn_check_specs(name: str) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec("maps_valid", asset=name, blocking=True,
                          description="the saved model rebuilds from its card and gives a map of the input's size "
                                      "in [0, 1]; its test MSE is finite"),
        dg.AssetCheckSpec("beats_mean_map", asset=name, blocking=False,
                          description="the FCN's test MSE is below that of the mean training map (a warning only: "
                                      "the ESM-ResNet may still train on weak maps)"),
    ]


def _fcn_check_results(name: str, models: ModelStoreResource, mse: dict, baseline: dict) -> list[dg.AssetCheckResult]:
    """maps_valid (blocking) and beats_mean_map (a warning) for the FCN just saved."""
    test_mse, floor = mse.get("test"), baseline.get("test")
    mse_ok = test_mse is not None and math.isfinite(test_mse)
    try:
        model, card = load_torch_model(models.directory(), name)
    except (ModelNotFound, RuntimeError, ValueError) as exc:
        valid = dg.AssetCheckResult(asset_key=name, check_name="maps_valid", passed=False,
                                    description=f"the model does not load: {exc}")
    else:
        torch.manual_seed(0)
        with torch.inference_mode():
            out = model(torch.randn(2, 3, card.size, card.size))
        shape_ok = tuple(out.shape) == (2, 1, card.size, card.size)
        range_ok = bool(((out >= 0) & (out <= 1)).all())
        valid = dg.AssetCheckResult(
            asset_key=name, check_name="maps_valid", passed=shape_ok and range_ok and mse_ok,
            metadata={} if test_mse is None else {"test_mse": float(test_mse)},
            description=f"map shape {tuple(out.shape)} for a {card.size} px input, "
                        f"{'within' if range_ok else 'outside'} [0, 1]; test MSE "
                        f"{'missing' if test_mse is None else f'{test_mse:.4f}'}")
    beats = mse_ok and floor is not None and test_mse < floor
    said = ("test MSE or its baseline missing" if not mse_ok or floor is None
            else f"test MSE {test_mse:.4f} vs {floor:.4f} for the mean training map")
    return [valid, dg.AssetCheckResult(asset_key=name, check_name="beats_mean_map", passed=beats,
                                       severity=dg.AssetCheckSeverity.WARN, description=said)]


@dg.multi_asset(
    name=ESM_MODEL,
    specs=[dg.AssetSpec(key, group_name=GROUP, deps=["emotionroi_maps", "emotionroi_split"], kinds={"pytorch"},
                        skippable=True, code_version=CODE_VERSION,
                        description=f"FCN-8s predicting emotion stimuli maps at {esm_model_config(key, 'demo').size} "
                                    "px, trained on EmotionROI (weights, model card, MLflow registered model).")
           for key in FCN_KEYS],
    check_specs=[spec for key in FCN_KEYS for spec in _fcn_check_specs(key)],
    can_subset=True,
    op_tags=GPU_TAGS, pool=GPU_POOL,
)
def esm_model(context: dg.AssetExecutionContext, config: ESMModelOverrides, warehouse: WarehouseResource,
              models: ModelStoreResource, mlflow: MLflowResource, torch_device: TorchDeviceResource):
    store = warehouse.get()
    maps = store.read_table("emotionroi_maps")
    split = store.read_table("emotionroi_split")
    device = torch_device.torch_device()
    fingerprint = _maps_fingerprint(maps, split)
    selected = {key.to_user_string() for key in context.selected_asset_keys}
    for name in (key for key in FCN_KEYS if key in selected):
        settings = apply_overrides(esm_model_config(name, models.active_profile()), config)
        with TrainingRun(context, name, settings, fingerprint, models=models, mlflow=mlflow,
                         params={"device": str(device)}) as run:
            fitted = fit_esm_model(maps, split, settings, run.checkpoints, device=device, log=context.log.info)
            run.log_fit(fitted.result, fitted.weights)
            run.log_metrics({**{f"{s}_mse": v for s, v in fitted.mse.items()},
                             **{f"{s}_mse_mean_map": v for s, v in fitted.baseline_mse.items()}})
            card = ModelCard(name=name, kind="esm_fcn8s", architecture="fcn8s", size=settings.size,
                             options={"fc_channels": settings.fc_channels, "trunk_width": settings.trunk_width},
                             profile=run.profile, weights_source=fitted.weights.source)
            run.publish_torch(card, fitted.model, torch.zeros(2, 3, settings.size, settings.size).numpy())
        context.log.info(f"{name}: finished; weights at {run.saved}, checkpoints removed")
        samples = fitted.samples
        figure = esm_comparison_png(samples.keys, samples.images, samples.true_maps, samples.predicted,
                                    f"{name}: EmotionROI test images")
        yield dg.MaterializeResult(asset_key=name, data_version=run.data_version, metadata=run.metadata(
            ["test_mse", "test_mse_mean_map", "val_mse", "val_mse_mean_map", "train_mse"], extra={
                "images": dg.MetadataValue.json(fitted.images),
                "size": settings.size,
                "recipe": recipe_summary(settings),
                "test_samples": png_metadata(figure, "image | true map | predicted map | difference"),
            }))
        yield from _fcn_check_results(name, models, fitted.mse, fitted.baseline_mse)


# --- ESM-ResNet on Emotion6 ----------------------------------------------------------------------------

ESMResNetOverrides = overrides_config(ESMResNetConfig, "ESMResNetOverrides")


@dg.multi_asset(
    name=ESM_RESNET,
    specs=[
        dg.AssetSpec(ESM_RESNET_MODEL, group_name=GROUP, kinds={"pytorch"}, code_version=CODE_VERSION,
                     deps=["emotion6_labels", "emotion6_split", *ESM_RESNET_FCNS],
                     description="ResNet joined with the FCN's predicted stimuli map, trained on Emotion6 "
                                 "(weights, model card, MLflow registered model)."),
        dg.AssetSpec(ESM_RESNET_PREDICTIONS, group_name=GROUP, deps=[ESM_RESNET_MODEL], kinds={"parquet"},
                     code_version=CODE_VERSION,
                     description="The ESM-ResNet's predicted 7-way distribution for every Emotion6 image."),
    ],
    check_specs=[predictions_check_spec(ESM_RESNET_PREDICTIONS)],
    op_tags=GPU_TAGS, pool=GPU_POOL,
)
def esm_resnet(context: dg.AssetExecutionContext, config: ESMResNetOverrides, warehouse: WarehouseResource,
               models: ModelStoreResource, mlflow: MLflowResource, torch_device: TorchDeviceResource):
    store = warehouse.get()
    labels = store.read_table("emotion6_labels")
    split = store.read_table("emotion6_split")
    settings = apply_overrides(esm_resnet_config(models.active_profile()), config)
    if settings.esm_model not in FCN_KEYS:
        raise dg.Failure(f"esm_model must be one of {', '.join(FCN_KEYS)}, not {settings.esm_model!r}")
    try:
        fcn, fcn_card = load_torch_model(models.directory(), settings.esm_model)
    except ModelNotFound as exc:
        raise dg.Failure(f"{exc}; materialize {settings.esm_model} first") from exc
    device = torch_device.torch_device()
    fcn_weights = file_sha256(models.directory() / f"{settings.esm_model}.pt")[:16]
    with TrainingRun(context, ESM_RESNET_MODEL, settings, labels_fingerprint(labels, split), models=models,
                     mlflow=mlflow, run_name=ESM_RESNET, checkpoint_keys=[fcn_weights],
                     params={"esm_size": fcn_card.size, "device": str(device)}) as run:
        fitted = fit_esm_resnet(labels, split, fcn, fcn_card.size, settings, run.checkpoints, device=device,
                                log=context.log.info)
        run.log_distribution_fit(fitted, labels)
        card = ModelCard(name=ESM_RESNET, kind="esm_resnet", architecture=settings.arch, size=settings.size,
                         options={"esm_grid": settings.esm_grid}, clip=fitted.clip, esm_model=settings.esm_model,
                         esm_size=fcn_card.size, profile=run.profile, weights_source=fitted.weights.source)
        # The registered model takes one (N, 4, S, S) tensor: normalised RGB, then the FCN's map resized
        # to S (emo_pipeline.models.esm_resnet.MapInput).
        run.publish_torch(card, fitted.model, torch.zeros(2, 4, settings.size, settings.size).numpy())
    predictions_path = store.write_table(ESM_RESNET_PREDICTIONS, fitted.predictions)
    context.log.info(f"{ESM_RESNET}: finished; weights at {run.saved}, checkpoints removed")

    # What the ResNet is given beside each picture: the FCN's map (Emotion6 has no true maps).
    keys = list(fitted.predictions.loc[fitted.predictions["split"] == "test", "image_key"].astype(str).head(4))
    paths = labels.set_index("image_key").loc[keys, "image_path"]
    rows = [fitted.map_keys.index(key) for key in keys]
    pictures = np.stack([load_rgb(path, fcn_card.size) for path in paths]) if keys else np.zeros((0, 1, 1, 3))
    seen = esm_comparison_png(keys, pictures, None, fitted.maps[rows, 0].numpy(),
                              f"{ESM_RESNET}: maps predicted by {settings.esm_model}")
    yield dg.MaterializeResult(asset_key=ESM_RESNET_MODEL, data_version=run.data_version, metadata=run.metadata(
        DISTRIBUTION_METADATA, extra={
            "esm_model": settings.esm_model, "esm_size": fcn_card.size, "recipe": recipe_summary(settings),
            "prediction_floor": fitted.clip,
            **test_samples_metadata(ESM_RESNET, fitted.predictions, labels),
            "predicted_maps": png_metadata(seen, "image | predicted map")}))
    yield dg.MaterializeResult(asset_key=ESM_RESNET_PREDICTIONS, data_version=run.data_version,
                               metadata=table_metadata(fitted.predictions, predictions_path))
    yield predictions_cover_split(ESM_RESNET_PREDICTIONS, fitted.predictions, split)


defs = dg.Definitions(assets=[esm_model, esm_resnet])
