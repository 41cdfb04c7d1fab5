"""The paper's small CNN for 32x32 RGB images: 4 conv layers, ReLU, dropout 0.2, two FC layers.

Two 3x3 conv pairs (32 then 64 channels), each pair followed by 2x2 max pooling and dropout, then a
512-unit fully connected layer and the output layer. It has no pretrained weights: it is always
trained from scratch.
"""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """`outputs` scores per image from a (N, 3, 32, 32) batch.

    distribution=True ends in a softmax (the 7-way emotion distribution, trained with MSE);
    distribution=False returns logits (the dominant-emotion classifier, for cross-entropy).
    """

    def __init__(self, outputs: int = 7, *, distribution: bool, input_size: int = 32, dropout: float = 0.2):
        super().__init__()
        if input_size % 4:
            raise ValueError(f"input_size must be a multiple of 4 (two 2x2 poolings), not {input_size}")
        self.input_size = input_size
        self.distribution = distribution
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(2), nn.Dropout(dropout),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(2), nn.Dropout(dropout),
        )
        side = input_size // 4
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * side * side, 512), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(512, outputs),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-2:] != (self.input_size, self.input_size):
            # The flattened size is fixed by the input size; say so instead of a matmul shape error.
            raise ValueError(f"SmallCNN takes {self.input_size}x{self.input_size} images, got {tuple(images.shape)}")
        scores = self.classifier(self.features(images))
        return torch.softmax(scores, dim=1) if self.distribution else scores
