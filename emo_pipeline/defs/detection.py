"""Group `detection`: the YOLO object detector of dataset A and the objects it finds in Emotion6.

- `object_detector`: user weights when given (`weights_path` in the asset config, or the model
  store's `detector_weights`, bound to the `EMO_DETECTOR_WEIGHTS` environment variable), else the
  profile's shipped weights (the demo's: a YOLO pretrained on a synthetic world of its own,
  `emo_pipeline.detection.pretrained`), else a detector trained here from the ultralytics
  model yaml (random init) on the Visual Genome boxes of the most frequent object names, so that
  dataset A shares dataset B's object vocabulary. The weights end up in
  `$EMO_HOME/models/object_detector.pt`; the YOLO dataset and ultralytics' run folder under
  `$EMO_HOME/detector/`. Parameters, per-epoch losses, validation metrics and the weights go to MLflow.
- `emotion6_detections`: every Emotion6 image through that detector; images without a detection
  keep one row with NULL object, confidence and box.

The work is done by `emo_pipeline.detection`; this module adds storage, metadata, MLflow and lineage.
"""

import dataclasses
import hashlib
import shutil
from pathlib import Path

import dagster as dg
import pandas as pd

from emo_pipeline.core.atomic import atomic_output
from emo_pipeline.core.digests import frame_fingerprint
from emo_pipeline.core.plots import class_ap_png, detections_png
from emo_pipeline.defs.shared.gpu import GPU_POOL, GPU_TAGS
from emo_pipeline.defs.shared.metadata import png_metadata, table_metadata
from emo_pipeline.defs.shared.publisher import TrainingRun, code_version
from emo_pipeline.defs.shared.resources import (
    DataRoots,
    MLflowResource,
    ModelStoreResource,
    TorchDeviceResource,
    WarehouseResource,
)
from emo_pipeline.defs.shared.settings import apply_overrides, overrides_config
from emo_pipeline.detection import pretrained, training, yolo_dataset
from emo_pipeline.detection.detect import detect, load_detector
from emo_pipeline.detection.pretrained import PROFILE_WEIGHTS, read_provenance, verified_shipped_weights
from emo_pipeline.detection.training import (
    DETECTOR_PROFILES,
    DETECTOR_VOCABULARY,
    MODEL_YAMLS,
    DetectorSettings,
    settings_dict,
    train_detector,
)
from emo_pipeline.detection.yolo_dataset import vocabulary, write_yolo_dataset

GROUP = "detection"
DETECTOR = "object_detector"
DETECTIONS = "emotion6_detections"


def detector_weights_path(models: ModelStoreResource) -> Path:
    """Where `object_detector` leaves the weights `emotion6_detections` uses."""
    return models.directory() / f"{DETECTOR}.pt"


class ObjectDetectorConfig(overrides_config(DetectorSettings, "DetectorSettingsOverrides", exclude=("device",))):
    """Leave `weights_path` unset for the profile's weights or training; unset settings take the
    profile's value (EMO_PROFILE)."""

    weights_path: str | None = None     # a local ultralytics .pt (e.g. a COCO model); else the model store's
    pretrained: bool = True             # False: train, even where the profile ships weights (the demo)
    top_n_objects: int | None = None    # vocabulary: the N most frequent Visual Genome object names
    val_share: float = 0.2


def _ultralytics_device(torch_device: TorchDeviceResource) -> str:
    device = torch_device.torch_device()
    return "cpu" if device.type == "cpu" else str(device.index or 0)


def _install_weights(source: Path, target: Path) -> str:
    """Copy the weights `emotion6_detections` will use into the model store atomically; returns the
    sha256 of what was copied (hashed while copying)."""
    digest = hashlib.sha256()
    with atomic_output(target) as tmp, open(source, "rb") as src, open(tmp, "wb") as dst:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
            dst.write(chunk)
    return digest.hexdigest()


@dg.asset(group_name=GROUP, deps=["vg_images", "vg_objects"], kinds={"pytorch", "mlflow"}, op_tags=GPU_TAGS,
          pool=GPU_POOL, code_version=code_version(training, yolo_dataset, pretrained))
def object_detector(context: dg.AssetExecutionContext, config: ObjectDetectorConfig, data_roots: DataRoots,
                    warehouse: WarehouseResource, models: ModelStoreResource, mlflow: MLflowResource,
                    torch_device: TorchDeviceResource) -> dg.MaterializeResult:
    """The YOLO detector of dataset A: the user's weights, the profile's shipped ones, or trained here
    on Visual Genome boxes."""
    import mlflow as mlflow_api

    target = detector_weights_path(models)
    user_weights = config.weights_path or models.detector_weights or None
    profile = models.active_profile()
    shipped = PROFILE_WEIGHTS[profile] if config.pretrained and not user_weights else None
    settings = apply_overrides(DETECTOR_PROFILES[profile], config)
    settings = dataclasses.replace(settings, device=_ultralytics_device(torch_device))
    if settings.model_yaml not in MODEL_YAMLS:
        raise ValueError(f"model_yaml {settings.model_yaml!r}: choose one of {', '.join(MODEL_YAMLS)}")
    metadata: dict = {}
    if user_weights or shipped:
        if user_weights:
            loaded = load_detector(user_weights)
            path_taken = f"user weights {loaded.weights}"
        else:
            loaded = load_detector(verified_shipped_weights())
            record = read_provenance(loaded.weights)
            path_taken = (f"shipped weights pretrained on a synthetic world (seed {record['world']['seed']}, "
                          f"{record['world']['visual_genome_images']:,} Visual Genome pictures)")
            metadata["pretraining"] = dg.MetadataValue.json(record)
            metadata.update({f"pretraining_val_{k}": v for k, v in record["val_metrics"].items()})
        context.log.info(f"object_detector: using {path_taken} ({len(loaded.names)} classes); no training")
        names = loaded.names
        sha = _install_weights(loaded.weights, target)
        with TrainingRun(context, DETECTOR, {}, sha[:16], models=models, mlflow=mlflow,
                         params={"path_taken": path_taken, "trained": False, "weights_path": str(loaded.weights),
                                 "classes": len(names), "weights_sha256": sha}) as run:
            metadata.update({"trained": False, "train_imgsz": loaded.train_imgsz or 0})
            _log_detector(target, names, path_taken)
    else:
        top_n = config.top_n_objects or DETECTOR_VOCABULARY[profile]
        store = warehouse.get()
        objects = store.read_table("vg_objects", columns=["image_id", "name", "x", "y", "w", "h"])
        images = store.read_table("vg_images", columns=["image_id", "width", "height", "image_path"])
        names = vocabulary(objects, top_n)
        context.log.info(f"object_detector: no weights given, training {settings.model_yaml} from random init "
                         f"on the {len(names)} most frequent Visual Genome object names ({profile} "
                         f"profile): {', '.join(names[:20])}{' ...' if len(names) > 20 else ''}")
        path_taken = f"trained from {settings.model_yaml}, random init"
        work = models.work_dir("detector")
        dataset = write_yolo_dataset(images, objects, names, data_roots.vg(), work / "dataset",
                                     val_share=config.val_share, seed=settings.seed, log=context.log.info)
        fingerprint = frame_fingerprint(objects)[:8] + frame_fingerprint(images)[:8]
        with TrainingRun(context, DETECTOR, settings_dict(settings), fingerprint, models=models,
                         mlflow=mlflow, params={"path_taken": path_taken, "trained": True, "top_n_objects": top_n,
                                                "classes": len(names), "val_share": config.val_share,
                                                "train_images": dataset.images["train"],
                                                "val_images": dataset.images["val"]}) as run:
            trained = train_detector(dataset.data_yaml, settings, work / "runs", log=context.log.info)
            for record in trained.history:
                run.log_metrics({**{k.replace("/", "_"): v for k, v in record.losses.items()},
                                 **{f"val_{k}": v for k, v in record.metrics.items()},
                                 "epoch_seconds": record.seconds}, step=record.epoch)
            run.log_metrics({f"val_{k}": v for k, v in trained.metrics.items()})
            sha = _install_weights(trained.weights, target)
            # ultralytics' best.pt and last.pt only serve a resumed run: the installed copy is the model.
            shutil.rmtree(trained.weights.parent, ignore_errors=True)
            run.log_params({"weights_sha256": sha})
            if trained.per_class_ap50:
                mlflow_api.log_dict(trained.per_class_ap50, "val_ap50_per_class.json")
            _log_detector(target, names, path_taken)
        epochs_run = len(trained.history)
        metadata.update({
            "trained": True,
            "settings": dg.MetadataValue.json(settings_dict(settings)),
            "dataset": dg.MetadataValue.path(str(dataset.root)),
            "dataset_images": dg.MetadataValue.json({**dataset.images, "background": dataset.background_images,
                                                     "missing_files": dataset.missing_images}),
            "dataset_boxes": dg.MetadataValue.json(dataset.boxes),
            "epochs_run": epochs_run,
            "training_seconds": round(trained.seconds, 1),
            "seconds_per_epoch": round(trained.seconds / max(epochs_run, 1), 2),
            "device": trained.device,
            **{f"val_{k}": round(v, 4) for k, v in trained.metrics.items()},
        })
        if trained.per_class_ap50:
            png = class_ap_png(trained.per_class_ap50, f"{DETECTOR}: AP50 per class on the val split")
            metadata["val_ap50_per_class"] = png_metadata(png, "AP50 per class")
    context.log.info(f"object_detector: {path_taken}; weights at {target}")
    return dg.MaterializeResult(data_version=run.data_version, metadata=run.metadata([], extra={
        "path_taken": path_taken,
        "weights": dg.MetadataValue.path(str(target)),
        "weights_sha256": sha,
        "classes": dg.MetadataValue.json(names),
        "n_classes": len(names),
        **metadata,
    }))


def _log_detector(weights: Path, names: list[str], path_taken: str) -> None:
    """The detector's classes and weights as artifacts of the active MLflow run; the installed weights
    become a link to the logged copy (one file on disk)."""
    import mlflow as mlflow_api

    from emo_pipeline.storage.mlflow_models import link_to_artifact

    mlflow_api.log_dict({"names": names}, "classes.json")
    mlflow_api.log_artifact(str(weights))
    link_to_artifact(weights, mlflow_api.get_artifact_uri(weights.name))
    mlflow_api.set_tag("path_taken", path_taken)


class DetectionConfig(dg.Config):
    confidence: float = 0.2         # the paper's threshold for dataset A
    imgsz: int | None = None        # default: the size the detector was trained at, else 640
    batch: int = 16
    samples_shown: int = 4


@dg.asset(group_name=GROUP, deps=[DETECTOR, "emotion6_labels"], kinds={"parquet"}, op_tags=GPU_TAGS, pool=GPU_POOL)
def emotion6_detections(context: dg.AssetExecutionContext, config: DetectionConfig, warehouse: WarehouseResource,
                        models: ModelStoreResource, torch_device: TorchDeviceResource) -> dg.MaterializeResult:
    """Objects found in every Emotion6 image: image_key, object, confidence, box x, y, w, h in pixels.

    An image without a detection keeps one row whose object, class_id, confidence and box are NULL:
    `SELECT count(DISTINCT image_key) FROM emotion6_detections WHERE object IS NULL` counts them.
    """
    weights = detector_weights_path(models)
    if not weights.is_file():
        raise FileNotFoundError(f"no detector weights at {weights}: materialize {DETECTOR} first")
    loaded = load_detector(weights)
    imgsz = config.imgsz or loaded.train_imgsz or 640
    store = warehouse.get()
    labels = store.read_table("emotion6_labels", columns=["image_key", "image_path"])
    context.log.info(f"{DETECTIONS}: {len(labels)} images through {weights} ({len(loaded.names)} classes) at "
                     f"{imgsz} px, confidence >= {config.confidence}")
    table = detect(loaded, zip(labels["image_key"], labels["image_path"]), conf=config.confidence,
                   imgsz=imgsz, batch=config.batch, device=_ultralytics_device(torch_device),
                   log=context.log.info)
    path = store.write_table(DETECTIONS, table)
    found = table.dropna(subset=["object"])
    empty = int(table.loc[table["object"].isna(), "image_key"].nunique())
    top = found["object"].value_counts().head(15).rename_axis("object").reset_index(name="detections")
    context.log.info(f"{DETECTIONS}: {len(found)} detections in {table['image_key'].nunique()} images, "
                     f"{empty} images without one")
    shown = labels.head(0)
    if len(found):
        shown = labels[labels["image_key"].isin(found["image_key"].drop_duplicates().head(config.samples_shown))]
    samples = [(key, p, table[table["image_key"] == key]) for key, p in zip(shown["image_key"], shown["image_path"])]
    metadata = {
        **table_metadata(table, path),
        "images": int(table["image_key"].nunique()),
        "detections": len(found),
        "images_without_detection": empty,
        "detections_per_image": round(len(found) / max(len(labels), 1), 3),
        "confidence_threshold": config.confidence,
        "imgsz": imgsz,
        "detector_weights": dg.MetadataValue.path(str(weights)),
        "top_objects": dg.MetadataValue.md(top.to_markdown(index=False) if len(top) else "(no detections)"),
    }
    if samples:
        metadata["samples"] = png_metadata(detections_png(samples, f"{DETECTIONS}: samples"), "detections")
    return dg.MaterializeResult(metadata=metadata)


@dg.asset_check(asset=DETECTIONS, name="every_emotion6_image_present", blocking=True,
                additional_deps=["emotion6_labels"],
                description="every Emotion6 image has a row; an image with a NULL-object row has no other row; "
                            "boxes lie inside their image")
def detections_cover_emotion6(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    store = warehouse.get()
    table = store.read_table(DETECTIONS)
    keys = set(store.read_table("emotion6_labels", columns=["image_key"])["image_key"])
    present = set(table["image_key"])
    missing, unknown = keys - present, present - keys
    null_rows = table["object"].isna()
    # An image is either one NULL row (nothing found) or only detections, never both or two NULL rows.
    per_image = pd.DataFrame({"nulls": null_rows, "found": ~null_rows, "image_key": table["image_key"]}) \
        .groupby("image_key")[["nulls", "found"]].sum()
    mixed = int(((per_image["nulls"] > 0) & ((per_image["found"] > 0) | (per_image["nulls"] > 1))).sum())
    boxes = table[~null_rows]
    tolerance = 1.0  # pixels: the detector's boxes are floats clipped to the image by ultralytics
    outside = int(((boxes["x"] < -tolerance) | (boxes["y"] < -tolerance) | (boxes["w"] <= 0) | (boxes["h"] <= 0)
                   | (boxes["x"] + boxes["w"] > boxes["image_width"] + tolerance)
                   | (boxes["y"] + boxes["h"] > boxes["image_height"] + tolerance)).sum())
    passed = not missing and not unknown and mixed == 0 and outside == 0
    return dg.AssetCheckResult(passed=passed, metadata={
        "images": len(present), "missing_images": len(missing), "unknown_images": len(unknown),
        "mixed_null_rows": mixed, "boxes_outside_image": outside,
        "missing_sample": dg.MetadataValue.json(sorted(missing)[:20]),
    }, description=(f"{len(missing)} Emotion6 images missing, {len(unknown)} unknown keys, {mixed} images with "
                    f"both a NULL row and detections, {outside} boxes outside their image"))


defs = dg.Definitions(assets=[object_detector, emotion6_detections], asset_checks=[detections_cover_emotion6])
