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


def test_maps_are_single_channel_in_unit_range(images: list[Path], tmp_path: Path):
    maps = []
    for i in range(3):
        path = tmp_path / f"map{i}.jpg"
        Image.fromarray(np.full((427, 640), 255 * (i % 2), np.uint8), mode="L").save(path)
        maps.append(path)
    x, esm = ImageMaps(images, maps, size=64)[1]
    assert x.shape == (3, 64, 64) and esm.shape == (1, 64, 64)
    assert float(esm.min()) >= 0.95 and float(esm.max()) <= 1.0
