"""Images as torch datasets for training and inference.

Training images are small here (32-224 px), so each dataset decodes every image once, in parallel
threads, into one uint8 tensor held in memory (1980 images at 112 px are 75 MB); epochs then cost only
the forward and backward passes. JPEGs are decoded at reduced scale (`draft`) when the target is
much smaller than the file, which is several times faster than a full decode.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from emo_pipeline.models.backbones import IMAGENET_MEAN, IMAGENET_STD


def load_rgb(path: str | Path, size: int) -> np.ndarray:
    """An image as a (size, size, 3) uint8 array, squashed to a square (the paper resizes to "a standard
    32x32 dimension" and says nothing of the aspect ratio; squashing keeps the whole picture)."""
    with Image.open(path) as image:
        image.draft("RGB", (size * 2, size * 2))  # JPEG: decode at the smallest scale still >= 2x target
        return np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))


def load_gray(path: str | Path, size: int) -> np.ndarray:
    with Image.open(path) as image:
        image.draft("L", (size * 2, size * 2))
        return np.asarray(image.convert("L").resize((size, size), Image.Resampling.BILINEAR))


def decode_all(paths: Sequence[str | Path], loader: Callable[[str | Path, int], np.ndarray], size: int,
                workers: int) -> torch.Tensor:
    # PIL releases the GIL while decoding, so threads use every core without pickling images around.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        arrays = list(pool.map(lambda p: loader(p, size), paths))
    return torch.from_numpy(np.stack(arrays)) if arrays else torch.empty((0, size, size), dtype=torch.uint8)


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) or (H, W, 3) -> float (N, 3, H, W) normalised with ImageNet statistics."""
    batched = images.dim() == 4
    x = images if batched else images.unsqueeze(0)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    x = (x - IMAGENET_MEAN.to(x.device)) / IMAGENET_STD.to(x.device)
    return x if batched else x[0]


def augment_batch(images: torch.Tensor, generator: torch.Generator, crop_scale: float = 0.0) -> torch.Tensor:
    """Random horizontal flips, then per image either a shift by up to 1/8 of the side (reflect
    padding) or, with `crop_scale` > 0, a random resized crop: a window covering between `crop_scale`
    and all of the picture's area, of aspect ratio 3:4 to 4:3, scaled back to the full side.

    Applied by the training loop with its own generator, whose state is checkpointed, so that a
    resumed run draws the same augmentations as an uninterrupted one.
    """
    n, _, side, _ = images.shape
    flip = torch.rand(n, generator=generator) < 0.5
    images = torch.where(flip.view(n, 1, 1, 1), images.flip(-1), images)
    if crop_scale > 0:
        return _resized_crops(images, generator, crop_scale)
    pad = max(1, side // 8)
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad), mode="reflect")
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator).tolist()
    return torch.stack([padded[i, :, dy:dy + side, dx:dx + side] for i, (dx, dy) in enumerate(offsets)])


def _resized_crops(images: torch.Tensor, generator: torch.Generator, crop_scale: float) -> torch.Tensor:
    n, _, side, _ = images.shape
    area = torch.empty(n).uniform_(crop_scale, 1.0, generator=generator)
    log_ratio = torch.empty(n).uniform_(math.log(3 / 4), math.log(4 / 3), generator=generator)
    widths = (side * torch.sqrt(area * log_ratio.exp())).round().clamp(1, side).long()
    heights = (side * torch.sqrt(area / log_ratio.exp())).round().clamp(1, side).long()
    corners = torch.rand(n, 2, generator=generator)
    crops = []
    for i in range(n):
        w, h = int(widths[i]), int(heights[i])
        x0, y0 = int(corners[i, 0] * (side - w + 1)), int(corners[i, 1] * (side - h + 1))
        window = images[i:i + 1, :, y0:y0 + h, x0:x0 + w]
        crops.append(torch.nn.functional.interpolate(window, size=(side, side), mode="bilinear", align_corners=False))
    return torch.cat(crops)


class ImageTargets(Dataset):
    """Images (decoded once, in memory) with their targets: a distribution (float) or a class (long)."""

    def __init__(self, paths: Sequence[str | Path], targets: np.ndarray | torch.Tensor, size: int, *,
                 workers: int = 2):
        self.images = decode_all(paths, load_rgb, size, workers)
        self.targets = torch.as_tensor(targets)
        if len(self.targets) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.targets)} targets")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return normalise(self.images[index]), self.targets[index]


class ImageMaps(Dataset):
    """Images with their emotion stimuli maps (EmotionROI), both at `size`; maps in [0, 1], (1, H, W)."""

    def __init__(self, image_paths: Sequence[str | Path], map_paths: Sequence[str | Path], size: int, *,
                 workers: int = 2):
        if len(image_paths) != len(map_paths):
            raise ValueError(f"{len(image_paths)} images but {len(map_paths)} maps")
        self.images = decode_all(image_paths, load_rgb, size, workers)
        self.maps = decode_all(map_paths, load_gray, size, workers)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return normalise(self.images[index]), self.maps[index].unsqueeze(0).float().div(255.0)


class MirroredPairs(Dataset):
    """A dataset of (image, map) pairs followed by their mirror images, image and map flipped together.

    For dense targets such as stimuli maps, where the training loop's input-only augmentation would
    move the picture away from its map; deterministic, so resumed runs see the same data.
    """

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return 2 * len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self.base)
        if not 0 <= index < 2 * n:
            raise IndexError(index)
        image, target = self.base[index % n]
        return (image, target) if index < n else (image.flip(-1), target.flip(-1))


class ImagesWithMaps(Dataset):
    """Images with one extra channel, a map in [0, 1], and their targets: items are (4, S, S) inputs.

    Channels 0-2 are the normalised RGB image, channel 3 the map resized (bilinear) to the image's side,
    so batch augmentation shifts and flips picture and map together. Maps are kept at their own size
    and resized per item: at 224 px a float copy of every map would cost 200 kB an image.
    """

    def __init__(self, paths: Sequence[str | Path], maps: torch.Tensor, targets: np.ndarray | torch.Tensor,
                 size: int, *, workers: int = 2):
        self.images = decode_all(paths, load_rgb, size, workers)
        self.maps = torch.as_tensor(maps, dtype=torch.float32)
        self.targets = torch.as_tensor(targets)
        self.size = size
        if self.maps.dim() != 4 or self.maps.shape[1] != 1:
            raise ValueError(f"maps must be (N, 1, H, W), got {tuple(self.maps.shape)}")
        if not len(self.images) == len(self.maps) == len(self.targets):
            raise ValueError(f"{len(self.images)} images, {len(self.maps)} maps, {len(self.targets)} targets")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        esm = self.maps[index:index + 1]
        if esm.shape[-1] != self.size or esm.shape[-2] != self.size:
            esm = torch.nn.functional.interpolate(esm, size=(self.size, self.size), mode="bilinear",
                                                  align_corners=False)
        return torch.cat([normalise(self.images[index]), esm[0]]), self.targets[index]
