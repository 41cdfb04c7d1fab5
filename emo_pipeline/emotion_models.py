"""Training an image -> emotion model on Emotion6-format labels with the shared loop.

Distribution models end in a softmax and learn the 7-way distribution (MSE as in the paper, or KL);
classifiers return logits and learn the dominant emotion with cross-entropy. Model selection uses the
validation split only; the test split is predicted once, at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from emo_pipeline.emotions import EMOTIONS, PROB_COLUMNS
from emo_pipeline.image_data import ImageTargets, augment_batch
from emo_pipeline.models import WeightsInfo, build_model
from emo_pipeline.training import TrainConfig, TrainResult, predict, seed_everything, train

LOSSES = ("mse", "kl", "ce")


@dataclass(frozen=True)
class EmotionModelConfig:
    model: str
    size: int
    loss: str = "mse"
    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-4
    patience: int = 5
    seed: int = 0
    augment: bool = True
    pretrained: str = "auto"
    weights_path: str | None = None
    workers: int = 2


@dataclass
class FittedEmotionModel:
    model: nn.Module
    weights: WeightsInfo
    result: TrainResult
    predictions: pd.DataFrame  # image_key, split, prob_* (predicted distribution; softmax of logits for classifiers)


def kl_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over images of KL(target || predicted), clipped like the evaluation metric."""
    eps = 1e-7
    target = target.clamp_min(eps)
    return (target * (target.log() - predicted.clamp_min(eps).log())).sum(dim=1).mean()


def loss_function(loss: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if loss == "mse":
        return nn.functional.mse_loss
    if loss == "kl":
        return kl_loss
    if loss == "ce":
        return nn.functional.cross_entropy
    raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")


def _targets(labels: pd.DataFrame, loss: str) -> torch.Tensor:
    if loss == "ce":
        return torch.as_tensor(labels["dominant_emotion"].map(EMOTIONS.index).to_numpy(), dtype=torch.long)
    return torch.as_tensor(labels[list(PROB_COLUMNS)].to_numpy(dtype=np.float32))


def fit_emotion_model(
    labels: pd.DataFrame,
    split: pd.DataFrame,
    config: EmotionModelConfig,
    checkpoint_dir: Path,
    *,
    device: torch.device | str = "cpu",
    log: Callable[[str], None] = print,
) -> FittedEmotionModel:
    """Train on the train split, select on val, predict every image; `labels` as read by emotion6.py."""
    if config.loss not in LOSSES:
        raise ValueError(f"unknown loss {config.loss!r}; choose one of {', '.join(LOSSES)}")
    table = labels.merge(split, on="image_key", validate="one_to_one")
    parts = {name: table[table["split"] == name].reset_index(drop=True) for name in ("train", "val", "test")}
    log(f"{config.model}: decoding {len(table)} images at {config.size} px")
    data = {name: ImageTargets(part["image_path"].tolist(), _targets(part, config.loss), config.size,
                               workers=config.workers)
            for name, part in parts.items()}

    seed_everything(config.seed)
    model, weights = build_model(config.model, pretrained=config.pretrained, weights_path=config.weights_path)
    log(f"{config.model}: {weights.source}")
    result = train(
        model, data["train"], data["val"], loss_function(config.loss),
        TrainConfig(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr, patience=config.patience,
                    seed=config.seed),
        checkpoint_dir, device=device, log=log, augment=augment_batch if config.augment else None,
    )

    frames = []
    for name, part in parts.items():
        outputs = predict(model, data[name], device=device)
        probs = torch.softmax(outputs, dim=1) if config.loss == "ce" else outputs
        frame = pd.DataFrame(probs.numpy().astype(np.float64), columns=list(PROB_COLUMNS))
        frame.insert(0, "split", name)
        frame.insert(0, "image_key", part["image_key"].to_numpy())
        frames.append(frame)
    predictions = pd.concat(frames, ignore_index=True).astype({"image_key": "string", "split": "string"})
    return FittedEmotionModel(model=model, weights=weights, result=result, predictions=predictions)
