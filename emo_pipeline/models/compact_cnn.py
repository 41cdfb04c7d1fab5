"""A compact from-scratch CNN for emotion distributions: four batch-normalised conv blocks, global
average pooling and one linear layer.

Not a model of the paper. Where the small CNN (`small_cnn.py`, the paper's layout) flattens its last
feature map into a 512-wide fully connected layer (8.4 million weights at 64 px, for 1,386 training
images), this one averages it away, so the model has about 1.2 million weights whatever the input
side and trains at 64 px on a CPU in minutes.
"""

from __future__ import annotations

import torch
from torch import nn


def _block(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, padding=1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU(inplace=True),
        nn.Conv2d(outputs, outputs, 3, padding=1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU(inplace=True),
    )


class CompactCNN(nn.Module):
    """`outputs` scores per image from a (N, 3, S, S) batch, S >= 8 (three 2x2 poolings).

    distribution=True ends in a softmax (a distribution); False returns logits (a classifier).
    """

    def __init__(self, outputs: int = 7, *, distribution: bool = True, width: int = 32, dropout: float = 0.3):
        super().__init__()
        self.distribution = distribution
        w = width
        self.features = nn.Sequential(
            _block(3, w), nn.MaxPool2d(2), _block(w, 2 * w), nn.MaxPool2d(2),
            _block(2 * w, 4 * w), nn.MaxPool2d(2), _block(4 * w, 8 * w),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(8 * w, outputs))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.features(images)
        # Under bf16 autocast (TrainConfig.precision) the convolutions run in bfloat16; the linear layer
        # and the softmax stay float32, so the distribution keeps float32 precision for the loss.
        with torch.autocast(images.device.type, enabled=False):
            scores = self.head(features.float())
        return torch.softmax(scores, dim=1) if self.distribution else scores
