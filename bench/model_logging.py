"""Benchmark: registering a torch model of the model store in MLflow, with and without its signature given.

    python bench/model_logging.py [--models vgg19_bn:224 resnet101:224 compact_cnn:64] [--repeats 3]

For each model (built untrained, saved to a temporary model store): `log_stored_torch_model` into a
temporary MLflow store, `--repeats` times each way, the two ways interleaved:
- `inferred`: no model in memory, so MLflow loads the logged files once to infer the signature from
  the input example, then once more to check the example against the logged model;
- `in memory`: the signature from the model the caller holds (what `TrainingRun.publish_torch` does), so
  the files are loaded once, for the check.
Prints each run's seconds, the medians and their ratio.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # before MLflow is imported

from emo_pipeline.models import build_model
from emo_pipeline.storage.mlflow_models import log_stored_torch_model
from emo_pipeline.storage.model_store import ModelCard, save_torch_model
from emo_pipeline.storage.tracking import mlflow_run


def time_logging(architecture: str, size: int, repeats: int, folder: Path) -> dict[str, list[float]]:
    model = build_model(architecture, pretrained="none")[0].eval()
    store = folder / "models"
    save_torch_model(store, ModelCard(name=architecture, kind="image", architecture=architecture, size=size), model)
    example = np.zeros((2, 3, size, size), np.float32)
    seconds: dict[str, list[float]] = {"inferred": [], "in memory": []}
    for _ in range(repeats):
        for way, given in (("inferred", None), ("in memory", model)):
            with mlflow_run(folder / "mlflow", "bench", architecture, {}):
                began = time.perf_counter()
                log_stored_torch_model(store, architecture, example, f"{architecture}_model", model=given)
                seconds[way].append(time.perf_counter() - began)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vgg19_bn:224", "resnet101:224", "compact_cnn:64"],
                        metavar="ARCH:SIZE")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    print(f"{'model':<22}{'inferred s (median)':>24}{'in memory s (median)':>24}{'ratio':>8}")
    for item in args.models:
        architecture, size = item.split(":")
        with tempfile.TemporaryDirectory(prefix="model-logging-") as folder:
            seconds = time_logging(architecture, int(size), args.repeats, Path(folder))
        inferred, in_memory = (statistics.median(seconds[w]) for w in ("inferred", "in memory"))
        runs = {w: " ".join(f"{s:.1f}" for s in seconds[w]) for w in seconds}
        print(f"{item:<22}{inferred:>24.2f}{in_memory:>24.2f}{inferred / in_memory:>7.2f}x"
              f"   (runs: {runs['inferred']} / {runs['in memory']})", flush=True)


if __name__ == "__main__":
    main()
