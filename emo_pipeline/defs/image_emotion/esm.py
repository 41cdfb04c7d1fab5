"""Group `esm`: the emotion stimuli map (ESM) models.

- `esm_model` (one multi-asset, `esm_fcn8s_32` and `esm_fcn8s_64`): FCN-8s trained on EmotionROI at
  the paper's two sides, scored on EmotionROI's test split beside the mean training map. Either size
  can be materialized alone.
- `esm_resnet` (`esm_resnet_model` + `esm_resnet_predictions`): the ESM-enhanced ResNet trained on
  Emotion6, each image joined with the map the FCN predicts for it; its predictions table has the
  columns of every other model's, so the evaluation table and the ensemble score it alike.

Weights go to `$EMO_HOME/models/` with a model card (`emo_pipeline.storage.model_store`), so the ESM-ResNet
finds its FCN there and `emo-pipeline predict` can rebuild both; MLflow gets parameters, per-epoch
losses, metrics and a registered model. Defaults come from the profile (`EMO_PROFILE`).
"""

import dataclasses
import hashlib
import math
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import torch

from emo_pipeline.defs.image_emotion.torch_models import (
    REPORTED,
    EmotionModelOverrides,
    checkpoint_dir,
    data_fingerprint,
    frame_fingerprint,
    log_fitted_model,
    set_overrides,
)
from emo_pipeline.defs.shared.gpu import GPU_POOL, GPU_TAGS
from emo_pipeline.defs.shared.metadata import png_metadata, table_metadata
from emo_pipeline.defs.shared.resources import MLflowResource, TorchDeviceResource, WarehouseResource
from emo_pipeline.core.emotions import PROB_COLUMNS
from emo_pipeline.image_emotion.esm import MapInput, fit_esm_model, fit_esm_resnet
from emo_pipeline.core.home import emo_home
from emo_pipeline.image_emotion.image_data import load_rgb
from emo_pipeline.storage.model_store import ModelCard, ModelNotFound, load_torch_model, save_torch_model
from emo_pipeline.core.plots import distribution_bars_png, esm_comparison_png, training_curve_png
from emo_pipeline.core.profiles import ESM_MODELS, active_profile, esm_model_config, esm_resnet_config
from emo_pipeline.core.profiles import ESM_RESNET as ESM_RESNET_CONFIGS
from emo_pipeline.storage.tracking import log_torch_model

GROUP = "esm"
ESM_MODEL = "esm_model"  # the op that trains the FCNs
FCN_KEYS: tuple[str, ...] = tuple(ESM_MODELS["demo"])  # esm_fcn8s_32, esm_fcn8s_64
ESM_RESNET = "esm_resnet"
ESM_RESNET_MODEL, ESM_RESNET_PREDICTIONS = f"{ESM_RESNET}_model", f"{ESM_RESNET}_predictions"
# The FCN whose maps the ESM-ResNet reads by default, in any profile (the 64 px one in both today).
ESM_RESNET_FCNS = sorted({config.esm_model for config in ESM_RESNET_CONFIGS.values()})


def _maps_fingerprint(maps: pd.DataFrame, split: pd.DataFrame) -> str:
    return frame_fingerprint(
        maps[["image_key", "image_path", "esm_path"]].merge(split, on="image_key").sort_values("image_key"))


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


# --- FCN-8s on EmotionROI ------------------------------------------------------------------------------

class ESMModelOverrides(dg.Config):
    """Overrides of the profile's defaults for every selected size; unset fields keep the profile's value."""

    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    patience: int | None = None
    seed: int | None = None
    val_fraction: float | None = None
    fc_channels: int | None = None
    trunk_width: int | None = None
    mirror: bool | None = None
    pretrained: str = "auto"  # auto: ImageNet VGG-16 weights when present | required | none
    weights_path: str | None = None


@dg.multi_asset(
    name=ESM_MODEL,
    specs=[dg.AssetSpec(key, group_name=GROUP, deps=["emotionroi_maps", "emotionroi_split"], kinds={"pytorch"},
                        skippable=True,
                        description=f"FCN-8s predicting emotion stimuli maps at {esm_model_config(key, 'demo').size} "
                                    "px, trained on EmotionROI (weights, model card, MLflow registered model).")
           for key in FCN_KEYS],
    can_subset=True,
    op_tags=GPU_TAGS, pool=GPU_POOL,
)
def esm_model(context: dg.AssetExecutionContext, config: ESMModelOverrides, warehouse: WarehouseResource,
              mlflow: MLflowResource, torch_device: TorchDeviceResource):
    import mlflow as mlflow_api

    store = warehouse.get()
    maps = store.read_table("emotionroi_maps")
    split = store.read_table("emotionroi_split")
    overrides = set_overrides(config)
    device = torch_device.torch_device()
    selected = {key.to_user_string() for key in context.selected_asset_keys}
    for name in (key for key in FCN_KEYS if key in selected):
        settings = dataclasses.replace(esm_model_config(name), **overrides)
        fingerprint = _maps_fingerprint(maps, split)
        checkpoints = checkpoint_dir(name, settings, fingerprint)
        context.log.info(f"{name}: profile {active_profile()}, {settings}, device {device}, checkpoints {checkpoints}")

        with mlflow.start_run(context, run_name=name) as run:
            mlflow_api.log_params({**dataclasses.asdict(settings), "profile": active_profile(), "device": str(device)})
            fitted = fit_esm_model(maps, split, settings, checkpoints, device=device, log=context.log.info)
            for record in fitted.result.history:
                mlflow_api.log_metrics({"train_loss": record.train_loss, "val_loss": record.val_loss},
                                       step=record.epoch)
            mlflow_api.log_params({"weights_source": fitted.weights.source,
                                   "pretrained_loaded": fitted.weights.pretrained})
            mlflow_api.log_metrics({**{f"{s}_mse": v for s, v in fitted.mse.items()},
                                    **{f"{s}_mse_mean_map": v for s, v in fitted.baseline_mse.items()}})
            # A batch of two keeps the exported model's batch dimension dynamic.
            example = torch.zeros(2, 3, settings.size, settings.size)
            info = log_torch_model(fitted.model.cpu().eval(), example.numpy(), registered_model_name=name,
                                   version_tags=mlflow.version_tags(context, name, fingerprint))

        card = ModelCard(name=name, kind="esm_fcn8s", architecture="fcn8s", size=settings.size,
                         options={"fc_channels": settings.fc_channels, "trunk_width": settings.trunk_width},
                         profile=active_profile(), weights_source=fitted.weights.source)
        weights_path = save_torch_model(emo_home().models, card, fitted.model)
        # Resume checkpoints only serve an interrupted run (see defs/image_emotion/torch_models.py).
        shutil.rmtree(checkpoints.parent, ignore_errors=True)
        context.log.info(f"{name}: finished; weights at {weights_path}, checkpoints removed")

        samples = fitted.samples
        figure = esm_comparison_png(samples.keys, samples.images, samples.true_maps, samples.predicted,
                                    f"{name}: EmotionROI test images")
        yield dg.MaterializeResult(asset_key=name, metadata={
            "test_mse": fitted.mse["test"],
            "test_mse_mean_map": fitted.baseline_mse["test"],
            "val_mse": fitted.mse["val"],
            "val_mse_mean_map": fitted.baseline_mse["val"],
            "train_mse": fitted.mse["train"],
            "images": dg.MetadataValue.json(fitted.images),
            "size": settings.size,
            "weights": dg.MetadataValue.path(str(weights_path)),
            "pretrained": fitted.weights.pretrained,
            "weights_source": fitted.weights.source,
            "profile": active_profile(),
            "settings": dg.MetadataValue.json(dataclasses.asdict(settings)),
            "best_epoch": fitted.result.best_epoch,
            "epochs_run": fitted.result.epochs_run,
            "resumed_from_epoch": fitted.result.resumed_from,
            "mlflow_run_id": run.info.run_id,
            "mlflow_model": f"{name} version {info.registered_model_version}",
            "training_curve": png_metadata(training_curve_png(fitted.result.history, name), "training curve"),
            "test_samples": png_metadata(figure, "image | true map | predicted map | difference"),
        })


def _fcn_checks(name: str) -> list[dg.AssetChecksDefinition]:
    @dg.asset_check(asset=name, name="maps_valid", blocking=True,
                    description="the saved model rebuilds from its card and gives a map of the input's size in "
                                "[0, 1]; its test MSE is finite")
    def maps_valid(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        try:
            model, card = load_torch_model(emo_home().models, name)
        except (ModelNotFound, RuntimeError, ValueError) as exc:
            return dg.AssetCheckResult(passed=False, description=f"the model does not load: {exc}")
        torch.manual_seed(0)
        with torch.inference_mode():
            out = model(torch.randn(2, 3, card.size, card.size))
        shape_ok = tuple(out.shape) == (2, 1, card.size, card.size)
        range_ok = bool(((out >= 0) & (out <= 1)).all())
        test_mse = _latest_metadata(context, name).get("test_mse")
        mse_ok = test_mse is not None and math.isfinite(test_mse)
        return dg.AssetCheckResult(passed=shape_ok and range_ok and mse_ok,
                                   metadata={} if test_mse is None else {"test_mse": float(test_mse)},
                                   description=f"map shape {tuple(out.shape)} for a {card.size} px input, "
                                               f"{'within' if range_ok else 'outside'} [0, 1]; test MSE "
                                               f"{'missing' if test_mse is None else f'{test_mse:.4f}'}")

    @dg.asset_check(asset=name, name="beats_mean_map", blocking=True,
                    description="the FCN's test MSE is below that of the mean training map (a warning only: "
                                "the ESM-ResNet may still train on weak maps)")
    def beats_mean_map(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        metadata = _latest_metadata(context, name)
        mse, floor = metadata.get("test_mse"), metadata.get("test_mse_mean_map")
        passed = mse is not None and floor is not None and mse < floor
        said = ("test MSE or its baseline missing" if mse is None or floor is None
                else f"test MSE {mse:.4f} vs {floor:.4f} for the mean training map")
        return dg.AssetCheckResult(passed=passed, severity=dg.AssetCheckSeverity.WARN, description=said)

    return [maps_valid, beats_mean_map]


def _latest_metadata(context: dg.AssetCheckExecutionContext, name: str) -> dict:
    """The numeric metadata of the asset's latest materialization."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey(name))
    if event is None or event.asset_materialization is None:
        return {}
    return {k: v.value for k, v in event.asset_materialization.metadata.items()
            if isinstance(v.value, (int, float)) and not isinstance(v.value, bool)}


# --- ESM-ResNet on Emotion6 ----------------------------------------------------------------------------

class ESMResNetOverrides(EmotionModelOverrides):
    """Overrides of the profile's defaults; unset fields keep the profile's value."""

    arch: str | None = None          # resnet18 | resnet101
    esm_model: str | None = None     # the FCN whose maps are used: one of esm_fcn8s_32, esm_fcn8s_64


@dg.multi_asset(
    name=ESM_RESNET,
    specs=[
        dg.AssetSpec(ESM_RESNET_MODEL, group_name=GROUP, kinds={"pytorch"},
                     deps=["emotion6_labels", "emotion6_split", *ESM_RESNET_FCNS],
                     description="ResNet joined with the FCN's predicted stimuli map, trained on Emotion6 "
                                 "(weights, model card, MLflow registered model)."),
        dg.AssetSpec(ESM_RESNET_PREDICTIONS, group_name=GROUP, deps=[ESM_RESNET_MODEL], kinds={"parquet"},
                     description="The ESM-ResNet's predicted 7-way distribution for every Emotion6 image."),
    ],
    op_tags=GPU_TAGS, pool=GPU_POOL,
)
def esm_resnet(context: dg.AssetExecutionContext, config: ESMResNetOverrides, warehouse: WarehouseResource,
               mlflow: MLflowResource, torch_device: TorchDeviceResource):
    import mlflow as mlflow_api

    store = warehouse.get()
    labels = store.read_table("emotion6_labels")
    split = store.read_table("emotion6_split")
    overrides = set_overrides(config)
    settings = dataclasses.replace(esm_resnet_config(), **overrides)
    if settings.esm_model not in FCN_KEYS:
        raise dg.Failure(f"esm_model must be one of {', '.join(FCN_KEYS)}, not {settings.esm_model!r}")
    models_dir = emo_home().models
    try:
        fcn, fcn_card = load_torch_model(models_dir, settings.esm_model)
    except ModelNotFound as exc:
        raise dg.Failure(f"{exc}; materialize {settings.esm_model} first") from exc
    device = torch_device.torch_device()
    fingerprint = data_fingerprint(labels, split)
    checkpoints = checkpoint_dir(ESM_RESNET, settings, fingerprint,
                                 _file_digest(models_dir / f"{settings.esm_model}.pt"))
    context.log.info(f"{ESM_RESNET}: profile {active_profile()}, {settings}, maps from {settings.esm_model} "
                     f"({fcn_card.size} px), device {device}, checkpoints {checkpoints}")

    with mlflow.start_run(context, run_name=ESM_RESNET) as run:
        mlflow_api.log_params({**dataclasses.asdict(settings), "esm_size": fcn_card.size, "profile": active_profile(),
                               "device": str(device)})
        fitted = fit_esm_resnet(labels, split, fcn, fcn_card.size, settings, checkpoints, device=device,
                                log=context.log.info)
        scores = log_fitted_model(fitted, labels)
        # The registered model takes one (N, 4, S, S) tensor: normalised RGB, then the FCN's map
        # resized to S (see emo_pipeline.image_emotion.esm.MapInput); a batch of two keeps N dynamic.
        example = torch.zeros(2, 4, settings.size, settings.size)
        info = log_torch_model(MapInput(fitted.model).cpu().eval(), example.numpy(),
                               registered_model_name=ESM_RESNET_MODEL,
                               version_tags=mlflow.version_tags(context, ESM_RESNET_MODEL, fingerprint))

    card = ModelCard(name=ESM_RESNET, kind="esm_resnet", architecture=settings.arch, size=settings.size,
                     options={"esm_grid": settings.esm_grid}, clip=fitted.clip, esm_model=settings.esm_model,
                     esm_size=fcn_card.size, profile=active_profile(), weights_source=fitted.weights.source)
    weights_path = save_torch_model(models_dir, card, fitted.model)
    predictions_path = store.write_table(ESM_RESNET_PREDICTIONS, fitted.predictions)
    shutil.rmtree(checkpoints.parent, ignore_errors=True)
    context.log.info(f"{ESM_RESNET}: finished; weights at {weights_path}, checkpoints removed")

    test_part = fitted.predictions[fitted.predictions["split"] == "test"].head(4)
    keys = list(test_part["image_key"].astype(str))
    true_rows = labels.set_index("image_key").loc[keys, list(PROB_COLUMNS)].to_numpy()
    bars = distribution_bars_png(keys, true_rows, test_part[list(PROB_COLUMNS)].to_numpy(),
                                 f"{ESM_RESNET}: test images")
    # What the ResNet is given beside each picture: the FCN's map (Emotion6 has no true maps).
    paths = labels.set_index("image_key").loc[keys, "image_path"]
    rows = [fitted.map_keys.index(key) for key in keys]
    pictures = np.stack([load_rgb(path, fcn_card.size) for path in paths]) if keys else np.zeros((0, 1, 1, 3))
    seen = esm_comparison_png(keys, pictures, None, fitted.maps[rows, 0].numpy(),
                              f"{ESM_RESNET}: maps predicted by {settings.esm_model}")
    yield dg.MaterializeResult(asset_key=ESM_RESNET_MODEL, metadata={
        "weights": dg.MetadataValue.path(str(weights_path)),
        "esm_model": settings.esm_model,
        "esm_size": fcn_card.size,
        "pretrained": fitted.weights.pretrained,
        "weights_source": fitted.weights.source,
        "profile": active_profile(),
        "settings": dg.MetadataValue.json(dataclasses.asdict(settings)),
        "best_epoch": fitted.result.best_epoch,
        "epochs_run": fitted.result.epochs_run,
        "resumed_from_epoch": fitted.result.resumed_from,
        "prediction_floor": fitted.clip,
        "mlflow_run_id": run.info.run_id,
        "mlflow_model": f"{ESM_RESNET_MODEL} version {info.registered_model_version}",
        **{f"{s}_{m}": float(scores[s][m]) for s in ("val", "test", "val_train_mean", "test_train_mean")
           for m in REPORTED},
        "training_curve": png_metadata(training_curve_png(fitted.result.history, ESM_RESNET), "training curve"),
        "test_samples": png_metadata(bars, "true vs predicted"),
        "predicted_maps": png_metadata(seen, "image | predicted map"),
    })
    yield dg.MaterializeResult(asset_key=ESM_RESNET_PREDICTIONS,
                               metadata=table_metadata(fitted.predictions, predictions_path))


@dg.asset_check(asset=ESM_RESNET_PREDICTIONS, name="distributions_cover_split", blocking=True,
                additional_deps=["emotion6_split"],
                description="every image of emotion6_split has one prediction in its own split, the columns are "
                            "image_key, split, prob_*, and every row is a distribution (non-negative, sums to 1 "
                            "within 1e-6)")
def esm_resnet_predictions_valid(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    store = warehouse.get()
    predictions = store.read_table(ESM_RESNET_PREDICTIONS)
    split = store.read_table("emotion6_split")
    columns_ok = list(predictions.columns) == ["image_key", "split", *PROB_COLUMNS]
    merged = split.merge(predictions, on="image_key", how="outer", suffixes=("", "_predicted"), indicator=True)
    unmatched = int((merged["_merge"] != "both").sum())
    wrong_split = int((merged["_merge"].eq("both") & (merged["split"] != merged["split_predicted"])).sum())
    duplicated = int(predictions["image_key"].duplicated().sum())
    values = predictions[list(PROB_COLUMNS)].to_numpy(dtype=float) if columns_ok else np.full((1, 1), np.nan)
    not_distributions = int((~np.isfinite(values).all(axis=1) | (values < 0).any(axis=1)
                             | (np.abs(values.sum(axis=1) - 1) > 1e-6)).sum())
    passed = columns_ok and unmatched == wrong_split == duplicated == not_distributions == 0
    return dg.AssetCheckResult(passed=passed, metadata={"images": len(predictions)}, description=(
        f"columns {'as expected' if columns_ok else list(predictions.columns)}; {unmatched} images in one table "
        f"only, {wrong_split} in another split, {duplicated} duplicated, {not_distributions} rows that are not "
        f"distributions"))


defs = dg.Definitions(
    assets=[esm_model, esm_resnet],
    asset_checks=[*(check for key in FCN_KEYS for check in _fcn_checks(key)), esm_resnet_predictions_valid],
)
