"""Images as tensors: decoding, normalisation, augmentation."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from emo_pipeline.image_emotion.image_data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageMaps,
    ImageTargets,
    augment_batch,
    load_rgb,
)


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    paths = []
    for i, colour in enumerate([(255, 0, 0), (0, 128, 255), (20, 200, 20)]):
        path = tmp_path / f"{i}.jpg"
        Image.new("RGB", (640, 427), colour).save(path, quality=95)
        paths.append(path)
    return paths


def test_images_decode_to_squares_with_imagenet_normalisation(images: list[Path]):
    data = ImageTargets(images, np.eye(3, 7, dtype=np.float32), size=32)
    x, y = data[1]
    assert x.shape == (3, 32, 32) and y.tolist() == [0, 1, 0, 0, 0, 0, 0]
    # Undo the normalisation: the uniform colour comes back (JPEG rounding aside).
    rgb = (x * IMAGENET_STD + IMAGENET_MEAN).mean(dim=(1, 2)) * 255
    assert rgb.tolist() == pytest.approx([0, 128, 255], abs=3)
    assert load_rgb(images[0], 48).shape == (48, 48, 3)


def test_targets_must_match_images(images: list[Path]):
    with pytest.raises(ValueError, match="3 images but 2 targets"):
        ImageTargets(images, np.zeros((2, 7)), size=16)


def test_augmentation_is_seeded_and_keeps_shapes():
    batch = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).view(2, 3, 16, 16)
    first = augment_batch(batch, torch.Generator().manual_seed(4))
    again = augment_batch(batch, torch.Generator().manual_seed(4))
    other = augment_batch(batch, torch.Generator().manual_seed(5))
    assert first.shape == batch.shape
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_resized_crops_cover_at_least_the_asked_share_of_the_picture():
    # Each pixel holds its own column (channel 0) and row (channel 1): a crop's spread of values is the
    # window it was cut from, flipped or not (bilinear resizing reaches the window's edge pixels).
    side, n = 32, 200
    ys, xs = torch.meshgrid(torch.arange(side, dtype=torch.float32), torch.arange(side, dtype=torch.float32),
                            indexing="ij")
    batch = torch.stack([xs, ys, torch.zeros_like(xs)]).expand(n, 3, side, side).contiguous()
    crops = augment_batch(batch, torch.Generator().manual_seed(0), crop_scale=0.5)
    assert crops.shape == batch.shape
    widths = crops[:, 0].amax(dim=(1, 2)) - crops[:, 0].amin(dim=(1, 2)) + 1
    heights = crops[:, 1].amax(dim=(1, 2)) - crops[:, 1].amin(dim=(1, 2)) + 1
    assert crops.min() >= 0 and crops.max() <= side - 1  # inside the picture: no padding
    area = widths * heights / side**2
    assert area.min() >= 0.5 - 2 / side and area.max() <= 1.0 + 1e-5  # rounding of the sides aside
    assert area.min() < 0.6 and (area < 0.95).float().mean() > 0.8  # a range of windows, not the picture
    inside = (widths < side) & (heights < side)  # windows not cut back at the border keep their aspect
    assert ((widths / heights)[inside] - 1).abs().max() <= 1 / 3 + 2 / side
    # Flipped crops run right to left.
    mirrored = crops[:, 0, 0, 0] > crops[:, 0, 0, -1]
    assert 0.3 < mirrored.float().mean() < 0.7
    assert torch.equal(crops, augment_batch(batch, torch.Generator().manual_seed(0), crop_scale=0.5))


def test_maps_are_single_channel_in_unit_range(images: list[Path], tmp_path: Path):
    maps = []
    for i in range(3):
        path = tmp_path / f"map{i}.jpg"
        Image.fromarray(np.full((427, 640), 255 * (i % 2), np.uint8), mode="L").save(path)
        maps.append(path)
    x, esm = ImageMaps(images, maps, size=64)[1]
    assert x.shape == (3, 64, 64) and esm.shape == (1, 64, 64)
    assert float(esm.min()) >= 0.95 and float(esm.max()) <= 1.0
