"""The trained-model publisher: what every training asset records around the library's fit.

A training asset reads its inputs, calls the library's `fit_*`, and hands the result to a
`TrainingRun`, which

- runs the fit inside an MLflow run tagged with the Dagster run and asset, its settings, profile and
  data fingerprint logged as parameters;
- logs the per-epoch losses and the metrics, and registers the model under the asset's name (one
  registered model per model asset, one version per materialization, tagged with its lineage);
- writes the weights and the model card to the model store (what `emo-pipeline predict` reads),
  registers those same files in MLflow with one copy on disk, and drops the resume checkpoints of a
  finished run;
- builds the metadata every model asset shows: settings, profile, where the weights came from, the
  MLflow run and model version, the metrics, the training curve, and a data version from the data
  fingerprint, so the UI shows a model as stale when its data changes.

    with TrainingRun(context, "small_cnn_model", settings, fingerprint, models=models, mlflow=mlflow) as run:
        fitted = fit_emotion_model(labels, split, settings, run.checkpoints, ...)
        run.log_fit(fitted.result, fitted.weights)
        run.log_metrics(scores)
        run.publish_torch(card, fitted.model, example)
    yield dg.MaterializeResult(asset_key=..., metadata=run.metadata(extra=...), data_version=run.data_version)
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import dagster as dg

from emo_pipeline.core import metrics as distribution_metrics
from emo_pipeline.core import profiles
from emo_pipeline.core.plots import training_curve_png
from emo_pipeline.defs.shared.metadata import png_metadata
from emo_pipeline.defs.shared.resources import MLflowResource, ModelStoreResource
from emo_pipeline.storage.model_store import ModelCard, save_sklearn_model, save_torch_model
from emo_pipeline.storage.tracking import log_sklearn_model

# The metrics an Emotion6 distribution model's asset shows: per split, beside the train mean's.
DISTRIBUTION_METADATA = [f"{split}_{name}" for split in ("val", "test", "val_train_mean", "test_train_mean")
                         for name in distribution_metrics.REPORTED]


def code_version(*modules: ModuleType, with_profile: bool = True) -> str:
    """A model asset's code version: a digest of the library modules that train it and, `with_profile`,
    of the run profiles' settings (`core.profiles`) and the active profile (`EMO_PROFILE`), so the UI
    and `emo-pipeline demo` see a model as out of date when its training code or its settings change."""
    digest = hashlib.sha256()
    for module in (*modules, profiles) if with_profile else modules:
        digest.update(inspect.getsource(module).encode())
    if with_profile:
        digest.update(profiles.active_profile().encode())
    return digest.hexdigest()[:12]


def _as_param(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _flat(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Settings as MLflow parameters: nested settings (the training loop's) inlined by name."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        out.update(_flat(value) if isinstance(value, Mapping) else {key: _as_param(value)})
    return out


class TrainingRun:
    """One model's training as every training asset records it (see the module docstring)."""

    def __init__(self, context: dg.AssetExecutionContext, name: str, settings: Any, data_fingerprint: str, *,
                 models: ModelStoreResource, mlflow: MLflowResource, params: Mapping[str, Any] | None = None,
                 run_name: str | None = None, checkpoint_keys: Sequence[str] = ()):
        self.context = context
        self.name = name                      # the model asset's key and its registered model's name
        self.run_name = run_name or name
        self.settings = settings
        self.data_fingerprint = data_fingerprint
        self.models = models
        self.mlflow = mlflow
        self.profile = models.active_profile()
        self.params = dict(params or {})
        self.checkpoints: Path | None = (
            models.checkpoints(self.run_name, settings, data_fingerprint, *checkpoint_keys)
            if dataclasses.is_dataclass(settings) else None)
        self.metrics: dict[str, float] = {}
        self.history: list = []
        self.result = None
        self.weights_info = None
        self.model_info = None
        self.saved: Path | None = None
        self.run_id: str | None = None
        self._stack = contextlib.ExitStack()

    # --- inside the MLflow run ---------------------------------------------------------------------
    def __enter__(self) -> TrainingRun:
        import mlflow as mlflow_api

        run = self._stack.enter_context(self.mlflow.start_run(self.context, run_name=self.run_name))
        self.run_id = run.info.run_id
        settings = dataclasses.asdict(self.settings) if dataclasses.is_dataclass(self.settings) else self.settings
        mlflow_api.log_params({**_flat(settings), **self.params,
                               "profile": self.profile, "data_fingerprint": self.data_fingerprint})
        where = f", checkpoints {self.checkpoints}" if self.checkpoints else ""
        self.context.log.info(f"{self.run_name}: profile {self.profile}, {self.settings}{where}")
        return self

    def __exit__(self, *exc_info) -> bool:
        return self._stack.__exit__(*exc_info)

    def log_params(self, params: Mapping[str, Any]) -> None:
        import mlflow as mlflow_api

        mlflow_api.log_params({k: _as_param(v) for k, v in params.items()})

    def log_fit(self, result, weights=None) -> None:
        """The loop's per-epoch losses (and where the initial weights came from)."""
        import mlflow as mlflow_api

        self.result = result
        self.history = list(result.history)
        for record in self.history:
            mlflow_api.log_metrics({"train_loss": record.train_loss, "val_loss": record.val_loss}, step=record.epoch)
        self.log_params({"training_precision": result.precision})
        if weights is not None:
            self.weights_info = weights
            self.log_params({"weights_source": weights.source, "pretrained_loaded": weights.pretrained})

    def log_distribution_fit(self, fitted, labels) -> None:
        """An Emotion6 distribution model's fit (`fitted` has result, weights, clip and predictions): its
        losses, weights, prediction floor and every metric per split beside the train mean's."""
        self.log_fit(fitted.result, fitted.weights)
        self.log_params({"prediction_floor": fitted.clip})
        scores = distribution_metrics.split_metrics(fitted.predictions, labels)
        self.log_metrics(distribution_metrics.flat_scores(scores, tuple(distribution_metrics.PER_IMAGE)))

    def log_metrics(self, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        """Metrics logged to MLflow and kept for the asset's metadata (non-finite ones only in metadata)."""
        import mlflow as mlflow_api

        values = {k: float(v) for k, v in metrics.items()}
        self.metrics.update(values)
        mlflow_api.log_metrics({k: v for k, v in values.items() if math.isfinite(v)}, step=step)

    def version_tags(self) -> dict[str, str]:
        return self.mlflow.version_tags(self.context, self.name, self.data_fingerprint, self.profile)

    def publish_torch(self, card: ModelCard, model, input_example) -> Path:
        """Weights and card into the model store, the same files registered in MLflow as a new version
        of `name` (one copy on disk, see emo_pipeline.storage.mlflow_models); checkpoints dropped."""
        from emo_pipeline.storage.mlflow_models import log_stored_torch_model

        model = model.cpu().eval()
        self.saved = save_torch_model(self.models.directory(), card, model)
        self.model_info = log_stored_torch_model(self.models.directory(), card.name, input_example,
                                                 registered_model_name=self.name, version_tags=self.version_tags(),
                                                 model=model)
        self.drop_checkpoints()
        return self.saved

    def publish_sklearn(self, card: ModelCard | None, model, input_example) -> Path | None:
        """The scikit-learn model registered in MLflow (skops) as a new version of `name`; with a card,
        also into the model store, as a link to MLflow's file."""
        from emo_pipeline.storage.mlflow_models import link_sklearn_to_logged

        self.model_info = log_sklearn_model(model, "model", input_example, registered_model_name=self.name,
                                            version_tags=self.version_tags())
        if card is not None:
            self.saved = save_sklearn_model(self.models.directory(), card, model)
            link_sklearn_to_logged(self.saved, self.model_info)
        return self.saved

    def drop_checkpoints(self) -> None:
        """Checkpoints only serve to resume an interrupted run; with optimizer state they are several
        times the model's size (2 GB for VGG19-BN), so a finished run drops them. A rerun with the same
        seed retrains to the same weights."""
        if self.checkpoints is not None:
            shutil.rmtree(self.checkpoints.parent, ignore_errors=True)

    @property
    def data_version(self) -> dg.DataVersion:
        return dg.DataVersion(self.data_fingerprint)

    def metadata(self, metrics: Sequence[str] | None = None, digits: int | None = None,
                 extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The standard metadata of a model asset; `metrics` picks and orders the metric keys shown
        (default: all), `digits` rounds them."""
        shown = self.metrics if metrics is None else {k: self.metrics[k] for k in metrics if k in self.metrics}
        out: dict[str, Any] = {
            "profile": self.profile,
            "data_fingerprint": self.data_fingerprint,
            "mlflow_run_id": self.run_id,
            **{k: (round(v, digits) if digits is not None else v) for k, v in shown.items()},
        }
        if dataclasses.is_dataclass(self.settings):
            out["settings"] = dg.MetadataValue.json(dataclasses.asdict(self.settings))
        if self.model_info is not None:
            out["mlflow_model"] = f"{self.name} version {self.model_info.registered_model_version}"
        if self.saved is not None:
            out["weights"] = dg.MetadataValue.path(str(self.saved))
        if self.weights_info is not None:
            out.update({"pretrained": self.weights_info.pretrained, "weights_source": self.weights_info.source})
        if self.result is not None:
            out.update({"best_epoch": self.result.best_epoch, "epochs_run": self.result.epochs_run,
                        "resumed_from_epoch": self.result.resumed_from, "training_precision": self.result.precision})
        if self.history:
            out["training_curve"] = png_metadata(training_curve_png(self.history, self.run_name), "training curve")
        out.update(extra or {})
        return out
