"""Training an image -> emotion model on Emotion6-format labels with the shared loop.

Distribution models end in a softmax and learn the 7-way distribution (MSE as in the paper, or KL);
classifiers return logits and learn the dominant emotion with cross-entropy. Model selection uses the
validation split only (the weights of the best validation epoch are kept); the test split is
predicted once, at the end.

Two recipes (`EmotionModelConfig.recipe`), each a bundle of settings (`RECIPE_SETTINGS`):

- `paper`: the paper's procedure as it states it. The framework's initialisation of the output
  layer, no prediction floor, no augmentation.
- `improved`: three additions of this project, for models trained from scratch on Emotion6 (about
  1400 training images whose labels are annotators' vote fractions):
  - Output bias (`output_bias="train_mean"`): the final linear layer's bias starts at the log of the
    mean training distribution (class frequencies for a classifier) and its weights are scaled by
    `output_weight_scale` (0: zero), so the untrained model predicts exactly the train-mean floor and
    training spends its steps on what differs between images instead of first learning the average.
  - Prediction floor (`clip_grid`): KL punishes a near-zero probability for an emotion that some
    annotator chose, so each prediction p becomes max(p, floor) renormalised, with the floor chosen on
    validation (0 always among the candidates, so it can never make validation KL worse) and applied
    to every split. The chosen floor is returned, to be stored with the model for later predictions.
  - Augmentation (`augment`): random horizontal flips and shifts of each training batch (random
    resized crops instead of shifts where a model sets `crop_scale`).
  - Mirror averaging (`flip_tta`, image models only): each prediction is the mean of the model's
    outputs for the image and for its horizontal mirror (logits for a classifier).

A setting given explicitly wins over the recipe's value; `recipe_summary` names the departures.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from emo_pipeline.core import metrics
from emo_pipeline.core.digests import frame_fingerprint
from emo_pipeline.core.emotions import EMOTIONS, PROB_COLUMNS
from emo_pipeline.core.train_loop import TrainConfig, TrainResult, predict, seed_everything, train
from emo_pipeline.image_emotion.image_data import ImageTargets, augment_batch
from emo_pipeline.models import MirrorAveraged, WeightsInfo, build_model

LOSSES = ("mse", "kl", "ce")
OUTPUT_BIAS = ("default", "train_mean")  # default: the framework's initialisation of the last layer
# The small CNN's flattened size depends on its input side, so it is built for the training size;
# the torchvision models pool adaptively and take any side from their minimum up.
_SIZED_MODELS = ("small_cnn", "small_cnn_classifier")

# What each recipe sets, for the image models and the ESM-ResNet (see the module docstring).
RECIPE_SETTINGS: dict[str, dict[str, Any]] = {
    "paper": {"augment": False, "output_bias": "default", "output_weight_scale": 1.0, "clip_grid": (0.0,)},
    "improved": {"augment": True, "output_bias": "train_mean", "output_weight_scale": 0.0,
                 "clip_grid": metrics.CLIP_GRID},
}
RECIPES = tuple(RECIPE_SETTINGS)
# The image models add one setting to the bundles: the mirror-averaged prediction.
IMAGE_RECIPE_SETTINGS: dict[str, dict[str, Any]] = {
    "paper": {**RECIPE_SETTINGS["paper"], "flip_tta": False},
    "improved": {**RECIPE_SETTINGS["improved"], "flip_tta": True},
}


def expand_recipe(config: Any) -> None:
    """In a frozen settings dataclass's `__post_init__`: every setting of `config`'s recipe left unset
    (None) takes the recipe's value (the class's `RECIPE_SETTINGS`); one given explicitly keeps its value."""
    table = type(config).RECIPE_SETTINGS
    if config.recipe not in table:
        raise ValueError(f"{type(config).__name__}.recipe: {config.recipe!r} is not a recipe; "
                         f"choose one of {', '.join(table)}")
    for name, value in table[config.recipe].items():
        if getattr(config, name) is None:
            object.__setattr__(config, name, value)


def apply_recipe(config: Any, recipe: str) -> Any:
    """`config` with `recipe` and every setting that recipe bundles (its other settings kept).

    `dataclasses.replace(config, recipe=...)` alone would keep the old recipe's values, which it passes
    on as if they had been given explicitly; the Dagster layer applies a `recipe` override this way
    (each settings class with a recipe has a `with_recipe` method that calls this).
    """
    # An unknown recipe is refused by the dataclass's own check (expand_recipe), naming the choices.
    return dataclasses.replace(config, recipe=recipe, **type(config).RECIPE_SETTINGS.get(recipe, {}))


def recipe_summary(config: Any) -> str:
    """The recipe's name, with the settings where `config` departs from it: "paper" or
    "paper, except augment=True"."""
    bundled = type(config).RECIPE_SETTINGS[config.recipe]
    changed = [f"{name}={getattr(config, name)!r}" for name, value in bundled.items() if getattr(config, name) != value]
    return config.recipe + (f", except {', '.join(changed)}" if changed else "")


@dataclass(frozen=True)
class EmotionModelConfig:
    """An image -> emotion model's settings. `augment`, `output_bias`, `output_weight_scale`,
    `clip_grid` and `flip_tta` come from `recipe` unless given (None: the recipe's value)."""

    RECIPE_SETTINGS: ClassVar[dict[str, dict[str, Any]]] = IMAGE_RECIPE_SETTINGS

    model: str
    size: int
    loss: str = "mse"
    training: TrainConfig = TrainConfig(epochs=10, batch_size=16, lr=1e-4, patience=5)
    recipe: str = "improved"            # one of RECIPES
    augment: bool | None = None         # random flips and shifts of the training batches
    pretrained: str = "auto"
    weights_path: str | None = None
    workers: int = 2                    # image decoding processes
    output_bias: str | None = None      # one of OUTPUT_BIAS
    output_weight_scale: float | None = None  # with train_mean: factor on the last layer's initial weights
    clip_grid: tuple[float, ...] | None = None  # floors tried on validation; (0.0,) turns clipping off
    flip_tta: bool | None = None        # predict each image as the mean over it and its mirror image
    crop_scale: float = 0.0             # > 0: augment with random resized crops of at least this share of the area

    def __post_init__(self) -> None:
        expand_recipe(self)
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        if self.output_bias not in OUTPUT_BIAS:
            raise ValueError(f"output_bias must be one of {', '.join(OUTPUT_BIAS)}, not {self.output_bias!r}")
        if self.output_weight_scale < 0:
            raise ValueError(f"output_weight_scale must be >= 0, not {self.output_weight_scale}")
        if any(not 0 <= floor < 1 / len(EMOTIONS) for floor in self.clip_grid):
            # A floor of 1/7 or more turns every prediction into the uniform distribution.
            raise ValueError(f"clip_grid floors must lie in [0, 1/{len(EMOTIONS)}), got {self.clip_grid}")
        if not 0 <= self.crop_scale <= 1:
            raise ValueError(f"crop_scale must lie in [0, 1], not {self.crop_scale}")

    def with_recipe(self, recipe: str) -> EmotionModelConfig:
        return apply_recipe(self, recipe)


@dataclass
class FittedEmotionModel:
    model: nn.Module
    weights: WeightsInfo
    result: TrainResult
    predictions: pd.DataFrame  # image_key, split, prob_* (predicted distribution; softmax of logits for classifiers)
    clip: float = 0.0          # the floor chosen on validation, already applied to `predictions`
    clip_scores: dict[float, float] | None = None  # validation KL for each floor tried
    options: dict | None = None  # builder_options(config): what build_model needs to rebuild the model


def labels_fingerprint(labels: pd.DataFrame, split: pd.DataFrame, columns: Sequence[str] = ()) -> str:
    """Changes whenever the images, their labels (and the further label `columns` a fit reads) or the
    split change: new data, new checkpoints."""
    table = (labels[["image_key", "image_path", *PROB_COLUMNS, *columns]].merge(split, on="image_key")
             .sort_values("image_key"))
    return frame_fingerprint(table)


def builder_options(config: EmotionModelConfig) -> dict:
    """Keyword arguments `build_model(config.model, ...)` needs besides the name and the weights.

    {"input_size": size} for the small CNN (its layers depend on the side it is trained at), {} for
    the torchvision models. A model loader passes the same dict to rebuild a saved model.
    """
    return {"input_size": int(config.size)} if config.model in _SIZED_MODELS else {}


def clip_distribution(predicted: np.ndarray | torch.Tensor, floor: float) -> np.ndarray | torch.Tensor:
    """Each probability raised to at least `floor`, each row renormalised to sum to 1.

    NumPy in, float64 NumPy out (as `metrics.clip_distribution`); a tensor in, a tensor of its dtype
    out (usable on model outputs, gradients included). Floor 0 only renormalises.
    """
    if not 0 <= floor < 1:
        raise ValueError(f"floor must lie in [0, 1), not {floor}")
    if isinstance(predicted, torch.Tensor):
        clipped = predicted.clamp_min(floor)
        return clipped / clipped.sum(dim=-1, keepdim=True)
    return metrics.clip_distribution(predicted, floor)


def output_layer(model: nn.Module, outputs: int = len(EMOTIONS)) -> nn.Linear:
    """The last linear layer of `model` (the one before the softmax), which must give `outputs` values.

    Modules are registered in the order they are built, and every model here builds its head last
    (SmallCNN's classifier, a torchvision model's replaced fc / classifier[6]), so the last Linear in
    `model.modules()` is the output layer.
    """
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears or linears[-1].out_features != outputs:
        found = linears[-1].out_features if linears else "no linear layer"
        raise ValueError(f"{type(model).__name__}: expected a last linear layer with {outputs} outputs, found {found}")
    return linears[-1]


def init_output_bias(model: nn.Module, distribution: np.ndarray | torch.Tensor, *,
                     weight_scale: float = 0.0) -> nn.Linear:
    """Start `model` at `distribution`: output bias = its log, output weights scaled by `weight_scale`.

    With weight_scale 0 the softmax of the output is exactly `distribution` for every input. Zeros
    in `distribution` are raised to 1e-6 first: log(0) would pin a class at probability 0 for good.
    Returns the output layer.
    """
    target = torch.as_tensor(np.asarray(distribution, dtype=np.float64)).clamp_min(1e-6)
    target = target / target.sum()
    layer = output_layer(model, len(target))
    with torch.no_grad():
        # log p and log p + c give the same softmax; centring keeps the bias small and readable.
        logits = target.log()
        layer.bias.copy_((logits - logits.mean()).to(layer.bias.dtype))
        layer.weight.mul_(weight_scale)
    return layer


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
    """Train on the train split, select on val, predict every image; `labels` as read by emotion6.py.

    The prediction floor is chosen on validation among `config.clip_grid` (and 0) and applied to every
    split; `FittedEmotionModel.clip` says which.
    """
    table = labels.merge(split, on="image_key", validate="one_to_one")
    parts = {name: table[table["split"] == name].reset_index(drop=True) for name in ("train", "val", "test")}
    log(f"{config.model}: decoding {len(table)} images at {config.size} px")
    data = {name: ImageTargets(part["image_path"].tolist(), _targets(part, config.loss), config.size,
                               workers=config.workers)
            for name, part in parts.items()}

    seed_everything(config.training.seed)
    options = builder_options(config)
    model, weights = build_model(config.model, pretrained=config.pretrained, weights_path=config.weights_path,
                                 **options)
    log(f"{config.model}: {weights.source}")
    if config.output_bias == "train_mean":
        # The mean of the training targets: the mean distribution, or the class frequencies of the
        # one-hot dominant emotions for a classifier. (A resumed run overwrites this with its checkpoint.)
        train_targets = data["train"].targets
        mean = (nn.functional.one_hot(train_targets, len(EMOTIONS)).double().mean(dim=0) if config.loss == "ce"
                else train_targets.double().mean(dim=0))
        init_output_bias(model, mean, weight_scale=config.output_weight_scale)
    result = train(
        model, data["train"], data["val"], loss_function(config.loss),
        config.training, checkpoint_dir, device=device, log=log,
        augment=functools.partial(augment_batch, crop_scale=config.crop_scale) if config.augment else None,
    )

    probs = {}
    predictor = MirrorAveraged(model) if config.flip_tta else model
    for name in parts:
        outputs = predict(predictor, data[name], device=device)
        probs[name] = (torch.softmax(outputs, dim=1) if config.loss == "ce" else outputs).numpy().astype(np.float64)
    val_true = parts["val"][list(PROB_COLUMNS)].to_numpy(dtype=np.float64)
    grid = tuple(sorted({0.0, *config.clip_grid}))
    clip_scores = {floor: float(metrics.kl_divergence(val_true, clip_distribution(probs["val"], floor)).mean())
                   for floor in grid}
    clip = metrics.choose_clip(val_true, probs["val"], grid)
    log(f"{config.model}: prediction floor {clip:g} (validation KL {clip_scores[0.0]:.4f} -> {clip_scores[clip]:.4f})")

    frames = []
    for name, part in parts.items():
        frame = pd.DataFrame(clip_distribution(probs[name], clip), columns=list(PROB_COLUMNS))
        frame.insert(0, "split", name)
        frame.insert(0, "image_key", part["image_key"].to_numpy())
        frames.append(frame)
    predictions = pd.concat(frames, ignore_index=True).astype({"image_key": "string", "split": "string"})
    return FittedEmotionModel(model=model, weights=weights, result=result, predictions=predictions, clip=clip,
                              clip_scores=clip_scores, options=options)
