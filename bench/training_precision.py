"""Benchmark: training steps per second of an image model in fp32, channels-last and bf16 autocast.

    python bench/training_precision.py [--model compact_cnn] [--size 64] [--batch 32] [--steps 12]
                                       [--repeats 3] [--threads N]

The settings `TrainConfig.precision` and `TrainConfig.channels_last` choose between these four ways of
running the training loop's own epoch (`core.train_loop._run_epoch`: forward, the project's KL loss,
backward, AdamW step) over the same model, seeded, on random pictures, in one process:

(a) fp32, NCHW: the loop's default;
(b) fp32, channels-last;
(c) bf16 autocast, NCHW;
(d) bf16 autocast, channels-last: what `precision: auto` and `channels_last: true` give where the CPU has
    AVX-512 bf16 (the compact CNN of the demo profile).

Each variant runs an epoch of `--steps` batches `--repeats` times after a warm-up epoch; the median seconds per step is
reported with the ratio to (a). Whether this CPU computes bf16 natively (`native_bf16`) is printed:
without it bf16 is emulated, and slower than fp32.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

# The loop's epoch, private to it: timing it measures exactly what training runs.
from emo_pipeline.core.train_loop import _run_epoch, native_bf16
from emo_pipeline.image_emotion.training import kl_loss
from emo_pipeline.models import build_model


def step_seconds(model_name: str, size: int, batch: int, steps: int, repeats: int, *, channels_last: bool,
                 bf16: bool) -> float:
    torch.manual_seed(0)
    model, _ = build_model(model_name, pretrained="none", input_size=size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    pictures = TensorDataset(torch.randn(batch * steps, 3, size, size),
                             torch.softmax(torch.randn(batch * steps, 7), dim=1))
    loader = DataLoader(pictures, batch_size=batch)
    if channels_last:  # as `train` does before its first epoch
        model.to(memory_format=torch.channels_last)

    def epoch() -> None:
        _run_epoch(model, loader, kl_loss, torch.device("cpu"), optimizer, bf16=bf16, channels_last=channels_last)

    epoch()  # warm-up: oneDNN picks and caches its kernels on the first calls
    runs = []
    for _ in range(repeats):
        began = time.perf_counter()
        epoch()
        runs.append((time.perf_counter() - began) / steps)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="compact_cnn")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{args.model} at {args.size} px, batch {args.batch}, {torch.get_num_threads()} threads; "
          f"native bf16 on this CPU: {native_bf16('cpu')}")
    variants = {"(a) fp32, NCHW": (False, False), "(b) fp32, channels-last": (True, False),
                "(c) bf16, NCHW": (False, True), "(d) bf16, channels-last": (True, True)}
    baseline = None
    for label, (channels_last, bf16) in variants.items():
        seconds = step_seconds(args.model, args.size, args.batch, args.steps, args.repeats,
                               channels_last=channels_last, bf16=bf16)
        baseline = baseline or seconds
        print(f"{label:<26} {1000 * seconds:7.1f} ms/step (median of {args.repeats})  "
              f"{baseline / seconds:4.2f}x against (a)")


if __name__ == "__main__":
    main()
