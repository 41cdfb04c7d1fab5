"""Benchmark: images per second of dataset B's inference path against its ceiling and a naive loop.

    python bench/inference_throughput.py [--images 256] [--size 224] [--model resnet18] [--repeats 3]
                                         [--workers 1] [--batch 32] [--device auto] [--source DIR]

Same model, weights (random init, seeded) and image size, in one process:

(a) pipeline: `emo_pipeline.image_emotion.inference` as dataset B uses it: DataLoader worker processes decode and
    resize, uint8 batches, normalised channels-last on the device, `inference_mode` (bf16 on CUDA);
(b) ceiling: the forward pass alone on the same images already decoded into memory, channels-last;
(c) naive: for each file, PIL open + resize, to tensor, the model on one image at a time.

Images: the real Emotion6 when found (`--source`, `$EMO_EMOTION6_DIR`, or ../shared/datasets/Emotion6),
else the synthetic world's Emotion6 written to a temporary folder. Each variant runs `--repeats`
times after a warm-up; the median is reported, with the ratios a/b and a/c.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from emo_pipeline.core.home import PROJECT_ROOT
from emo_pipeline.image_emotion.image_data import load_rgb, normalise
from emo_pipeline.image_emotion.inference import forward_batches, image_loader, prepare
from emo_pipeline.models import build_model


def find_images(source: str | None, count: int) -> list[str]:
    candidates = [source, os.environ.get("EMO_EMOTION6_DIR"), str(PROJECT_ROOT.parent / "shared/datasets/Emotion6")]
    for folder in filter(None, candidates):
        files = sorted(Path(folder).glob("images/*/*.jpg"))
        if files:
            print(f"images: {min(count, len(files))} of {folder}")
            return [str(p) for p in files[:count]]
    from emo_pipeline.synthetic import write_world

    out = Path(tempfile.mkdtemp(prefix="emo_bench_"))
    write_world(out, seed=0, scale="demo", progress=lambda line: None)
    files = sorted((out / "Emotion6").glob("images/*/*.jpg"))
    print(f"images: {min(count, len(files))} synthetic (no Emotion6 found)")
    return [str(p) for p in files[:count]]


def timed(fn, repeats: int) -> float:
    fn()  # warm-up: first-call allocations, worker start-up paths, caches
    runs = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - began)
    return statistics.median(runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="decoding processes of the pipeline's loader")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--source", help="an Emotion6-layout folder (images/<keyword>/<n>.jpg)")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    paths = find_images(args.source, args.images)
    torch.manual_seed(0)
    model, _ = build_model(args.model, pretrained="none")
    model = prepare(model, device)
    print(f"model {args.model} at {args.size} px on {device}; torch threads {torch.get_num_threads()}, "
          f"batch {args.batch}, loader workers {args.workers}, {len(paths)} images, median of {args.repeats}")

    def pipeline() -> None:
        loader = image_loader(paths, args.size, batch_size=args.batch, workers=args.workers, device=device)
        forward_batches(model, loader, device)

    decoded = torch.from_numpy(np.stack([load_rgb(p, args.size) for p in paths]))
    batches = [normalise(decoded[i:i + args.batch]).to(device) for i in range(0, len(decoded), args.batch)]
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else torch.autocast("cpu", enabled=False))

    @torch.inference_mode()
    def ceiling() -> None:
        with autocast:
            for batch in batches:
                model(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()

    @torch.inference_mode()
    def naive() -> None:
        for path in paths:
            with Image.open(path) as image:
                array = np.asarray(image.convert("RGB").resize((args.size, args.size), Image.Resampling.BILINEAR))
            x = normalise(torch.from_numpy(array.copy())).unsqueeze(0).to(device)
            model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()

    rates = {}
    for name, fn in (("a pipeline", pipeline), ("b ceiling", ceiling), ("c naive", naive)):
        seconds = timed(fn, args.repeats)
        rates[name] = len(paths) / seconds
        print(f"  {name:<11} {rates[name]:8.1f} images/s   ({seconds:.2f} s)")
    a, b, c = rates["a pipeline"], rates["b ceiling"], rates["c naive"]
    print(f"  a / b = {a / b:.2f}   (goal >= 0.85)")
    print(f"  a / c = {a / c:.2f}   (goal >= {3.0 if device.type == 'cuda' else 1.3})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
