"""The ESM-enhanced ResNet: image features joined with a predicted emotion stimuli map.

The ResNet's globally pooled features (512 for ResNet-18, 2048 for ResNet-101) are concatenated with
the stimuli map averaged over a 7x7 grid and flattened (49 values), and one fully connected layer
with a softmax gives the 7-way distribution.

Why a 7x7 grid of averages rather than pooled statistics (mean, max) of the map: the grid keeps where
the stimuli are (centre or border, sky or ground), which the pooled image features have averaged
away and which statistics would lose too; averaging makes each cell the stimulus mass of its region
whatever the map's resolution; 7x7 is ResNet's last feature grid at 224 px, so each cell lines up
with one cell of the features that were pooled; and 49 values beside 512-2048 features keep the
head small. `esm_grid` changes the grid (14 for a finer one).
"""

from __future__ import annotations

import os

import torch
from torch import nn
from torch.nn import functional as F

from emo_pipeline.models.backbones import WeightsInfo, imagenet_model

RESNETS: tuple[str, ...] = ("resnet18", "resnet101")


class ESMResNet(nn.Module):
    """forward(image, esm) -> (N, outputs) distribution.

    `image` is (N, 3, H, W) normalised with ImageNet statistics (224 px in the paper profile, a size the
    paper does not state; 112 px works);
    `esm` is (N, 1, h, w) in [0, 1], any size: the caller supplies the map predicted for the same
    image by the trained ESM model (`FCN8s`), not the ground truth, which does not exist at test time.
    """

    def __init__(self, trunk: nn.Module, feature_dim: int, *, outputs: int = 7, esm_grid: int = 7):
        super().__init__()
        self.trunk = trunk  # a ResNet whose fc is the identity: it returns the pooled features
        self.esm_grid = esm_grid
        self.fc = nn.Sequential(nn.Linear(feature_dim + esm_grid * esm_grid, outputs), nn.Softmax(dim=1))

    def forward(self, image: torch.Tensor, esm: torch.Tensor) -> torch.Tensor:
        if esm.dim() != 4 or esm.shape[1] != 1 or esm.shape[0] != image.shape[0]:
            raise ValueError(f"esm must be (N, 1, H, W) for {image.shape[0]} images, got {tuple(esm.shape)}")
        features = self.trunk(image)
        cells = F.adaptive_avg_pool2d(esm.to(features.dtype), self.esm_grid).flatten(1)
        return self.fc(torch.cat([features, cells], dim=1))


def build_esm_resnet(
    arch: str = "resnet101",
    *,
    outputs: int = 7,
    esm_grid: int = 7,
    pretrained: str = "auto",
    weights_path: str | os.PathLike[str] | None = None,
) -> tuple[ESMResNet, WeightsInfo]:
    """An `ESMResNet` on `arch` (resnet18 or resnet101), ImageNet weights as in `backbones`."""
    if arch not in RESNETS:
        raise ValueError(f"the ESM model is built on {' or '.join(RESNETS)}, not {arch!r}")
    trunk, info = imagenet_model(arch, pretrained, weights_path)
    feature_dim = trunk.fc.in_features
    trunk.fc = nn.Identity()
    return ESMResNet(trunk, feature_dim, outputs=outputs, esm_grid=esm_grid), info


class MapInput(nn.Module):
    """An `ESMResNet` behind one (N, 4, H, W) input: normalised RGB in channels 0-2, the map in channel 3.

    One tensor is what the shared training loop, its augmentation and MLflow's model signature take.
    """

    def __init__(self, net: ESMResNet):
        super().__init__()
        self.net = net

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net(inputs[:, :3], inputs[:, 3:])
