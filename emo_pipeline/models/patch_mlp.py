"""A network on patch features learned without labels (not a model of the paper): the single-layer
k-means encoder of Coates, Lee and Ng (AISTATS 2011) held as fixed tensors, then one hidden layer.

`PatchEncoder` turns pictures of one side into the triangle activations of their patches summed over
the four quadrants; `PatchMLP` decodes the normalised images every image model is fed back to RGB
values, resizes them to each encoder's side, takes the square roots of the encoders' output (with
`square_roots`), standardises and clips them, and runs the network. Nothing here is trained by
gradient: the whitening and centroids come from k-means on training patches and the network's
weights from `image_emotion.feature_mlp` (`image_emotion.patch_mlp` builds it). One state dict holds
both, so a new image is encoded exactly as the training images were.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from emo_pipeline.models.backbones import IMAGENET_MEAN, IMAGENET_STD

EMOTION_OUTPUTS = 7
# Distances of at most this many (patch, centroid) pairs are held at once (16 MB in float32; at least one
# picture's): smaller blocks stay in cache and ran faster than larger ones.
_PAIRS_AT_ONCE = 1 << 22


def pixels(images: torch.Tensor) -> torch.Tensor:
    """Images normalised with ImageNet statistics (`image_data.normalise`) back to RGB values 0-255."""
    return images * (255 * IMAGENET_STD.to(images.device)) + 255 * IMAGENET_MEAN.to(images.device)


def resized(pictures: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 3, S, S) pictures at `size` x `size` px: bilinear with antialiasing, unchanged when S == size."""
    if pictures.shape[-1] == size and pictures.shape[-2] == size:
        return pictures
    return F.interpolate(pictures, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


class PatchEncoder(nn.Module):
    """(N, 3, size, size) pictures, RGB values 0-255 -> (N, 4 K) quadrant sums of triangle activations.

    Every patch x patch window (stride 1), flattened in (channel, row, column) order, has its mean
    removed and is divided by sqrt(its variance + `contrast_epsilon`), then centred on `mean` and
    whitened (`whitening`); with z_k its distance to centroid k, its activations are max(0, mean(z) - z_k).
    They are summed over the four quadrants of the window positions (rows and columns split at half
    their count, rounded down): top-left, top-right, bottom-left, bottom-right, K values each.
    """

    def __init__(self, size: int, patch: int, centroids: int, contrast_epsilon: float):
        super().__init__()
        if not 1 <= patch < size:
            raise ValueError(f"a patch of {patch} px does not fit a picture of {size} px")
        dims = 3 * patch * patch
        self.size, self.patch, self.contrast_epsilon = size, patch, contrast_epsilon
        self.register_buffer("mean", torch.zeros(dims))
        self.register_buffer("whitening", torch.eye(dims))
        self.register_buffer("centroids", torch.zeros(centroids, dims))

    def forward(self, pictures: torch.Tensor) -> torch.Tensor:
        positions = self.size - self.patch + 1
        rows = max(1, _PAIRS_AT_ONCE // (positions * positions * len(self.centroids)))
        # Differences of squared distances lose too much in bfloat16: the encoder runs in float32.
        with torch.autocast(pictures.device.type, enabled=False):
            return torch.cat([self._encode(chunk.float(), positions) for chunk in pictures.split(rows)])

    def _encode(self, pictures: torch.Tensor, positions: int) -> torch.Tensor:
        dims = self.mean.numel()
        patches = F.unfold(pictures, self.patch).transpose(1, 2).reshape(-1, dims)  # (N positions², dims)
        variance, mean = torch.var_mean(patches, dim=1, correction=0, keepdim=True)
        # Two-dimensional products with the additions folded in (addmm) ran faster here than batched ones.
        normalised = (patches - mean) / torch.sqrt(variance + self.contrast_epsilon)
        whitened = torch.addmm(-(self.mean @ self.whitening), normalised, self.whitening)
        squared = torch.addmm((self.centroids * self.centroids).sum(dim=1), whitened, self.centroids.T, alpha=-2)
        distances = squared.add_((whitened * whitened).sum(dim=1, keepdim=True)).clamp_min_(0).sqrt_()
        mean_distance = distances.mean(dim=1, keepdim=True)
        active = distances.neg_().add_(mean_distance).clamp_min_(0)  # in place: max(0, mean - distance)
        active = active.view(len(pictures), positions, positions, -1)
        half = positions // 2
        quadrants = (active[:, :half, :half], active[:, :half, half:], active[:, half:, :half], active[:, half:, half:])
        return torch.cat([q.sum(dim=(1, 2)) for q in quadrants], dim=1)


class PatchMLP(nn.Module):
    """(N, 3, S, S) images normalised as every image model's input, S = max(`sizes`) -> (N, 7) distribution.

    Each encoder sees the picture resized to its side; their outputs, side by side, are square-rooted
    (with `square_roots`), standardised (`feature_mean`, `feature_scale`), clipped to +-`clip_value` and
    fed to one hidden ReLU layer and a linear layer to the emotion logits, then a softmax. Models saved
    before `square_roots` existed have no such option and take no roots.
    """

    def __init__(self, sizes: Sequence[int], patch_sizes: Sequence[int], centroids: int, hidden: int,
                 contrast_epsilon: float, clip_value: float, square_roots: bool = False):
        super().__init__()
        if len(sizes) != len(patch_sizes) or not sizes:
            raise ValueError("give one patch size per picture size, and at least one size")
        self.encoders = nn.ModuleList(PatchEncoder(size, patch, centroids, contrast_epsilon)
                                      for size, patch in zip(sizes, patch_sizes))
        features = 4 * centroids * len(self.encoders)
        self.clip_value = clip_value
        self.square_roots = square_roots
        self.register_buffer("feature_mean", torch.zeros(features))
        self.register_buffer("feature_scale", torch.ones(features))
        self.hidden = nn.Linear(features, hidden)
        self.output = nn.Linear(hidden, EMOTION_OUTPUTS)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The encoders' output side by side, before standardising: (N, 4 K per encoder)."""
        rgb = pixels(images.float())
        return torch.cat([encoder(resized(rgb, encoder.size)) for encoder in self.encoders], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # In float32 under any autocast: the network is small, and it should give what it was fitted to give.
        with torch.autocast(images.device.type, enabled=False):
            features = self.features(images)
            if self.square_roots:
                features = features.sqrt()
            standard = (features - self.feature_mean) / self.feature_scale
            hidden = torch.relu(self.hidden(standard.clamp(-self.clip_value, self.clip_value)))
            return torch.softmax(self.output(hidden), dim=1)
