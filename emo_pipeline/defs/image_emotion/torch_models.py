"""Group `image_models`, torch family: image -> emotion distribution models trained on Emotion6.

One multi-asset per model (`<name>_model` + `<name>_predictions`), built by `emotion_model_asset`:
it trains with the shared loop (checkpoints under EMO_HOME resume a crashed run), writes the
predictions of every image as a table, saves the weights, and logs parameters, per-epoch losses,
metrics and the registered model to MLflow. Defaults come from the profile (`EMO_PROFILE`).
"""

import dataclasses
import hashlib
import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import torch

from emo_pipeline.core import metrics
from emo_pipeline.defs.shared.gpu import GPU_POOL, GPU_TAGS
from emo_pipeline.defs.shared.metadata import png_metadata, table_metadata
from emo_pipeline.defs.shared.resources import MLflowResource, TorchDeviceResource, WarehouseResource
from emo_pipeline.image_emotion.training import fit_emotion_model
from emo_pipeline.core.emotions import PROB_COLUMNS
from emo_pipeline.core.home import emo_home
from emo_pipeline.storage.model_store import ModelCard, save_torch_model
from emo_pipeline.core.plots import distribution_bars_png, training_curve_png
from emo_pipeline.core.profiles import EMOTION_MODELS, active_profile, emotion_model_config
from emo_pipeline.storage.tracking import log_torch_model

GROUP = "image_models"
REPORTED = ("mse", "chebyshev", "bhattacharyya", "kl", "top1")


class EmotionModelOverrides(dg.Config):
    """Overrides of the profile's defaults; leave a field unset to keep the profile's value."""

    size: int | None = None
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    patience: int | None = None
    loss: str | None = None
    seed: int | None = None
    augment: bool | None = None
    weight_decay: float | None = None
    output_bias: str | None = None  # train_mean: start at the training-mean distribution | default
    clip_grid: list[float] | None = None  # prediction floors tried on validation; [0.0] turns the floor off
    pretrained: str = "auto"  # auto: ImageNet weights when present | required | none
    weights_path: str | None = None


def frame_fingerprint(frame: pd.DataFrame) -> str:
    """A short digest of a table's values (row order included)."""
    return hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()).hexdigest()[:16]


def data_fingerprint(labels: pd.DataFrame, split: pd.DataFrame) -> str:
    """Changes whenever the images, their labels or the split change: new data, new checkpoints."""
    table = labels[["image_key", "image_path", *PROB_COLUMNS]].merge(split, on="image_key").sort_values("image_key")
    return frame_fingerprint(table)


def split_metrics(predictions: pd.DataFrame, labels: pd.DataFrame) -> dict[str, dict[str, float]]:
    model = metrics.split_pairs(labels, predictions)
    baseline = metrics.train_mean_pairs(labels, predictions)
    out = {}
    for split in ("val", "test"):
        out[split] = metrics.distribution_metrics(*model[split])
        out[f"{split}_train_mean"] = metrics.distribution_metrics(*baseline[split])
    return out


def set_overrides(config: dg.Config) -> dict:
    """The fields a user set in an overrides config, as `dataclasses.replace` arguments (lists as tuples)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in config.model_dump().items() if v is not None}


def checkpoint_dir(name: str, settings: object, *fingerprints: str) -> Path:
    """A folder per configuration and data: a changed setting or new data never resumes an old run."""
    key = hashlib.sha256(json.dumps([dataclasses.asdict(settings), *fingerprints], sort_keys=True,
                                    default=str).encode()).hexdigest()[:16]
    return emo_home().root / "checkpoints" / name / key


def log_fitted_model(fitted, labels: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Log a fitted distribution model to the active MLflow run: per-epoch losses, where its weights
    came from, its prediction floor and its metrics per split (returned, beside the train mean's)."""
    import mlflow as mlflow_api

    for record in fitted.result.history:
        mlflow_api.log_metrics({"train_loss": record.train_loss, "val_loss": record.val_loss}, step=record.epoch)
    mlflow_api.log_params({"weights_source": fitted.weights.source, "pretrained_loaded": fitted.weights.pretrained,
                           "prediction_floor": fitted.clip})
    scores = split_metrics(fitted.predictions, labels)
    for split_name, values in scores.items():
        mlflow_api.log_metrics({f"{split_name}_{k}": v for k, v in values.items()})
    return scores


def emotion_model_asset(name: str) -> dg.AssetsDefinition:
    model_key, predictions_key = f"{name}_model", f"{name}_predictions"

    @dg.multi_asset(
        name=name,
        specs=[
            dg.AssetSpec(model_key, group_name=GROUP, deps=["emotion6_labels", "emotion6_split"], kinds={"pytorch"},
                         description=f"{name} trained on Emotion6 (weights file and MLflow registered model)."),
            dg.AssetSpec(predictions_key, group_name=GROUP, deps=[model_key], kinds={"parquet"},
                         description=f"{name}'s predicted 7-way distribution for every Emotion6 image."),
        ],
        op_tags=GPU_TAGS, pool=GPU_POOL,
    )
    def _asset(context: dg.AssetExecutionContext, config: EmotionModelOverrides, warehouse: WarehouseResource,
               mlflow: MLflowResource, torch_device: TorchDeviceResource):
        store = warehouse.get()
        labels = store.read_table("emotion6_labels")
        split = store.read_table("emotion6_split")
        overrides = set_overrides(config)
        settings = dataclasses.replace(emotion_model_config(name), **overrides)
        device = torch_device.torch_device()
        fingerprint = data_fingerprint(labels, split)
        checkpoints = checkpoint_dir(name, settings, fingerprint)
        context.log.info(f"{name}: profile {active_profile()}, {settings}, device {device}, checkpoints {checkpoints}")

        import mlflow as mlflow_api

        with mlflow.start_run(context, run_name=name) as run:
            mlflow_api.log_params({**dataclasses.asdict(settings), "profile": active_profile(), "device": str(device)})
            fitted = fit_emotion_model(
                labels, split, settings, checkpoints, device=device, log=context.log.info,
            )
            scores = log_fitted_model(fitted, labels)
            # A batch of two keeps the exported model's batch dimension dynamic.
            example = torch.zeros(2, 3, settings.size, settings.size)
            info = log_torch_model(fitted.model.cpu().eval(), example.numpy(), registered_model_name=model_key,
                                   version_tags=mlflow.version_tags(context, model_key, fingerprint))

        # The card lets `emo-pipeline predict`, the ensemble and dataset B rebuild the model alone.
        card = ModelCard(name=name, kind="image", architecture=settings.model, size=settings.size,
                         options=fitted.options or {}, clip=fitted.clip, profile=active_profile(),
                         weights_source=fitted.weights.source)
        weights_path = save_torch_model(emo_home().models, card, fitted.model)
        predictions_path = store.write_table(predictions_key, fitted.predictions)
        # Checkpoints only serve to resume an interrupted run; with optimizer state they are several
        # times the model's size (2 GB for VGG19-BN), so a finished run drops them. A rerun with the
        # same seed retrains to the same weights.
        shutil.rmtree(checkpoints.parent, ignore_errors=True)
        context.log.info(f"{name}: finished; weights at {weights_path}, checkpoints removed")

        test_part = fitted.predictions[fitted.predictions["split"] == "test"].head(4)
        true_rows = labels.set_index("image_key").loc[test_part["image_key"], list(PROB_COLUMNS)].to_numpy()
        figure = distribution_bars_png(list(test_part["image_key"]), true_rows,
                                       test_part[list(PROB_COLUMNS)].to_numpy(), f"{name}: test images")
        yield dg.MaterializeResult(asset_key=model_key, metadata={
            "weights": dg.MetadataValue.path(str(weights_path)),
            "pretrained": fitted.weights.pretrained,
            "weights_source": fitted.weights.source,
            "profile": active_profile(),
            "settings": dg.MetadataValue.json(dataclasses.asdict(settings)),
            "best_epoch": fitted.result.best_epoch,
            "prediction_floor": fitted.clip,
            "epochs_run": fitted.result.epochs_run,
            "resumed_from_epoch": fitted.result.resumed_from,
            "mlflow_run_id": run.info.run_id,
            "mlflow_model": f"{model_key} version {info.registered_model_version}",
            **{f"{s}_{m}": float(scores[s][m]) for s in ("val", "test", "val_train_mean", "test_train_mean")
               for m in REPORTED},
            "training_curve": png_metadata(training_curve_png(fitted.result.history, name), "training curve"),
            "test_samples": png_metadata(figure, "true vs predicted"),
        })
        yield dg.MaterializeResult(asset_key=predictions_key,
                                   metadata=table_metadata(fitted.predictions, predictions_path))

    return _asset


defs = dg.Definitions(assets=[emotion_model_asset(name) for name in EMOTION_MODELS["demo"]])
