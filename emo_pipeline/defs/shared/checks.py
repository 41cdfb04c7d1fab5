"""Check factories shared by the stages.

`predictions_cover_split`: a model's predictions table has one row per image of the split, in that
image's split, and every row is a prediction (a distribution, or an emotion for a dominant-emotion
model). The training step knows the table it just wrote, so the check is declared on the asset with
`check_specs` and its result yielded in the same step; it is blocking: a model whose predictions miss
images must not feed the evaluation, the ensemble or dataset B.
"""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd

from emo_pipeline.core.emotions import EMOTIONS, PROB_COLUMNS

DISTRIBUTION_COLUMNS = ("image_key", "split", *PROB_COLUMNS)
COVER_SPLIT = "predictions_cover_split"


def predictions_check_spec(asset: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(COVER_SPLIT, asset=asset, blocking=True, additional_deps=["emotion6_split"],
                             description="every image of emotion6_split has exactly one prediction, in its own "
                                         "split, the columns are as expected, and every row is a prediction "
                                         "(a distribution: non-negative, sums to 1 within 1e-6; or an emotion)")


def predictions_cover_split(asset: str, predictions: pd.DataFrame, split: pd.DataFrame,
                            columns: tuple[str, ...] = DISTRIBUTION_COLUMNS) -> dg.AssetCheckResult:
    """The check's result for `predictions` against `split`; rows are distributions when `columns` holds
    the prob_* columns, else their `predicted` column must be an emotion."""
    columns_ok = tuple(predictions.columns) == tuple(columns)
    merged = split.merge(predictions, on="image_key", how="outer", suffixes=("", "_predicted"), indicator=True)
    unmatched = int((merged["_merge"] != "both").sum())
    wrong_split = int((merged["_merge"].eq("both") & (merged["split"] != merged["split_predicted"])).sum())
    duplicated = int(predictions["image_key"].duplicated().sum())
    if set(PROB_COLUMNS) <= set(columns):
        values = predictions[list(PROB_COLUMNS)].to_numpy(dtype=float) if columns_ok else np.full((1, 1), np.nan)
        invalid = int((~np.isfinite(values).all(axis=1) | (values < 0).any(axis=1)
                       | (np.abs(values.sum(axis=1) - 1) > 1e-6)).sum())
        said = "rows that are not distributions"
    else:
        invalid = (int((~predictions["predicted"].isin(EMOTIONS)).sum()) if "predicted" in predictions
                   else len(predictions))
        said = "predictions that are not emotions"
    passed = columns_ok and unmatched == wrong_split == duplicated == invalid == 0
    return dg.AssetCheckResult(
        asset_key=asset, check_name=COVER_SPLIT, passed=passed, metadata={"images": len(predictions)},
        description=(f"columns {'as expected' if columns_ok else list(predictions.columns)}; {unmatched} images in "
                     f"one table only, {wrong_split} in another split, {duplicated} duplicated, {invalid} {said}"))
