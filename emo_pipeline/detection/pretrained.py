"""The detector weights shipped with the package: a nano YOLO pretrained on a synthetic world of its own.

The paper "used the pretrained YOLO" (§3.4) and describes no training of it. Offline there is no COCO
model to start from, and a nano YOLO trained from random init on the demo world's 300 Visual Genome pictures
needs 4 to 9 minutes of a CPU core to find most planted objects, more than the demo's whole budget.
So the demo, too, runs pretrained weights, here of this project's own making:
`emo-pipeline detector-pretrain` writes the synthetic world at scale "detector-pretraining" (the
demo's pictures, 3,000 of them in Visual Genome) with seed 1, which neither the demo (seed 0) nor
the tests' worlds use, and trains `yolo11n.yaml` from random init on its Visual Genome boxes, every object
kind a class. The weights and a record of how they were made (`<weights>.json`: seed, settings,
validation metrics, seconds, versions) are in `weights/`; `SHIPPED_SHA256` pins the file, so that
new weights change the detector asset's code version and a changed file is refused.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

from emo_pipeline.core.atomic import atomic_output, write_text_atomic
from emo_pipeline.core.digests import file_sha256
from emo_pipeline.detection import Log, no_log
from emo_pipeline.detection.training import DETECTOR_PROFILES, DetectorSettings, settings_dict, train_detector

SHIPPED_WEIGHTS = Path(__file__).with_name("weights") / "yolo11n_synthetic.pt"
SHIPPED_SHA256 = "ebeba5cffdb3a0531e48163970db920f5eae8d05dd3c851bcb51def00e854731"
PRETRAINING_SEED = 1
PRETRAINING_SCALE = "detector-pretraining"
# The demo's recipe (AdamW at 5e-3, batch 8, no mosaic) at the pictures' own 160 px, for 16 epochs
# over ten times the pictures. Chosen on the validation mAP50 of the pretraining world's own held-out
# pictures (on the grammar before its retuning): .727, against .708 for 24 epochs at 128 px and .543 for
# 10 epochs at 128 px. The shipped weights, on the retuned grammar: .721.
PRETRAINING_SETTINGS = dataclasses.replace(DETECTOR_PROFILES["demo"], epochs=16, imgsz=160)
PRETRAINING_VAL_SHARE = 0.05
# Which profiles start from the shipped weights instead of training (`pretrained: false` in the
# object_detector config trains anyway). The paper profile takes the user's weights or trains.
PROFILE_WEIGHTS: dict[str, Path | None] = {"demo": SHIPPED_WEIGHTS, "paper": None}


class ShippedWeightsChanged(RuntimeError):
    """The weights file does not match the sha256 this module pins."""


def provenance_path(weights: Path) -> Path:
    return weights.with_suffix(".json")


def read_provenance(weights: Path) -> dict:
    """The record `pretrain_detector` wrote beside `weights`."""
    return json.loads(provenance_path(weights).read_text(encoding="utf-8"))


def verified_shipped_weights() -> Path:
    """The shipped weights, after checking their sha256 against `SHIPPED_SHA256`."""
    found = file_sha256(SHIPPED_WEIGHTS) if SHIPPED_WEIGHTS.is_file() else "no file"
    if found != SHIPPED_SHA256:
        raise ShippedWeightsChanged(
            f"{SHIPPED_WEIGHTS}: sha256 {found}, not the {SHIPPED_SHA256} that {__name__}.SHIPPED_SHA256 pins; "
            f"restore the file (git checkout), or make new weights with `emo-pipeline detector-pretrain` "
            f"and pin their sha256")
    return SHIPPED_WEIGHTS


def pretrain_detector(out: Path, seed: int = PRETRAINING_SEED, settings: DetectorSettings = PRETRAINING_SETTINGS,
                      work: Path | None = None, log: Log = no_log) -> dict:
    """Write a synthetic world, train a detector on its Visual Genome, and write the weights to `out`
    with their record beside them (`provenance_path(out)`); returns the record.

    `work` keeps the world, the YOLO dataset and ultralytics' run folder (default: a temporary folder,
    removed at the end).
    """
    from emo_pipeline.detection.yolo_dataset import vocabulary, write_yolo_dataset
    from emo_pipeline.sources.visual_genome.reader import read_visual_genome
    from emo_pipeline.synthetic import write_world
    from emo_pipeline.synthetic.grammar import OBJECTS

    began = time.perf_counter()
    own_work = work is None
    work = Path(tempfile.mkdtemp(prefix="detector-pretrain-")) if work is None else Path(work)
    try:
        world = write_world(work / "world", seed=seed, scale=PRETRAINING_SCALE, progress=log)
        data = read_visual_genome(world.visual_genome)
        names = vocabulary(data.objects, len(OBJECTS))
        dataset = write_yolo_dataset(data.images, data.objects, names, world.visual_genome, work / "dataset",
                                     val_share=PRETRAINING_VAL_SHARE, seed=settings.seed, log=log)
        log(f"training {settings.model_yaml} from random init for {settings.epochs} epochs on "
            f"{dataset.images['train']:,} pictures ({dataset.boxes['train']:,} boxes, {len(names)} classes)")
        trained = train_detector(dataset.data_yaml, settings, work / "runs", log=log)
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(out) as tmp:
            shutil.copyfile(trained.weights, tmp)
    finally:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)
    import torch
    import ultralytics

    record = {
        "weights": out.name,
        "sha256": file_sha256(out),
        "world": {"seed": seed, "scale": PRETRAINING_SCALE, "visual_genome_images": world.vg_images,
                  "visual_genome_objects": world.vg_objects},
        "classes": names,
        "dataset": {"images": dataset.images, "boxes": dataset.boxes, "val_share": PRETRAINING_VAL_SHARE},
        "settings": settings_dict(settings),
        "val_metrics": {k: round(v, 4) for k, v in trained.metrics.items()},
        "training_seconds": round(trained.seconds, 1),
        "seconds": round(time.perf_counter() - began, 1),
        "versions": {"ultralytics": ultralytics.__version__, "torch": torch.__version__,
                     "python": platform.python_version()},
        "made_with": f"emo-pipeline detector-pretrain --out {out.name} --seed {seed} --epochs {settings.epochs}",
    }
    write_text_atomic(json.dumps(record, indent=2) + "\n", provenance_path(out))
    return record
