"""Ranking metrics for ranked object lists against each image's true objects (binary relevance).

For one image with true object set T and ranked list r_1, r_2, ...:

- precision@k = |{r_1..r_k} ∩ T| / k
- recall@k    = |{r_1..r_k} ∩ T| / |T|
- nDCG@k      = DCG@k / IDCG@k with DCG@k = sum_{i<=k, r_i in T} 1 / log2(i + 1) and IDCG@k the DCG of a
  perfect list (min(k, |T|) hits first), as sklearn.metrics.ndcg_score computes it for 0/1 gains.

Images without true objects have nothing to find and are left out of the means.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def ranking_metrics(ranked: Sequence[Sequence[str]], truth: Sequence[set[str]], k: int) -> dict[str, float]:
    """Mean precision@k, recall@k and nDCG@k over the images with at least one true object."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    precision, recall, ndcg = [], [], []
    for items, true in zip(ranked, truth):
        if not true:
            continue
        hits = np.array([item in true for item in list(items)[:k]], dtype=float)
        found = hits.sum()
        precision.append(found / k)
        recall.append(found / len(true))
        ideal = discounts[:min(k, len(true))].sum()
        ndcg.append(float(hits @ discounts[:len(hits)]) / ideal)
    if not precision:
        return {"precision": float("nan"), "recall": float("nan"), "ndcg": float("nan"), "images": 0}
    return {"precision": float(np.mean(precision)), "recall": float(np.mean(recall)),
            "ndcg": float(np.mean(ndcg)), "images": len(precision)}
