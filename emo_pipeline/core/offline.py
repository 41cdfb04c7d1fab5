"""Switches that keep dagster, mlflow and ultralytics from reaching for the network.

They must be in the environment before those libraries are imported, in every process (Dagster step
processes included), so the package applies them on import. Values a user has set are kept.
"""

from __future__ import annotations

import os
from pathlib import Path

OFFLINE_ENV = {
    "DAGSTER_DISABLE_TELEMETRY": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "YOLO_OFFLINE": "1",
    "YOLO_AUTOINSTALL": "0",
    "YOLO_VERBOSE": "False",
    "DO_NOT_TRACK": "1",
}


def apply_offline_switches(ultralytics_dir: Path) -> None:
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("YOLO_CONFIG_DIR", str(ultralytics_dir))

