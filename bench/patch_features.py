"""Benchmark: learned patch features as a fifth member of `evaluate`'s stack, on a real Emotion6.

    python bench/patch_features.py --emotion6 ../shared/datasets/Emotion6 [--seeds 0 1 2]
                                   [--members feature_ridge feature_gbm feature_mlp compact_cnn] [--workers 2]

For each split seed (the split `evaluate` makes):
1. fits `--members` and `patch_mlp` (the patch encoders learned from the train split's pictures, then
   the feature network on their columns; `image_emotion.patch_mlp`, default `PatchMLPConfig`) exactly as
   `emo-pipeline evaluate` does (`multi_split.model_fitter`, demo profile);
2. weights the members on validation (`fit_ensemble`) without and with `patch_mlp`.
Prints, per seed and as means, the validation and test KL, Chebyshev and BC of the network alone and of
both stacks, the stacks' members, and the seconds each step took. The test split takes part in no
choice; its figures are shown only.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pandas as pd

from emo_pipeline.core import metrics
from emo_pipeline.core.emotions import PROB_COLUMNS
from emo_pipeline.core.profiles import EMOTION_MODELS, feature_config
from emo_pipeline.core.splits import stratified_split
from emo_pipeline.image_emotion.ensemble import fit_ensemble
from emo_pipeline.image_emotion.features import feature_table
from emo_pipeline.image_emotion.multi_split import PATCH_MLP, model_fitter
from emo_pipeline.sources.emotion6 import read_emotion6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emotion6", default=os.environ.get("EMO_EMOTION6_DIR"), required=False)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--members", nargs="+", default=["feature_ridge", "feature_gbm", "feature_mlp", "compact_cnn"])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    if not args.emotion6:
        parser.error("name an Emotion6 folder: --emotion6 DIR or EMO_EMOTION6_DIR")
    began = time.perf_counter()
    labels = read_emotion6(Path(args.emotion6).expanduser()).labels
    features = feature_table(zip(labels["image_key"], labels["image_path"]), feature_config("demo"),
                             workers=args.workers).features
    fit = model_fitter(labels, features=features, torch_models=EMOTION_MODELS["demo"])
    rows = []
    for seed in args.seeds:
        split = stratified_split(labels["image_key"], labels["dominant_emotion"], seed=seed)
        predictions: dict[str, pd.DataFrame] = {}
        for name in [*args.members, PATCH_MLP]:
            step = time.perf_counter()
            predictions[name], note = fit(name, split)
            print(f"seed {seed}: {name} in {time.perf_counter() - step:.0f} s{note}", flush=True)
        results = [(f"{PATCH_MLP} alone", predictions[PATCH_MLP], "its floor chosen on validation")]
        for what, members in (("stack", args.members), (f"stack + {PATCH_MLP}", [*args.members, PATCH_MLP])):
            ensemble = fit_ensemble(labels, {m: predictions[m] for m in members})
            weights = ", ".join(f"{m} {w:.2f}" for m, w in zip(ensemble.members, ensemble.weights))
            results.append((what, ensemble.predictions, weights))
        for what, predicted, note in results:
            scored = metrics.split_metrics(predicted[["image_key", "split", *PROB_COLUMNS]], labels)
            val, test = scored["val"], scored["test"]
            rows.append({"seed": seed, "model": what, "val_kl": val["kl"], "test_kl": test["kl"],
                         "test_chebyshev": test["chebyshev"], "test_bc": test["bhattacharyya"]})
            print(f"seed {seed}: {what:<20} val KL {val['kl']:.4f}  test KL {test['kl']:.4f}  Chebyshev "
                  f"{test['chebyshev']:.4f}  BC {test['bhattacharyya']:.4f}  ({note})", flush=True)
    table = pd.DataFrame(rows)
    print(f"\nmeans over split seeds {' '.join(map(str, args.seeds))}:")
    print(table.groupby("model", sort=False)[["val_kl", "test_kl", "test_chebyshev", "test_bc"]].mean()
          .to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"\nin {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
