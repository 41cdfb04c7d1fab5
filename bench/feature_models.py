"""Benchmark: the feature families' cost per image and the feature models on a real Emotion6.

    python bench/feature_models.py --emotion6 ../shared/datasets/Emotion6 [--seeds 0 1 2] [--workers 2]
                                   [--timing-images 50]

1. Times `image_features` in this process on `--timing-images` images spread over the folder: the
   paper's two families (GLCM + CIECAM02) and every family (`features.FAMILIES`).
2. Computes every family for every image with `feature_table` (`--workers` processes), once.
3. For each split seed (`core.splits.stratified_split`, as `emotion6_split` makes it): the train mean,
   `feature_ridge` on the paper's families (what the asset trains) and `feature_gbm` on every family,
   each fitted on train and chosen on validation with the settings' defaults; prints their test
   metrics per seed and the mean over the seeds, and the wall time of each part.
"""

from __future__ import annotations

import argparse
import os
import time

import pandas as pd

from emo_pipeline.core.splits import stratified_split
from emo_pipeline.image_emotion.feature_gbm import fit_feature_gbm
from emo_pipeline.image_emotion.feature_ridge import fit_feature_ridge
from emo_pipeline.image_emotion.features import (
    FAMILIES,
    PAPER_FAMILIES,
    FeatureConfig,
    columns_of,
    feature_table,
    image_features,
)
from emo_pipeline.sources.emotion6 import read_emotion6

SHOWN = ("chebyshev", "bhattacharyya", "kl", "mse", "top1")


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

    rows = []
    for seed in args.seeds:
        split = stratified_split(labels["image_key"], labels["dominant_emotion"], seed=seed)
        step = time.perf_counter()
        ridge = fit_feature_ridge(table[["image_key", *paper]], labels, split)
        ridge_seconds = time.perf_counter() - step
        step = time.perf_counter()
        gbm = fit_feature_gbm(table, labels, split)
        gbm_seconds = time.perf_counter() - step
        rows.append({"seed": seed, "model": "train_mean", "seconds": 0.0, **gbm.scores["test_train_mean"]})
        rows.append({"seed": seed, "model": "feature_ridge", "seconds": ridge_seconds, **ridge.scores["test"]})
        rows.append({"seed": seed, "model": "feature_gbm", "seconds": gbm_seconds, **gbm.scores["test"]})
        print(f"seed {seed}: feature_gbm iterations {gbm.iterations}, floor {gbm.clip:g}, val KL "
              f"{gbm.scores['val']['kl']:.4f} (ridge {ridge.scores['val']['kl']:.4f}, train mean "
              f"{gbm.scores['val_train_mean']['kl']:.4f})")
    results = pd.DataFrame(rows)
    print("\ntest split, per seed:")
    print(results[["seed", "model", *SHOWN, "seconds"]].round(4).to_string(index=False))
    means = results.groupby("model", sort=False)[[*SHOWN, "seconds"]].mean()
    print(f"\ntest split, mean over seeds {', '.join(map(str, args.seeds))}:")
    print(means.round(4).to_string())
    print(f"\nwall time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
