"""Model-store models registered in MLflow without a second copy of their weights.

A torch model's registered version is an MLflow `pyfunc` model whose artifacts are the model card and
the state dict of the model store (`<name>.json`, `<name>.pt`): the files `emo-pipeline predict`
reads. Once logged, the store's file is replaced by a hard link to MLflow's copy, so the weights are
on disk once and both stay usable if either folder is deleted. Where no link can be made (artifacts in
an object store, or on another file system) each side keeps its own file.

    model = mlflow.pyfunc.load_model("models:/small_cnn_model/1")
    model.predict(images)                 # (N, 3, S, S) float32 -> (N, 7)
    model.unwrap_python_model().model     # the torch module it runs
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import mlflow
import mlflow.pyfunc
import numpy as np
import torch

from emo_pipeline.core.atomic import replace_with_link
from emo_pipeline.models import MapInput, MirrorAveraged
from emo_pipeline.storage.model_store import ModelCard, card_path, load_card, torch_model_from_files, weights_path
from emo_pipeline.storage.tracking import tag_model_version


class StoredTorchModel(mlflow.pyfunc.PythonModel):
    """A torch model of the model store, rebuilt from its card and state dict (loaded weights-only)."""

    def __getstate__(self) -> dict:
        # MLflow pickles this object after loading it once (signature inference): keep the weights out.
        return {k: v for k, v in self.__dict__.items() if k not in ("model", "card")}

    def load_context(self, context) -> None:
        model, self.card = torch_model_from_files(Path(context.artifacts["card"]), Path(context.artifacts["weights"]))
        self.model = serving_module(model, self.card)

    def predict(self, context, model_input, params=None):
        return run_module(self.model, model_input)


def serving_module(model: torch.nn.Module, card: ModelCard) -> torch.nn.Module:
    """What the registered model runs: an ESM-ResNet behind one (N, 4, S, S) input (normalised RGB, then
    the FCN's map resized to S); a model whose card asks for it averaged over each image and its mirror,
    as `predict` runs it; any other model as it is."""
    if card.kind == "esm_resnet":
        return MapInput(model).eval()
    return MirrorAveraged(model).eval() if card.flip_tta else model


def run_module(module: torch.nn.Module, model_input) -> np.ndarray:
    with torch.inference_mode():
        return module(torch.as_tensor(np.asarray(model_input))).numpy()


def local_path(uri: str) -> Path | None:
    """The local path of a `file:` artifact URI; None for an object store."""
    parsed = urlparse(uri)
    return Path(url2pathname(parsed.path)) if parsed.scheme == "file" else None


def link_to_artifact(stored: Path, artifact_uri: str) -> bool:
    """Make the model store's `stored` file the same file as MLflow's logged copy at `artifact_uri`."""
    artifact = local_path(artifact_uri)
    return artifact is not None and artifact.is_file() and replace_with_link(stored, artifact)


def log_stored_torch_model(models_dir: Path, name: str, input_example: np.ndarray, registered_model_name: str,
                           version_tags: Mapping[str, str] | None = None, *, model: torch.nn.Module | None = None):
    """Log model `name` of the store into the active run as a new version of `registered_model_name`,
    tag it (Dagster run, data fingerprint) and hard-link the store's weights to the logged copy.

    The requirements are given rather than inferred: inference starts a subprocess that imports the
    model's modules and costs about ten seconds per model. `model`, the same weights in memory, gives
    the signature: without it MLflow loads the logged files once to infer it, on top of the load that
    checks the input example against the logged model. Returns MLflow's ModelInfo.
    """
    from mlflow.models import infer_signature

    card, weights = card_path(models_dir, name), weights_path(models_dir, name)
    signature = None
    if model is not None:
        outputs = run_module(serving_module(model.eval(), load_card(models_dir, name)), input_example)
        signature = infer_signature(np.asarray(input_example), outputs)
    info = mlflow.pyfunc.log_model(
        name="model", python_model=StoredTorchModel(), artifacts={"card": str(card), "weights": str(weights)},
        input_example=input_example, signature=signature, registered_model_name=registered_model_name,
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "numpy"])
    tag_model_version(registered_model_name, info.registered_model_version, version_tags)
    location = mlflow.get_logged_model(info.model_id).artifact_location
    link_to_artifact(weights, f"{location.rstrip('/')}/artifacts/{weights.name}")
    return info


def link_sklearn_to_logged(stored: Path, info) -> bool:
    """Hard-link the store's skops file to the one MLflow's scikit-learn flavour logged (`model.skops`)."""
    location = mlflow.get_logged_model(info.model_id).artifact_location
    return link_to_artifact(stored, f"{location.rstrip('/')}/model.skops")
