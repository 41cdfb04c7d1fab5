"""The YOLO object detector of dataset A (ultralytics, offline), in five modules.

`ultralytics_offline` keeps ultralytics off the network and out of the process' state (switches,
font, settings, torch state put back); `yolo_dataset` writes the Visual Genome boxes of the most
frequent object names (`vocabulary`) in the YOLO dataset layout; `training` trains a detector from
a model yaml shipped in the ultralytics wheel (`DetectorSettings`, `DETECTOR_PROFILES`,
`train_detector`); `pretrained` holds the weights shipped for the demo and `pretrain_detector`,
which makes them; `detect` loads a detector from local weights and runs it over images. The
library never imports dagster; `emo_pipeline.defs.detection` wraps it in assets.
"""

from __future__ import annotations

from collections.abc import Callable

# The progress callback every step of the package takes (`log=context.log.info` in the assets).
Log = Callable[[str], None]


def no_log(_: str) -> None:
    pass
