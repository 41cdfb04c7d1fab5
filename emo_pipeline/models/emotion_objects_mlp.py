"""The paper's emotion -> objects network (§3.6.2): a 7-way distribution in, one sigmoid score per
object of the vocabulary out."""

from __future__ import annotations

import torch
from torch import nn

EMOTION_INPUTS = 7


class EmotionObjectMLP(nn.Module):
    """The paper's network: FC(7,500)-ReLU-Dropout-FC(500,2000)-ReLU-Dropout-FC(2000,1500)-ReLU-FC(1500,N)-Sigmoid.

    The paper's N is 1,500 (its last layer is FC(1500, 1500)); here N is the vocabulary's size, 1,500 in
    the `paper` profile.
    """

    def __init__(self, n_objects: int, hidden: tuple[int, int, int] = (500, 2000, 1500), dropout: float = 0.5):
        super().__init__()
        a, b, c = hidden
        self.layers = nn.Sequential(
            nn.Linear(EMOTION_INPUTS, a), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(b, c), nn.ReLU(),
            nn.Linear(c, n_objects), nn.Sigmoid())

    def forward(self, distribution: torch.Tensor) -> torch.Tensor:
        return self.layers(distribution)

    @torch.no_grad()
    def start_outputs_at(self, target_mean: torch.Tensor) -> None:
        """Set the last layer's bias to the logit of each object's mean target: the untrained network then
        scores every object near its training mean (not near 0.5), and training has only to learn how an
        emotion moves the scores away from there."""
        p = torch.as_tensor(target_mean, dtype=torch.float32).clamp(1e-4, 1 - 1e-4)
        self.layers[-2].bias.copy_(torch.log(p / (1 - p)))
