"""Torch models of the model store registered in MLflow: the signature comes from the model in memory."""

from pathlib import Path

import numpy as np
import pytest
import torch

from emo_pipeline.models import build_model
from emo_pipeline.storage import mlflow_models
from emo_pipeline.storage.model_store import ModelCard, save_torch_model
from emo_pipeline.storage.tracking import mlflow_run


@pytest.mark.parametrize("in_memory", [True, False])
def test_a_model_given_in_memory_is_read_from_disk_once_and_gets_the_same_signature(
        in_memory: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Logging reads the store's weights to check the input example against the logged model; without
    the model in memory MLflow reads them once more, to infer the signature. Both give one signature."""
    torch.manual_seed(0)
    model = build_model("small_cnn", pretrained="none")[0].eval()
    store = tmp_path / "models"
    save_torch_model(store, ModelCard(name="tiny", kind="image", architecture="small_cnn", size=32), model)
    reads = []
    read = mlflow_models.torch_model_from_files
    monkeypatch.setattr(mlflow_models, "torch_model_from_files", lambda *a, **k: reads.append(a) or read(*a, **k))
    example = np.zeros((2, 3, 32, 32), np.float32)
    with mlflow_run(tmp_path / "mlflow", "test", "tiny", {}):
        info = mlflow_models.log_stored_torch_model(store, "tiny", example, "tiny_model",
                                                    model=model if in_memory else None)
    assert len(reads) == (1 if in_memory else 2)
    (inputs,), (outputs,) = info.signature.inputs.inputs, info.signature.outputs.inputs
    assert (inputs.type, inputs.shape) == (np.dtype(np.float32), (-1, 3, 32, 32))
    assert (outputs.type, outputs.shape) == (np.dtype(np.float32), (-1, 7))


def test_a_mirror_averaged_cards_registered_model_predicts_as_predict_does(tmp_path: Path):
    """`predict` averages a `flip_tta` card's model over each image and its mirror: so does its registered
    version, fed the same normalised images."""
    import mlflow.pyfunc

    from emo_pipeline.storage.tracking import tracking_store

    torch.manual_seed(1)
    model = build_model("small_cnn", pretrained="none")[0].eval()
    store = tmp_path / "models"
    save_torch_model(store, ModelCard(name="tiny", kind="image", architecture="small_cnn", size=32, flip_tta=True),
                     model)
    images = np.random.default_rng(0).normal(size=(3, 3, 32, 32)).astype(np.float32)
    with mlflow_run(tmp_path / "mlflow", "test", "tiny", {}):
        info = mlflow_models.log_stored_torch_model(store, "tiny", images[:2], "tiny_model", model=model)
    with tracking_store(tmp_path / "mlflow"):
        registered = mlflow.pyfunc.load_model(info.model_uri)
    with torch.inference_mode():
        inputs = torch.from_numpy(images)
        plain, mirrored = model(inputs).numpy(), model(inputs.flip(-1)).numpy()
    assert np.abs(plain - mirrored).max() > 1e-4
    np.testing.assert_allclose(registered.predict(images), (plain + mirrored) / 2, atol=1e-6)


def test_only_image_and_patch_cards_may_ask_for_mirror_averaging():
    with pytest.raises(ValueError, match="flip_tta is for kinds image, patches, not 'features'"):
        ModelCard(name="ridge", kind="features", architecture="kernel_ridge", size=64, flip_tta=True)
