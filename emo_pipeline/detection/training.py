"""Training a detector here: a model yaml shipped in the ultralytics wheel, random init, no download.

`train_detector` trains from `yolo11n.yaml` / `yolov8n.yaml` (random initialisation) on a YOLO
dataset written by `yolo_dataset`, with the settings of a `DetectorSettings` (`DETECTOR_PROFILES`
holds the project's choices), and returns the best weights, their validation metrics and the
per-epoch history.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from emo_pipeline.detection import Log, no_log
from emo_pipeline.detection.ultralytics_offline import prepare_ultralytics, torch_process_state

# Model yamls shipped in the ultralytics wheel that build a random-init nano detector offline.
MODEL_YAMLS = ("yolo11n.yaml", "yolov8n.yaml")
DEFAULT_MODEL_YAML = "yolo11n.yaml"


@dataclass(frozen=True)
class DetectorSettings:
    """How to train a detector from a model yaml (the ultralytics arguments this project sets).

    Defaults are ultralytics' own, except where noted; `DETECTOR_PROFILES` holds the project's choices.
    """

    model_yaml: str = DEFAULT_MODEL_YAML
    epochs: int = 100
    imgsz: int = 640
    batch: int = 16
    seed: int = 0
    workers: int = 0              # dataloader processes; 0 loads in the training process (2-core machines)
    patience: int = 100           # epochs without val improvement before stopping early
    validate_each_epoch: bool = True  # False: validate only after the last epoch (faster on a CPU)
    cache: bool = True            # decoded images kept in memory
    amp: bool = False             # True runs ultralytics' AMP check, which downloads yolo26n.pt if absent
    device: str = "cpu"           # "cpu", "0", "cuda:0", ...
    mosaic: float = 1.0           # ultralytics' default augmentation
    optimizer: str = "auto"       # "auto" picks AdamW with a small lr for short runs; "AdamW", "SGD", ...
    lr0: float = 0.01             # initial learning rate (ignored by optimizer "auto")
    warmup_epochs: float = 3.0
    close_mosaic: int = 10        # last epochs trained without mosaic


# Demo: the synthetic world's 160 px pictures on a laptop CPU in about a minute and a half. From
# random init with few steps, AdamW at a higher learning rate than ultralytics' "auto" choice (2e-4 for
# 40 classes), a short warmup, small batches (more steps) and no mosaic learned fastest in a sweep on
# the synthetic world. 16 epochs at 128 px, measured on the demo world (seed 0, one thread): 83 CPU-s,
# validation mAP50 .139, against 153 CPU-s and .058 for 20 epochs at 160 px (whose Emotion6
# detections were three quarters one class); 12 epochs at 128 px: 64 CPU-s, .085; 20: 99 CPU-s, .161.
# `paper` profile: the paper ran a pretrained YOLO (§3.4), which is the user's weights (`weights_path`);
# without them this profile trains on the real Visual Genome at ultralytics' usual size and recipe, for a GPU.
DETECTOR_PROFILES = {
    "demo": DetectorSettings(epochs=16, imgsz=128, batch=8, validate_each_epoch=False, optimizer="AdamW",
                             lr0=0.005, warmup_epochs=0.5, mosaic=0.0, close_mosaic=0),
    "paper": DetectorSettings(epochs=100, imgsz=640, batch=32, workers=4, patience=20, cache=False),
}
DETECTOR_VOCABULARY = {"demo": 40, "paper": 150}


@dataclass
class EpochRecord:
    epoch: int
    seconds: float
    losses: dict[str, float]
    metrics: dict[str, float]


@dataclass
class TrainedDetector:
    """What training produced: weights, class names, validation metrics of the best weights, history."""

    weights: Path
    names: list[str]
    metrics: dict[str, float]              # precision, recall, mAP50, mAP50-95 of the val split
    per_class_ap50: dict[str, float]
    per_class_ap: dict[str, float]         # AP50-95
    history: list[EpochRecord] = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"
    source: str = ""


_METRIC_NAMES = {"metrics/precision(B)": "precision", "metrics/recall(B)": "recall",
                 "metrics/mAP50(B)": "mAP50", "metrics/mAP50-95(B)": "mAP50-95"}


def _clean_metrics(raw: dict) -> dict[str, float]:
    return {_METRIC_NAMES.get(k, k): float(v) for k, v in raw.items()
            if k in _METRIC_NAMES and v is not None and math.isfinite(float(v))}


def _box_metrics(det_metrics, names: list[str]) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """Summary, per-class AP50 and per-class AP50-95 of an ultralytics DetMetrics object."""
    summary = _clean_metrics(det_metrics.results_dict)
    ap50, ap = {}, {}
    box = det_metrics.box
    for position, class_index in enumerate(np.asarray(getattr(det_metrics, "ap_class_index", []), dtype=int)):
        name = names[int(class_index)]
        ap50[name] = float(box.ap50[position])
        ap[name] = float(box.ap[position])
    return summary, ap50, ap


def train_detector(data_yaml: Path, settings: DetectorSettings, out_dir: Path, log: Log = no_log) -> TrainedDetector:
    """Train a YOLO detector from `settings.model_yaml` (random init, nothing downloaded) on a YOLO dataset.

    Ultralytics writes its run under `out_dir/train` (replaced on every call); progress goes to `log`
    once per epoch. Returns the best weights by validation fitness and their validation metrics.
    """
    data_yaml = Path(data_yaml).resolve()
    out_dir = Path(out_dir).resolve()
    prepare_ultralytics()
    from ultralytics import YOLO

    names = [str(v) for _, v in sorted(yaml.safe_load(data_yaml.read_text(encoding="utf-8"))["names"].items())]
    run_dir = out_dir / "train"
    shutil.rmtree(run_dir, ignore_errors=True)  # exist_ok below would otherwise mix two runs' files
    model = YOLO(settings.model_yaml, task="detect")
    history: list[EpochRecord] = []

    trained_epochs: list[int] = []

    def on_train_epoch_end(trainer) -> None:
        trained_epochs.append(int(trainer.epoch))

    def on_fit_epoch_end(trainer) -> None:
        if not trained_epochs or int(trainer.epoch) != trained_epochs[-1]:
            # ultralytics calls this once more, one epoch on, after validating the best weights
            # (final_eval); those metrics are returned by model.train() and reported from there.
            return
        losses = {k: float(v) for k, v in trainer.label_loss_items(trainer.tloss, prefix="train").items()} \
            if trainer.tloss is not None else {}
        epoch = int(trainer.epoch) + 1
        # Without per-epoch validation ultralytics keeps zeros in trainer.metrics until the last epoch.
        validated = bool(trainer.args.val) or epoch >= int(trainer.epochs)
        record = EpochRecord(epoch=epoch, seconds=float(trainer.epoch_time or 0.0), losses=losses,
                             metrics=_clean_metrics(trainer.metrics or {}) if validated else {})
        history.append(record)
        shown = ", ".join(f"{k.split('/')[-1]} {v:.3f}" for k, v in {**losses, **record.metrics}.items())
        log(f"detector epoch {record.epoch}/{trainer.epochs} in {record.seconds:.1f} s: {shown}")

    model.add_callback("on_train_epoch_end", on_train_epoch_end)
    model.add_callback("on_fit_epoch_end", on_fit_epoch_end)
    log(f"training {settings.model_yaml} from random init on {data_yaml} ({len(names)} classes): "
        f"{settings.epochs} epochs at {settings.imgsz} px, batch {settings.batch}, device {settings.device}")
    amp = settings.amp
    if amp:
        from ultralytics.utils import WEIGHTS_DIR

        if not (Path(WEIGHTS_DIR) / "yolo26n.pt").is_file():
            log(f"AMP asked for, but ultralytics checks AMP with {Path(WEIGHTS_DIR) / 'yolo26n.pt'}, which is "
                f"absent and would be downloaded: training in full precision instead")
            amp = False
    with torch_process_state():
        began = time.perf_counter()
        det_metrics = model.train(
            data=str(data_yaml), epochs=settings.epochs, imgsz=settings.imgsz, batch=settings.batch,
            seed=settings.seed, deterministic=True, workers=settings.workers, device=settings.device,
            project=str(out_dir), name="train", exist_ok=True, pretrained=False, plots=False,
            val=settings.validate_each_epoch, patience=settings.patience, cache=settings.cache and "ram",
            amp=amp, mosaic=settings.mosaic, close_mosaic=settings.close_mosaic, optimizer=settings.optimizer,
            lr0=settings.lr0, warmup_epochs=settings.warmup_epochs, verbose=False,
        )
    seconds = time.perf_counter() - began
    trainer = model.trainer
    weights = Path(trainer.best if Path(trainer.best).is_file() else trainer.last)
    summary, ap50, ap = _box_metrics(det_metrics, names) if det_metrics is not None else ({}, {}, {})
    log(f"detector trained in {seconds:.0f} s ({len(history)} epochs); best weights {weights}; val "
        + ", ".join(f"{k} {v:.3f}" for k, v in summary.items()))
    return TrainedDetector(weights=weights, names=names, metrics=summary, per_class_ap50=ap50, per_class_ap=ap,
                           history=history, seconds=seconds, device=str(trainer.device),
                           source=f"trained from {settings.model_yaml}, random init")


def settings_dict(settings: DetectorSettings) -> dict:
    return dataclasses.asdict(settings)
