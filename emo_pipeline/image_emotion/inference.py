"""Batched inference over image files: the loader and the forward pass used for new images.

Training decodes a few thousand small images once into memory (`image_data`); inference meets
100,000 Visual Genome pictures, so here images are decoded in DataLoader worker processes while the
model runs, moved as uint8 (a quarter of the float bytes) into pinned memory, and normalised on the
device. The normalised batch comes out channels-last (NHWC memory), which convolutions run fastest
on, on the CPU as on a GPU. On CUDA the forward pass runs under bf16 autocast.

A file that cannot be decoded does not stop the run: its row is marked unreadable and the others go on.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from emo_pipeline.image_emotion.image_data import load_rgb, normalise

# What PIL raises for missing or damaged files, and for images over its decompression-bomb limit.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def unreadable_reason(path: str | Path) -> str:
    """Why `path` cannot be decoded, in a few words (for the files `ImageFiles` marked unreadable)."""
    path = Path(path)
    if not path.exists():
        return "no such file"
    if path.is_dir():
        return "a folder, not a file"
    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    try:
        load_rgb(path, 8)
    except Image.DecompressionBombError as error:
        return f"too many pixels to decode safely ({error})"
    except Image.UnidentifiedImageError:
        return "not in an image format PIL reads"
    except _DECODE_ERRORS as error:
        return f"damaged image ({type(error).__name__}: {error})"
    return "could not be read when predicted (it reads now: was it being written?)"


class ImageFiles(Dataset):
    """Items are (uint8 (S, S, 3) image, readable flag); an unreadable file gives zeros and False."""

    def __init__(self, paths: Sequence[str | Path], size: int):
        self.paths = [str(p) for p in paths]
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, bool]:
        try:
            return torch.from_numpy(np.array(load_rgb(self.paths[index], self.size))), True
        except _DECODE_ERRORS:
            return torch.zeros((self.size, self.size, 3), dtype=torch.uint8), False


def image_loader(paths: Sequence[str | Path], size: int, *, batch_size: int = 64, workers: int = 2,
                 device: torch.device | str = "cpu") -> DataLoader:
    """Batches of (uint8 NHWC images, readable flags) decoded by `workers` processes, in input order."""
    pin = torch.device(device).type == "cuda"
    # In a step process of Dagster's forkserver executor, multiprocessing starts processes through a
    # forkserver of its own, where each worker imports torch and this package again: about 10 s per
    # loader on two busy cores. A fork of this process already holds them (0.4 s).
    context = "fork" if workers and sys.platform.startswith("linux") else None
    return DataLoader(ImageFiles(paths, size), batch_size=batch_size, num_workers=workers, pin_memory=pin,
                      persistent_workers=False, prefetch_factor=4 if workers else None,
                      multiprocessing_context=context)


def prepare(model: nn.Module, device: torch.device | str) -> nn.Module:
    """The model in eval mode on `device` with channels-last weights."""
    return model.eval().to(torch.device(device), memory_format=torch.channels_last)


@torch.inference_mode()
def forward_batches(forward: Callable[[torch.Tensor], torch.Tensor], loader: DataLoader,
                    device: torch.device | str = "cpu",
                    progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`forward` on every batch of `loader`: (outputs as float64 (N, K), readable flags (N,))."""
    device = torch.device(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast(
        "cpu", enabled=False)
    outputs, flags, done = [], [], 0
    total = len(loader.dataset)
    for images, readable in loader:
        inputs = normalise(images.to(device, non_blocking=True))  # NHWC uint8 -> channels-last float
        with autocast:
            outputs.append(forward(inputs).float().cpu())
        flags.append(torch.as_tensor(readable, dtype=torch.bool))
        done += len(images)
        if progress is not None:
            progress(done, total)
    if not outputs:
        return np.zeros((0, 0)), np.zeros(0, dtype=bool)
    return torch.cat(outputs).double().numpy(), torch.cat(flags).numpy()
