"""`patch_mlp`: the feature network of `feature_mlp` on patch features learned without labels
(`patch_features`), served as one torch module (this project's model, not the paper's).

For one split: the patch encoders are learned from the training pictures and encode every picture
and, with `mirror`, its mirror image; `fit_feature_mlp` fits its members on the square roots of those
columns alone (`square_roots`; the training pictures and their mirror images), keeps each member's
best epoch and chooses the output floor (validation, each prediction the mean over the picture and its
mirror image); `served_module` then copies the encoders, the standardisation and the network's weights
into a `models.patch_mlp.PatchMLP`, which predicts a distribution from an image as every image model
does, for `predict`, the ensemble and dataset B. Its card's `flip_tta` has them run it behind
`models.MirrorAveraged`, as it was fitted. The test split takes part in no choice.

On the real Emotion6 (docs/models.md) it is, with `feature_mlp`, the best single model, and it takes
.50-.54 of the stacked ensemble's weight on split seeds 0-2.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from emo_pipeline.image_emotion.feature_mlp import FeatureMLPConfig, FeatureMLPResult, fit_feature_mlp
from emo_pipeline.image_emotion.patch_features import PatchFeatureConfig, patch_feature_table
from emo_pipeline.models.patch_mlp import PatchEncoder, PatchMLP

ARCHITECTURE = "patch_mlp"


@dataclass(frozen=True)
class PatchMLPConfig:
    patches: PatchFeatureConfig = field(default_factory=PatchFeatureConfig)
    # No hand-made feature family to root (`sqrt_families` stays empty): `square_roots` roots the patch columns.
    network: FeatureMLPConfig = field(default_factory=lambda: FeatureMLPConfig(sqrt_families=()))
    # Square roots of the quadrant sums before standardising, as the histograms of `feature_mlp` (a few
    # large sums otherwise dominate a column): on split seeds 0-2 validation KL fell from .5067 to .4984
    # alone and the stack's from .4845 to .4806 (docs/models.md, "Square roots of the patch columns").
    square_roots: bool = True
    # Train on the training pictures' mirror images too, and predict each picture as the mean over it and
    # its mirror image: on split seeds 0-2 the stack's validation KL fell from .4860 (with the compact CNN)
    # to .4848 without it (docs/models.md, "Mirror images").
    mirror: bool = True
    workers: int = 2                        # threads decoding the pictures

    def __post_init__(self) -> None:
        if self.network.sqrt_families:
            raise ValueError("sqrt_families names hand-made feature families, not patch columns: set it to [] "
                             "(square_roots roots the patch columns)")


@dataclass
class PatchMLPResult:
    model: PatchMLP                      # normalised images (N, 3, S, S) -> 7-way distribution (before the floor)
    options: dict                        # the keyword arguments that rebuild `model` (`PatchMLP(**options)`)
    network: FeatureMLPResult            # the network's fit on the patch columns: members, epochs, curves
    features_seconds: float
    seconds: float

    @property
    def predictions(self) -> pd.DataFrame:  # image_key, split, prob_* (clipped)
        return self.network.predictions

    @property
    def clip(self) -> float:
        return self.network.clip

    @property
    def scores(self) -> dict[str, dict[str, float]]:
        return self.network.scores


def fit_patch_mlp(labels: pd.DataFrame, split: pd.DataFrame, config: PatchMLPConfig = PatchMLPConfig(), *,
                  device: torch.device | str = "cpu", log: Callable[[str], None] = print) -> PatchMLPResult:
    """Learn the patch encoders from the train split's pictures, fit the network on train and
    validation, and serve both as one module.

    `labels`: image_key, image_path and prob_* (and valence, arousal and keyword when the network's
    `auxiliary_weight` > 0), as `sources.emotion6` reads them; `split`: image_key, split.
    """
    began = time.perf_counter()
    images = labels[["image_key", "image_path"]].merge(split[["image_key", "split"]], on="image_key",
                                                       validate="one_to_one")
    features = patch_feature_table(images["image_key"].tolist(), images["image_path"].tolist(),
                                   (images["split"] == "train").to_numpy(), config.patches, mirrored=config.mirror,
                                   workers=config.workers, device=device, log=log)
    features_seconds = time.perf_counter() - began
    table, mirrored = features.table, features.mirrored
    if config.square_roots:
        table, mirrored = square_rooted(table), None if mirrored is None else square_rooted(mirrored)
    network = fit_feature_mlp(table, labels, split, config.network, mirrored=mirrored)
    log(f"patch_mlp: {config.network.members} networks on {features.table.shape[1] - 1} patch columns"
        f"{' (and the training pictures mirrored)' if config.mirror else ''} in {network.seconds:.0f} s, "
        f"epochs kept {network.epochs_kept}, floor {network.clip:g}")
    options = {"sizes": list(config.patches.sizes), "patch_sizes": list(config.patches.patch_sizes),
               "centroids": config.patches.centroids, "hidden": config.network.members * config.network.hidden,
               "contrast_epsilon": config.patches.contrast_epsilon, "clip_value": config.network.clip_value,
               "square_roots": config.square_roots}
    model = served_module(features.encoders, network, options)
    return PatchMLPResult(model=model, options=options, network=network, features_seconds=features_seconds,
                          seconds=time.perf_counter() - began)


def square_rooted(table: pd.DataFrame) -> pd.DataFrame:
    """`image_key` and the square roots of the patch columns (quadrant sums of activations, never negative)."""
    columns = [c for c in table.columns if c != "image_key"]
    rooted = pd.DataFrame(np.sqrt(table[columns].to_numpy(np.float32)), columns=columns, index=table.index)
    return pd.concat([table[["image_key"]], rooted], axis=1)


def served_module(encoders: list[PatchEncoder], network: FeatureMLPResult, options: dict) -> PatchMLP:
    """One `PatchMLP` holding the encoders and the network's scikit-learn pipeline (standardisation,
    clipping, the members' hidden units side by side and their averaged output layer)."""
    pipeline = network.model
    scaler, mlp = pipeline.named_steps["scale"], pipeline.named_steps["network"]
    if list(pipeline.named_steps["roots"].get_feature_names_out()) != network.feature_columns:
        raise ValueError("the network's input is not the patch columns in their order")  # a square root or a reorder
    model = PatchMLP(**options)

    def tensor(values: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(values), dtype=torch.float32)

    model.load_state_dict({
        **{f"encoders.{i}.{k}": v for i, encoder in enumerate(encoders) for k, v in encoder.state_dict().items()},
        "feature_mean": tensor(scaler.mean_), "feature_scale": tensor(scaler.scale_),
        "hidden.weight": tensor(mlp.coefs_[0].T), "hidden.bias": tensor(mlp.intercepts_[0]),
        "output.weight": tensor(mlp.coefs_[1].T), "output.bias": tensor(mlp.intercepts_[1])})
    return model.eval()
