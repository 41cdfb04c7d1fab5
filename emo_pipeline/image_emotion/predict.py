"""The emotion distribution of any image file, from a materialized model and its card.

Works from `$EMO_HOME/models/` alone (see `model_store`): torch image models, the ESM-enhanced ResNet
(its FCN predicts the map first), the patch network (its encoders are part of the module), the feature
models (features computed as for training) and the ensemble (the average of its members). Images go
through the batched loader of `inference`, so the same code serves a user's three photos and the
108,077 Visual Genome images of dataset B. A file that cannot be read is reported and skipped; the
others are still predicted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from emo_pipeline.core.emotions import EMOTIONS, PROB_COLUMNS
from emo_pipeline.core.metrics import clip_distribution, sharpen
from emo_pipeline.image_emotion.inference import (
    forward_batches,
    image_loader,
    prepare,
    unreadable_reason,
)
from emo_pipeline.storage.model_store import (
    ModelCard,
    available_models,
    load_card,
    load_sklearn_model,
    load_torch_model,
)
from emo_pipeline.storage.warehouse import Warehouse

DISTRIBUTION_KINDS = ("image", "esm_resnet", "patches", "features", "ensemble")
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class RunOptions:
    batch_size: int = 64
    workers: int = 2
    device: str = "cpu"


@dataclass
class Prediction:
    model: str
    paths: list[str]                  # the images that were read, in input order
    distributions: np.ndarray         # (len(paths), 7), rows sum to 1
    failed: dict[str, str] = field(default_factory=dict)  # path -> why it could not be read

    def frame(self) -> pd.DataFrame:
        table = pd.DataFrame(self.distributions, columns=list(PROB_COLUMNS))
        table.insert(0, "dominant_emotion", [EMOTIONS[i] for i in self.distributions.argmax(axis=1)]
                     if len(self.paths) else [])
        table.insert(0, "image", self.paths)
        return table

    def to_json(self) -> list[dict]:
        return [{"image": path, "model": self.model, "dominant_emotion": EMOTIONS[int(row.argmax())],
                 "distribution": {e: round(float(p), 6) for e, p in zip(EMOTIONS, row)}}
                for path, row in zip(self.paths, self.distributions)]


def _torch_outputs(card: ModelCard, models_dir: Path, paths: list[str], options: RunOptions,
                   progress: Progress | None) -> tuple[np.ndarray, np.ndarray]:
    from emo_pipeline.models import MirrorAveraged, is_distribution_model

    model, _ = load_torch_model(models_dir, card.name)
    model = prepare(model, options.device)
    # As at training time: a classifier's logits are averaged, then the softmax taken.
    if card.flip_tta:
        model = MirrorAveraged(model)
    if card.kind == "esm_resnet":
        fcn, fcn_card = load_torch_model(models_dir, card.esm_model or "")
        fcn = prepare(fcn, options.device)
        side = card.esm_size or fcn_card.size

        def forward(images: torch.Tensor) -> torch.Tensor:
            # The FCN sees the image at its own training size; the map then follows the image's size.
            small = F.interpolate(images, size=(side, side), mode="bilinear", align_corners=False)
            maps = F.interpolate(fcn(small), size=images.shape[-2:], mode="bilinear", align_corners=False)
            return model(images, maps)
    elif card.kind == "patches" or is_distribution_model(card.architecture):
        forward = model
    else:
        def forward(images: torch.Tensor) -> torch.Tensor:
            return torch.softmax(model(images), dim=1)
    loader = image_loader(paths, card.size, batch_size=options.batch_size, workers=options.workers,
                          device=options.device)
    return forward_batches(forward, loader, options.device, progress)


# Starting the feature workers costs 2-3 s (fork + exec, OpenCV and scikit-image imported again), the
# time of about a hundred images: a small batch (a dataset B shard of the demo world) is computed here.
POOL_FROM_IMAGES = 200


def _feature_outputs(card: ModelCard, models_dir: Path, paths: list[str], options: RunOptions,
                     progress: Progress | None) -> tuple[np.ndarray, np.ndarray]:
    from emo_pipeline.image_emotion.features import FeatureConfig, feature_table

    estimator, _ = load_sklearn_model(models_dir, card.name)
    config = FeatureConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in card.options.items()})
    keys = [str(i) for i in range(len(paths))]
    workers = options.workers if len(paths) >= POOL_FROM_IMAGES else 1
    table = feature_table(zip(keys, paths), config, workers=workers,
                          progress=progress).features.set_index("image_key")
    readable = np.array([k in table.index for k in keys])
    outputs = np.full((len(paths), len(EMOTIONS)), np.nan)
    # A model may read some of the families the card computes (the feature ridge: the paper's two).
    columns = list(getattr(estimator, "feature_names_in_", config.columns()))
    if readable.any():
        outputs[readable] = estimator.predict(table.loc[[k for k in keys if k in table.index], columns])
    return outputs, readable


def card_distributions(card: ModelCard, models_dir: Path, paths: Sequence[str], options: RunOptions = RunOptions(),
                       progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(N, 7) distributions of `paths` under `card` (NaN rows where unreadable) and the readable flags."""
    paths = list(paths)
    if not paths:
        return np.zeros((0, len(EMOTIONS))), np.zeros(0, dtype=bool)
    if card.kind == "ensemble":
        if not card.members:
            raise ValueError(f"ensemble {card.name!r} lists no members")
        parts = [card_distributions(load_card(models_dir, member), models_dir, paths, options, progress)
                 for member in card.members]
        outputs = sharpen(np.average([p for p, _ in parts], axis=0, weights=card.member_weights or None), card.power)
        readable = np.logical_and.reduce([r for _, r in parts])  # an image counts when every member read it
    elif card.kind == "features":
        outputs, readable = _feature_outputs(card, models_dir, paths, options, progress)
    elif card.kind in ("image", "esm_resnet", "patches"):
        outputs, readable = _torch_outputs(card, models_dir, paths, options, progress)
    else:
        raise ValueError(f"model {card.name!r} ({card.kind}) does not predict emotion distributions")
    distributions = np.full(outputs.shape, np.nan)
    if readable.any():
        distributions[readable] = clip_distribution(outputs[readable], card.clip)
    return distributions, readable


def predict_images(paths: Sequence[str | Path], model: str, models_dir: Path,
                   options: RunOptions = RunOptions()) -> Prediction:
    """The 7-way distribution of each readable image under `model` (a card name in `models_dir`)."""
    names = [str(p) for p in paths]
    distributions, readable = card_distributions(load_card(models_dir, model), models_dir, names, options)
    failed = {p: unreadable_reason(p) for p, ok in zip(names, readable) if not ok}
    return Prediction(model=model, paths=[p for p, ok in zip(names, readable) if ok],
                      distributions=distributions[readable], failed=failed)


def validation_scores(store: Warehouse, metric: str = "chebyshev") -> dict[str, float]:
    """`metric` on the validation split per model, from the evaluation table (empty before it exists)."""
    if not store.has_table("emotion_distribution_metrics"):
        return {}
    table = store.read_table("emotion_distribution_metrics")
    val = table[table["split"] == "val"]
    return dict(zip(val["model"], val[metric].astype(float)))


def distribution_models(models_dir: Path) -> list[str]:
    """Names of the materialized models that predict a distribution from an image."""
    return [c.name for c in available_models(models_dir) if c.kind in DISTRIBUTION_KINDS]


def default_model(models_dir: Path, val_scores: dict[str, float] | None = None) -> str:
    """The materialized model with the lowest validation score (Chebyshev, KL, ...; see
    `validation_scores`) when scores are known, else the ensemble, else the first model by name."""
    names = distribution_models(models_dir)
    if not names:
        raise FileNotFoundError(f"no materialized emotion model in {models_dir}: materialize one first "
                                "(for example `make demo`, or the small_cnn asset in the Dagster UI)")
    scored = [n for n in names if val_scores and n in val_scores]
    if scored:
        return min(scored, key=lambda n: val_scores[n])
    return "ensemble" if "ensemble" in names else names[0]
