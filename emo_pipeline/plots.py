"""Figures as PNG bytes, for asset metadata and reports (matplotlib, no display needed)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # headless: Dagster steps and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from emo_pipeline.emotions import EMOTIONS, PROB_COLUMNS  # noqa: E402


def figure_png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def emotion_profile_png(labels: pd.DataFrame, title: str) -> bytes:
    """Two panels: how many images each emotion dominates, and the mean 7-way distribution."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    counts = labels["dominant_emotion"].value_counts().reindex(EMOTIONS, fill_value=0)
    left.bar(EMOTIONS, counts.to_numpy(), color="#4c72b0")
    left.set_title("dominant emotion (images)")
    mean = labels[list(PROB_COLUMNS)].to_numpy(dtype=float).mean(axis=0) if len(labels) else np.zeros(7)
    right.bar(EMOTIONS, mean, color="#dd8452")
    right.set_title("mean distribution")
    for ax in (left, right):
        ax.tick_params(axis="x", rotation=45)
    fig.suptitle(title)
    return figure_png(fig)


def split_png(split: pd.DataFrame, labels: pd.DataFrame, title: str) -> bytes:
    """Images per split and dominant emotion, stacked: shows the stratification at a glance."""
    table = split.merge(labels[["image_key", "dominant_emotion"]], on="image_key")
    counts = table.groupby(["split", "dominant_emotion"]).size().unstack(fill_value=0)
    counts = counts.reindex(index=[s for s in ("train", "val", "test") if s in counts.index],
                            columns=[e for e in EMOTIONS if e in counts.columns])
    fig, ax = plt.subplots(figsize=(6, 3.2))
    bottom = np.zeros(len(counts))
    for emotion in counts.columns:
        ax.bar(counts.index.astype(str), counts[emotion].to_numpy(), bottom=bottom, label=emotion)
        bottom += counts[emotion].to_numpy()
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title)
    return figure_png(fig)
