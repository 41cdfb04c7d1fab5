"""Where the product keeps its state: one home folder, `EMO_HOME` (default `.emo_home/` in the checkout).

    $EMO_HOME/
      dagster/      DAGSTER_HOME: the instance (run history, schedules) with the project's dagster.yaml
      warehouse/    Parquet tables (source of truth) and catalog.duckdb (views over them); `EMO_TABLES`
                    moves the tables to another folder or an object-store URL (`s3://bucket/emo/tables`)
      mlflow/       mlflow.db (tracking store) and artifacts/ (or `EMO_MLFLOW_ARTIFACTS`, an object store)
      synthetic/    the embedded synthetic world (Emotion6/, EmotionROI/, VG/)
      word_vectors/ GloVe as gensim KeyedVectors (memory-mapped)
      ultralytics/  YOLO_CONFIG_DIR: its settings and font, kept out of the user's home
      logs/         the full Dagster event log of each `emo-pipeline demo`
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# The checkout (or site-packages) folder that holds the `emo_pipeline` package.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def dagster(self) -> Path:
        return self.root / "dagster"

    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse"

    @property
    def tables(self) -> str | None:
        """Where the Parquet tables live when not in `warehouse/tables`: `EMO_TABLES`, a folder or fsspec URL."""
        return os.environ.get("EMO_TABLES") or None

    @property
    def models(self) -> Path:
        """Trained models with their cards (see `emo_pipeline.storage.model_store`)."""
        return self.root / "models"

    @property
    def mlflow(self) -> Path:
        return self.root / "mlflow"

    @property
    def synthetic(self) -> Path:
        return self.root / "synthetic"

    @property
    def word_vectors(self) -> Path:
        """The memory-mapped GloVe KeyedVectors, built on first use."""
        return self.root / "word_vectors"

    @property
    def ultralytics(self) -> Path:
        return self.root / "ultralytics"

    @property
    def evaluation(self) -> Path:
        """Tables of `emo-pipeline evaluate`: the test metrics of each model on each split seed."""
        return self.root / "evaluation"

    @property
    def logs(self) -> Path:
        """One file per `emo-pipeline demo`: everything its runs logged (the terminal shows a line per step)."""
        return self.root / "logs"


def emo_home() -> Home:
    """The home folder from `EMO_HOME`, else `.emo_home/` beside the package."""
    configured = os.environ.get("EMO_HOME")
    root = Path(configured).expanduser() if configured else PROJECT_ROOT / ".emo_home"
    return Home(root.resolve())
