"""Benchmark: the feature families' cost per image and the feature models on a real Emotion6.

    python bench/feature_models.py --emotion6 ../shared/datasets/Emotion6 [--seeds 0 1 2] [--workers 2]
                                   [--timing-images 50]

1. Times `image_features` in this process on `--timing-images` images spread over the folder: the
   paper's two families (GLCM + CIECAM02) and every family (`features.FAMILIES`).
2. Computes every family for every image with `feature_table` (`--workers` processes), once.
3. Fits the feature models on each split seed with `multi_split.evaluate_splits` (what `emo-pipeline
   evaluate --models feature_ridge feature_gbm feature_mlp` runs): `feature_ridge` on the paper's
   families (what the asset trains), `feature_gbm` and `feature_mlp` on every family, each fitted on
   train and chosen on validation with the settings' defaults; prints their test metrics per seed and
   their mean and spread beside the train mean, with each fit's seconds and the wall time.
"""

from __future__ import annotations

import argparse
import os
import time

from emo_pipeline.image_emotion.features import (
    FAMILIES,
    PAPER_FAMILIES,
    FeatureConfig,
    columns_of,
    feature_table,
    image_features,
)
from emo_pipeline.image_emotion.multi_split import FEATURE_MODELS, evaluate_splits, summary_text
from emo_pipeline.sources.emotion6 import read_emotion6


def per_image_ms(paths: list[str], config: FeatureConfig) -> float:
    image_features(paths[0], config)  # the first call imports colour-science and scikit-image
    began = time.perf_counter()
    for path in paths:
        image_features(path, config)
    return (time.perf_counter() - began) / len(paths) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emotion6", default=os.environ.get("EMO_EMOTION6_DIR", "../shared/datasets/Emotion6"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--timing-images", type=int, default=50)
    args = parser.parse_args()
    began = time.perf_counter()

    labels = read_emotion6(args.emotion6, check_images=False).labels
    paths = labels["image_path"].tolist()
    sample = paths[:: max(1, len(paths) // args.timing_images)][: args.timing_images]
    paper_ms = per_image_ms(sample, FeatureConfig())
    all_ms = per_image_ms(sample, FeatureConfig(families=FAMILIES))
    print(f"features per image, one process, {len(sample)} images: paper's families {paper_ms:.1f} ms, "
          f"every family {all_ms:.1f} ms")

    step = time.perf_counter()
    table = feature_table(zip(labels["image_key"], labels["image_path"]), FeatureConfig(families=FAMILIES),
                          workers=args.workers).features
    columns = [c for c in table.columns if c != "image_key"]
    paper = columns_of(columns, PAPER_FAMILIES)
    print(f"feature table: {len(table)} images x {len(columns)} features ({len(paper)} the paper's) "
          f"in {time.perf_counter() - step:.1f} s")

    step = time.perf_counter()
    result = evaluate_splits(labels, args.seeds, FEATURE_MODELS, features=table)
    print(f"\ntest split, mean +- standard deviation over split seeds {' '.join(map(str, args.seeds))} "
          f"({time.perf_counter() - step:.0f} s):")
    print(summary_text(result.summary))
    print(f"\nwall time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
