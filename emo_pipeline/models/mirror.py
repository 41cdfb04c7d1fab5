"""Test-time mirror averaging, a wrapper any image -> (N, K) model can be served behind."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class MirrorAveraged(nn.Module):
    """`model`'s output averaged over each image and its horizontal mirror (test-time augmentation):
    the prediction of an image and of its mirror image are then the same."""

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (self.model(images) + self.model(images.flip(-1))) / 2
