"""The emotion stimuli map (ESM) models: FCN-8s on EmotionROI, and the ESM-enhanced ResNet on Emotion6.

FCN-8s learns, from EmotionROI's image/map pairs, where in a picture the emotion comes from (a map
in [0, 1] of the image's size), with MSE as in the paper. EmotionROI ships only a train/test split, so
a seeded part of train, stratified by emotion, is held out for early stopping and model selection;
test is predicted once, at the end. Beside the FCN's MSE stands the floor every map model must beat:
the pixel-wise mean of the training maps, predicted for every image.

The ESM-ResNet then learns Emotion6's 7-way distribution from each image and the map the trained
FCN PREDICTS for it: Emotion6 has no ground-truth maps, and no picture met at prediction time will
have one either. To reuse the shared training loop unchanged, each input is one 4-channel tensor
(normalised RGB and the map resized to the image's side) and `MapInput` splits it again for
`ESMResNet.forward(image, esm)`; the loop's flip/shift augmentation then moves image and map together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from emo_pipeline.core import metrics
from emo_pipeline.core.emotions import EMOTIONS, PROB_COLUMNS
from emo_pipeline.core.splits import stratified_split
from emo_pipeline.core.train_loop import TrainConfig, TrainResult, predict, seed_everything, train
from emo_pipeline.image_emotion.image_data import ImageMaps, ImagesWithMaps, ImageTargets, MirroredPairs, augment_batch
from emo_pipeline.image_emotion.training import (
    OUTPUT_BIAS,
    RECIPE_SETTINGS,
    apply_recipe,
    clip_distribution,
    expand_recipe,
    init_output_bias,
    loss_function,
)
from emo_pipeline.models import ESMResNet, FCN8s, MapInput, WeightsInfo, build_esm_resnet, build_fcn8s

ESM_SPLITS = ("train", "val", "test")
ESM_RESNET_LOSSES = ("mse", "kl")  # the ESM-ResNet ends in a softmax: distribution losses only


@dataclass(frozen=True)
class ESMConfig:
    """FCN-8s on EmotionROI. `fc_channels` (fc6/fc7) and `trunk_width` (conv1) are VGG-16's 4096 and 64 in
    the paper; narrower ones train from scratch on a CPU in minutes.

    `recipe` (as for the image models, see `emo_pipeline.image_emotion.training`): `paper` trains on
    EmotionROI's pairs as they are from the framework's initialisation; `improved` adds mirrored copies
    of the training pairs (`mirror`) and starts the output bias at the training maps' mean level
    (`output_bias="train_mean"`). Either setting given explicitly wins over the recipe's value.
    """

    RECIPE_SETTINGS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {"mirror": False, "output_bias": "default"},
        "improved": {"mirror": True, "output_bias": "train_mean"},
    }

    size: int = 64
    # From scratch, a learning rate of 1e-3 saturates the sigmoid within a few steps.
    training: TrainConfig = TrainConfig(epochs=50, batch_size=16, lr=1e-4, patience=8)
    recipe: str = "improved"
    val_fraction: float = 0.15
    fc_channels: int = 4096
    trunk_width: int = 64  # VGG-16's; 16 costs 1/16 of the computation, for a CPU (no ImageNet weights then)
    mirror: bool | None = None        # mirrored copies of the training pairs (None: the recipe's)
    output_bias: str | None = None    # one of OUTPUT_BIAS (None: the recipe's)
    pretrained: str = "auto"
    weights_path: str | None = None
    workers: int = 2
    samples: int = 4

    def __post_init__(self) -> None:
        expand_recipe(self)
        if self.output_bias not in OUTPUT_BIAS:
            raise ValueError(f"output_bias must be one of {', '.join(OUTPUT_BIAS)}, not {self.output_bias!r}")

    def with_recipe(self, recipe: str) -> ESMConfig:
        return apply_recipe(self, recipe)


@dataclass
class ESMSamples:
    """A few test images with their true and predicted maps, for the figure (paper Fig. 8)."""

    keys: list[str]
    images: np.ndarray     # (n, S, S, 3) uint8
    true_maps: np.ndarray  # (n, S, S) float in [0, 1]
    predicted: np.ndarray  # (n, S, S) float in [0, 1]


@dataclass
class FittedESM:
    model: FCN8s
    weights: WeightsInfo
    result: TrainResult
    mse: dict[str, float]           # FCN's pixel MSE per split: train (the part trained on), val, test
    baseline_mse: dict[str, float]  # the mean training map's MSE on the same splits
    images: dict[str, int]          # images per split
    samples: ESMSamples


def esm_split(maps: pd.DataFrame, split: pd.DataFrame, val_fraction: float, seed: int) -> pd.DataFrame:
    """EmotionROI's train/test with a seeded validation part carved out of train, stratified by emotion.

    Images in no split file (split NULL in the reader's table) take no part. Returns image_key, split.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie strictly between 0 and 1, not {val_fraction}")
    table = maps[["image_key", "emotion"]].merge(split[["image_key", "split"]], on="image_key", validate="one_to_one")
    table = table[table["split"].isin(("train", "test"))]
    train = table[table["split"] == "train"]
    if train.empty or (table["split"] == "test").sum() == 0:
        raise ValueError(f"EmotionROI needs train and test images; got {table['split'].value_counts().to_dict()}")
    carved = stratified_split(train["image_key"].astype(str).tolist(), train["emotion"].astype(str).tolist(),
                              seed=seed, fractions=(1.0 - val_fraction, val_fraction, 0.0))
    test = table.loc[table["split"] == "test", ["image_key"]].assign(split="test")
    return pd.concat([carved, test], ignore_index=True).astype({"image_key": "string", "split": "string"})


def _pixel_mse(predicted: torch.Tensor, true: torch.Tensor) -> float:
    return float(((predicted.double() - true.double()) ** 2).mean()) if len(true) else float("nan")


def fit_esm_model(
    maps: pd.DataFrame,
    split: pd.DataFrame,
    config: ESMConfig,
    checkpoint_dir: Path,
    *,
    device: torch.device | str = "cpu",
    log: Callable[[str], None] = print,
) -> FittedESM:
    """Train FCN-8s on EmotionROI (`maps`, `split` as read by emotionroi.py) at `config.size`."""
    parts_split = esm_split(maps, split, config.val_fraction, config.training.seed)
    table = maps.merge(parts_split, on="image_key", validate="one_to_one")
    parts = {name: table[table["split"] == name].sort_values("image_key").reset_index(drop=True)
             for name in ESM_SPLITS}
    log(f"esm {config.size} px: decoding {len(table)} images and maps "
        f"({', '.join(f'{n} {len(p)}' for n, p in parts.items())})")
    data = {name: ImageMaps(part["image_path"].tolist(), part["esm_path"].tolist(), config.size,
                            workers=config.workers)
            for name, part in parts.items()}

    seed_everything(config.training.seed)
    model, weights = build_fcn8s(pretrained=config.pretrained, weights_path=config.weights_path,
                                 fc_channels=config.fc_channels, trunk_width=config.trunk_width)
    log(f"esm {config.size} px: {weights.source}" + (f" ({weights.detail})" if weights.detail else ""))
    if config.output_bias == "train_mean":
        level = float(data["train"].maps.double().mean() / 255.0)
        with torch.no_grad():
            # Start from the training maps' mean level, not 0.5: most of a map is dark, so from 0.5 the
            # first steps all push the logits down, and the overshoot saturates the sigmoid, where MSE
            # has no gradient left to recover with.
            model.score_fr.bias.fill_(float(np.log(level / (1.0 - level))) if 0.0 < level < 1.0 else 0.0)
    # The loop's augmentation moves only the inputs, which would misalign image and map; mirrored
    # copies of each training pair (image and map flipped together) double the small EmotionROI instead.
    train_data = MirroredPairs(data["train"]) if config.mirror else data["train"]
    result = train(
        model, train_data, data["val"], nn.functional.mse_loss,
        config.training,
        checkpoint_dir, device=device, log=log,
    )

    mean_map = data["train"].maps.double().mean(dim=0).div(255.0)  # (S, S): the floor to beat
    mse, baseline, predicted = {}, {}, {}
    for name in ESM_SPLITS:
        true = data[name].maps.unsqueeze(1).float().div(255.0)
        predicted[name] = predict(model, data[name], device=device)
        mse[name] = _pixel_mse(predicted[name], true)
        baseline[name] = _pixel_mse(mean_map.expand_as(true), true)
    log(f"esm {config.size} px: test MSE {mse['test']:.4f} (mean training map {baseline['test']:.4f}), "
        f"val MSE {mse['val']:.4f} (mean training map {baseline['val']:.4f})")

    n = min(config.samples, len(parts["test"]))
    samples = ESMSamples(
        keys=parts["test"]["image_key"].astype(str).head(n).tolist(),
        images=data["test"].images[:n].numpy(),
        true_maps=data["test"].maps[:n].float().div(255.0).numpy(),
        predicted=predicted["test"][:n, 0].numpy(),
    )
    return FittedESM(model=model, weights=weights, result=result, mse=mse, baseline_mse=baseline,
                     images={name: len(part) for name, part in parts.items()}, samples=samples)


@torch.inference_mode()
def predict_maps(model: nn.Module, image_paths: Sequence[str | Path], size: int, *,
                 device: torch.device | str = "cpu", batch_size: int = 64, workers: int = 2) -> torch.Tensor:
    """The stimuli maps a trained FCN predicts for `image_paths` at `size`: (N, 1, size, size) in [0, 1]."""
    images = ImageTargets(list(image_paths), torch.zeros(len(image_paths)), size, workers=workers)
    if len(images) == 0:
        return torch.empty((0, 1, size, size))
    return predict(model, images, batch_size=batch_size, device=device)


@dataclass(frozen=True)
class ESMResNetConfig:
    """The ESM-enhanced ResNet on Emotion6; `arch` is the trunk (resnet18 or resnet101).

    `recipe`, `augment`, `output_bias`, `output_weight_scale` and `clip_grid` mean what they mean for the
    image models (`EmotionModelConfig`, same recipes): the ESM-ResNet is scored beside the plain ResNet,
    so with a recipe it gets the same additions (or none).
    """

    RECIPE_SETTINGS: ClassVar[dict[str, dict[str, Any]]] = RECIPE_SETTINGS

    arch: str = "resnet101"
    size: int = 224
    esm_model: str = "esm_fcn8s_64"  # the FCN whose predicted maps join the image features
    esm_grid: int = 7
    loss: str = "mse"
    training: TrainConfig = TrainConfig(epochs=30, batch_size=16, lr=1e-4, patience=5)
    recipe: str = "improved"
    augment: bool | None = None
    pretrained: str = "auto"
    weights_path: str | None = None
    workers: int = 2                    # image decoding processes
    output_bias: str | None = None
    output_weight_scale: float | None = None
    clip_grid: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        expand_recipe(self)
        if self.loss not in ESM_RESNET_LOSSES:
            raise ValueError(f"the ESM-ResNet ends in a softmax: loss must be one of "
                             f"{', '.join(ESM_RESNET_LOSSES)}, not {self.loss!r}")
        if self.output_bias not in OUTPUT_BIAS:
            raise ValueError(f"output_bias must be one of {', '.join(OUTPUT_BIAS)}, not {self.output_bias!r}")
        if self.output_weight_scale < 0:
            raise ValueError(f"output_weight_scale must be >= 0, not {self.output_weight_scale}")
        if any(not 0 <= floor < 1 / len(EMOTIONS) for floor in self.clip_grid):
            raise ValueError(f"clip_grid floors must lie in [0, 1/{len(EMOTIONS)}), got {self.clip_grid}")

    def with_recipe(self, recipe: str) -> ESMResNetConfig:
        return apply_recipe(self, recipe)


@dataclass
class FittedESMResNet:
    model: ESMResNet
    weights: WeightsInfo
    result: TrainResult
    predictions: pd.DataFrame  # image_key, split, prob_* for every Emotion6 image (floor applied)
    clip: float                # the prediction floor chosen on validation
    maps: torch.Tensor         # (N, 1, s, s): the FCN's map of each image, in the order of `map_keys`
    map_keys: list[str]


def fit_esm_resnet(
    labels: pd.DataFrame,
    split: pd.DataFrame,
    esm_model: nn.Module,
    esm_size: int,
    config: ESMResNetConfig,
    checkpoint_dir: Path,
    *,
    device: torch.device | str = "cpu",
    log: Callable[[str], None] = print,
) -> FittedESMResNet:
    """Train the ESM-ResNet on Emotion6 (`labels`, `split` as for `fit_emotion_model`).

    Each image's map is the one `esm_model` (a trained FCN, run at `esm_size`) predicts for it.
    Selection uses the validation split only; the test split is predicted once, at the end.
    """
    table = labels.merge(split, on="image_key", validate="one_to_one").sort_values("image_key").reset_index(drop=True)
    log(f"esm_resnet: predicting the stimuli maps of {len(table)} images with the FCN at {esm_size} px")
    maps = predict_maps(esm_model, table["image_path"].tolist(), esm_size, device=device, workers=config.workers)
    esm_model.cpu()  # the FCN's work is done: leave the device to the ResNet

    parts = {name: table.index[table["split"] == name].to_numpy() for name in ("train", "val", "test")}
    targets = torch.as_tensor(table[list(PROB_COLUMNS)].to_numpy(dtype=np.float32))
    log(f"esm_resnet: decoding {len(table)} images at {config.size} px")
    data = {name: ImagesWithMaps(table.loc[rows, "image_path"].tolist(), maps[rows], targets[rows], config.size,
                                 workers=config.workers)
            for name, rows in parts.items()}

    seed_everything(config.training.seed)
    net, weights = build_esm_resnet(config.arch, esm_grid=config.esm_grid, pretrained=config.pretrained,
                                    weights_path=config.weights_path)
    log(f"esm_resnet ({config.arch}): {weights.source}")
    if config.output_bias == "train_mean":
        init_output_bias(net, data["train"].targets.double().mean(dim=0), weight_scale=config.output_weight_scale)
    model = MapInput(net)
    result = train(
        model, data["train"], data["val"], loss_function(config.loss),
        config.training,
        checkpoint_dir, device=device, log=log, augment=augment_batch if config.augment else None,
    )

    probs = {name: predict(model, data[name], device=device).numpy().astype(np.float64) for name in parts}
    grid = tuple(sorted({0.0, *config.clip_grid}))
    clip = metrics.choose_clip(targets[parts["val"]].numpy().astype(np.float64), probs["val"], grid)
    log(f"esm_resnet: prediction floor {clip:g}")
    frames = []
    for name, rows in parts.items():
        frame = pd.DataFrame(clip_distribution(probs[name], clip), columns=list(PROB_COLUMNS))
        frame.insert(0, "split", name)
        frame.insert(0, "image_key", table.loc[rows, "image_key"].to_numpy())
        frames.append(frame)
    predictions = pd.concat(frames, ignore_index=True).astype({"image_key": "string", "split": "string"})
    return FittedESMResNet(model=net, weights=weights, result=result, predictions=predictions, clip=clip, maps=maps,
                           map_keys=table["image_key"].astype(str).tolist())
