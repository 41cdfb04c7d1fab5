"""Figures as PNG bytes, for asset metadata and reports (matplotlib, no display needed)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # headless: Dagster steps and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from emo_pipeline.core.emotions import EMOTIONS, PROB_COLUMNS  # noqa: E402


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


def mean_histograms_png(frame: pd.DataFrame, group_column: str,
                        blocks: dict[str, tuple[list[str], np.ndarray]], title: str) -> bytes:
    """One panel per histogram block (its columns and bin edges): the mean histogram of each group.

    Groups are drawn in `EMOTIONS` order when they are emotions, so colours mean the same emotion in
    every figure.
    """
    order = {e: i for i, e in enumerate(EMOTIONS)}
    groups = sorted(frame[group_column].dropna().astype(str).unique(), key=lambda g: (order.get(g, len(order)), g))
    fig, axes = plt.subplots(1, len(blocks), figsize=(4.2 * len(blocks), 3.2), squeeze=False)
    for ax, (name, (columns, edges)) in zip(axes[0], blocks.items()):
        centres = (edges[:-1] + edges[1:]) / 2
        for group in groups:
            mean = frame.loc[frame[group_column].astype(str) == group, columns].to_numpy(dtype=float).mean(axis=0)
            ax.plot(centres, mean, marker="o", markersize=3, label=group)
        ax.set_title(name)
        ax.set_ylabel("mean fraction of pixels")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(title)
    return figure_png(fig)


def confusion_png(true: np.ndarray, predicted: np.ndarray, classes: list[str], title: str) -> bytes:
    """Confusion matrix: counts as numbers, colour = share of the true class (rows sum to 1)."""
    index = {c: i for i, c in enumerate(classes)}
    counts = np.zeros((len(classes), len(classes)), dtype=int)
    for t, p in zip(np.asarray(true).astype(str), np.asarray(predicted).astype(str)):
        counts[index[t], index[p]] += 1
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if shares[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return figure_png(fig)


def training_curve_png(history, title: str) -> bytes:
    """Train and validation loss per epoch (history: records with epoch, train_loss, val_loss)."""
    fig, ax = plt.subplots(figsize=(5, 3))
    epochs = [h.epoch for h in history]
    ax.plot(epochs, [h.train_loss for h in history], marker="o", markersize=3, label="train")
    ax.plot(epochs, [h.val_loss for h in history], marker="o", markersize=3, label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    ax.set_title(title)
    return figure_png(fig)


def distribution_bars_png(keys: list[str], true: np.ndarray, predicted: np.ndarray, title: str) -> bytes:
    """True vs predicted 7-way distribution, one panel per image (the paper's Fig. 5)."""
    n = max(len(keys), 1)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 2.8), squeeze=False)
    x = np.arange(len(EMOTIONS))
    for ax, key, t, p in zip(axes[0], keys, true, predicted):
        ax.bar(x - 0.2, t, width=0.4, label="true")
        ax.bar(x + 0.2, p, width=0.4, label="predicted")
        ax.set_xticks(x, EMOTIONS, rotation=60, fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_title(key, fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title)
    return figure_png(fig)


def metrics_bars_png(table: pd.DataFrame, columns: tuple[str, ...]) -> bytes:
    """One panel per metric, one bar per model (`table` has a `model` column and the metric columns)."""
    fig, axes = plt.subplots(1, len(columns), figsize=(3.4 * len(columns), 3.2), squeeze=False)
    for ax, column in zip(axes[0], columns):
        ax.bar(table["model"].astype(str), table[column].to_numpy(dtype=float), color="#4c72b0")
        ax.set_title(column)
        ax.tick_params(axis="x", rotation=60, labelsize=7)
    return figure_png(fig)


def class_ap_png(ap50: dict[str, float], title: str, shown: int = 40) -> bytes:
    """Validation AP50 per object class, best first (at most `shown` classes, so long vocabularies stay legible)."""
    items = sorted(ap50.items(), key=lambda kv: -kv[1])[:shown]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.22 * len(items) + 1.5), 3.2))
    ax.bar([k for k, _ in items], [v for _, v in items], color="#4c72b0")
    ax.set_ylim(0, 1)
    ax.set_ylabel("AP50 (val)")
    ax.tick_params(axis="x", rotation=75, labelsize=7)
    ax.set_title(title)
    return figure_png(fig)


def detections_png(samples: list[tuple[str, str, pd.DataFrame]], title: str, boxes_per_image: int = 8) -> bytes:
    """Images with their detected boxes: `samples` holds (title, image path, rows with object, confidence,
    x, y, w, h in pixels); rows with a NULL object (no detection) draw nothing. Only the most confident
    `boxes_per_image` boxes are drawn, so a crowded image stays readable."""
    from PIL import Image

    n = max(len(samples), 1)
    fig, axes = plt.subplots(1, n, figsize=(2.8 * n, 3.0), squeeze=False)
    for ax, (name, path, rows) in zip(axes[0], samples):
        with Image.open(path) as image:
            ax.imshow(np.asarray(image.convert("RGB")))
        drawn = rows.dropna(subset=["object"]).sort_values("confidence", ascending=False).head(boxes_per_image)
        for row in drawn.itertuples(index=False):
            ax.add_patch(plt.Rectangle((row.x, row.y), row.w, row.h, fill=False, color="yellow", linewidth=1.2))
            ax.text(row.x, row.y, f"{row.object} {row.confidence:.2f}", fontsize=6, color="black",
                    backgroundcolor="yellow", va="bottom")
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    for ax in axes[0][len(samples):]:
        ax.axis("off")
    fig.suptitle(title)
    return figure_png(fig)


def esm_comparison_png(keys: list[str], images: np.ndarray, true_maps: np.ndarray | None, predicted: np.ndarray,
                       title: str) -> bytes:
    """One row per image: image | true map | predicted map | predicted - true (the paper's Fig. 8).

    `images` is (n, S, S, 3) uint8, the maps (n, S, S) in [0, 1]. Without `true_maps` (images that
    have none, such as Emotion6) the rows show image | predicted map.
    """
    columns = ["image", "predicted map"] if true_maps is None else ["image", "true map", "predicted map",
                                                                    "predicted - true"]
    n = max(len(keys), 1)
    fig, axes = plt.subplots(n, len(columns), figsize=(2.1 * len(columns), 2.1 * n), squeeze=False)
    for row, key in enumerate(keys):
        panels = [images[row]] if true_maps is None else [images[row], true_maps[row]]
        panels.append(predicted[row])
        if true_maps is not None:
            panels.append(predicted[row] - true_maps[row])
        for col, (ax, panel) in enumerate(zip(axes[row], panels)):
            if col == 0:
                ax.imshow(panel)
                ax.set_ylabel(key, fontsize=7)
            elif columns[col] == "predicted - true":
                # Red where the model sees more stimulus than the annotators did, blue where less.
                ax.imshow(panel, cmap="coolwarm", vmin=-1, vmax=1)
            else:
                ax.imshow(panel, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(columns[col], fontsize=8)
    fig.suptitle(title)
    return figure_png(fig)


def loss_curves_png(history: pd.DataFrame, title: str) -> bytes:
    """Validation loss per epoch, one line per `normalisation` (history: normalisation, epoch, val_loss)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for name, rows in history.groupby("normalisation", sort=False):
        ax.plot(rows["epoch"], rows["val_loss"], marker="o", markersize=2, label=str(name))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation loss (cross-entropy)")
    ax.legend(fontsize=7)
    ax.set_title(title)
    return figure_png(fig)


def top_objects_png(table: pd.DataFrame, title: str, shown: int = 10) -> bytes:
    """One panel per emotion: its `shown` best objects by final score (table: emotion, object, final)."""
    fig, axes = plt.subplots(1, len(EMOTIONS), figsize=(2.3 * len(EMOTIONS), 3.2), squeeze=False)
    for ax, emotion in zip(axes[0], EMOTIONS):
        rows = table[table["emotion"] == emotion].nlargest(shown, "final").iloc[::-1]
        ax.barh(rows["object"].astype(str), rows["final"].to_numpy(dtype=float), color="#4c72b0")
        ax.set_title(emotion, fontsize=9)
        ax.tick_params(labelsize=7)
    fig.suptitle(title)
    return figure_png(fig)


def word_clouds_png(samples: list[tuple[str, dict[str, float], dict[str, float]]], title: str) -> bytes:
    """Per sample image, a word cloud of its true objects beside one of the predicted objects (paper
    Figs. 11-12). `samples` holds (image label, {object: count}, {object: predicted score})."""
    from wordcloud import WordCloud

    n = max(len(samples), 1)
    fig, axes = plt.subplots(n, 2, figsize=(7, 2.2 * n), squeeze=False)
    for row, (label, true, predicted) in zip(axes, samples):
        for ax, words, side in zip(row, (true, predicted), ("true", "predicted")):
            weights = {w: float(v) for w, v in words.items() if v > 0}
            if weights:
                cloud = WordCloud(width=320, height=160, background_color="white", random_state=0,
                                  prefer_horizontal=1.0).generate_from_frequencies(weights)
                ax.imshow(cloud, interpolation="bilinear")
            ax.set_title(f"{label}: {side}", fontsize=8)
            ax.axis("off")
    fig.suptitle(title)
    return figure_png(fig)


def scene_figure_png(legend_png: bytes, target: np.ndarray, predicted: np.ndarray | None, title: str) -> bytes:
    """A scene's coloured label map with its legend, beside the target and the critic's distribution."""
    from PIL import Image

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [1.6, 1]})
    left.imshow(np.asarray(Image.open(io.BytesIO(legend_png)).convert("RGB")))
    left.axis("off")
    x = np.arange(len(EMOTIONS))
    right.bar(x - 0.2, target, width=0.4, label="target")
    if predicted is not None:
        right.bar(x + 0.2, predicted, width=0.4, label="critic")
    right.set_xticks(x, EMOTIONS, rotation=60, fontsize=8)
    right.set_ylim(0, 1)
    right.legend(fontsize=8)
    fig.suptitle(title)
    return figure_png(fig)


def _word_cloud(ax: plt.Axes, words: dict[str, float], title: str) -> None:
    """A word cloud of the positive weights of `words` on `ax` ("(none)" when there are none)."""
    from wordcloud import WordCloud

    weights = {w: float(v) for w, v in words.items() if v > 0}
    if weights:
        cloud = WordCloud(width=320, height=200, background_color="white", random_state=0,
                          prefer_horizontal=1.0).generate_from_frequencies(weights)
        ax.imshow(cloud, interpolation="bilinear")
    else:
        ax.text(0.5, 0.5, "(none)", ha="center", va="center")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def objects_to_emotion_png(samples: list[tuple[str, dict[str, float], np.ndarray, np.ndarray]], title: str) -> bytes:
    """One row per image: a word cloud of its objects beside its ground-truth and predicted 7-way
    distributions (the paper's Fig. 9). `samples` holds (image label, {object: count}, truth, predicted)."""
    n = max(len(samples), 1)
    fig, axes = plt.subplots(n, 2, figsize=(8, 3.2 * n), squeeze=False, gridspec_kw={"width_ratios": [1.2, 1]})
    x = np.arange(len(EMOTIONS))
    for (cloud_ax, bars), (label, objects, truth, predicted) in zip(axes, samples):
        _word_cloud(cloud_ax, objects, f"{label}: objects")
        bars.bar(x - 0.2, truth, width=0.4, label="ground truth")
        bars.bar(x + 0.2, predicted, width=0.4, label="predicted")
        bars.set_xticks(x, EMOTIONS, rotation=60, fontsize=7)
        bars.set_ylim(0, 1)
        bars.set_title(f"{label}: emotion distribution", fontsize=8)
    axes[0][1].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return figure_png(fig)


def emotion_to_objects_png(distribution: np.ndarray, truth: dict[str, float], predicted: dict[str, float],
                           title: str) -> bytes:
    """The input 7-way distribution beside a word cloud of the image's true objects and one of the
    predicted objects (the paper's Figs. 11-12); the clouds weigh words by count and by score."""
    fig, (bars, left, right) = plt.subplots(1, 3, figsize=(11, 2.9), gridspec_kw={"width_ratios": [0.9, 1, 1]})
    bars.bar(np.arange(len(EMOTIONS)), np.asarray(distribution, dtype=float), color="#4c72b0")
    bars.set_xticks(np.arange(len(EMOTIONS)), EMOTIONS, rotation=60, fontsize=7)
    bars.set_ylim(0, 1)
    bars.set_title("input emotion distribution", fontsize=8)
    _word_cloud(left, truth, "ground-truth objects")
    _word_cloud(right, predicted, "predicted objects")
    fig.suptitle(title, fontsize=9)
    return figure_png(fig)


def validation_loss_bars_png(table: pd.DataFrame, title: str) -> bytes:
    """One panel per data set: the validation loss of the score baseline and of the MLP for each target
    normalisation (the paper's Fig. 14). `table` has dataset, normalisation, baseline_loss, mlp_loss;
    the y axis is logarithmic, as the normalisations' losses differ by orders of magnitude."""
    datasets = list(dict.fromkeys(table["dataset"]))
    fig, axes = plt.subplots(1, max(len(datasets), 1), figsize=(4.6 * max(len(datasets), 1), 3.4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        rows = table[table["dataset"] == dataset]
        x = np.arange(len(rows))
        ax.bar(x - 0.2, rows["baseline_loss"].to_numpy(dtype=float), width=0.4, label="score baseline")
        ax.bar(x + 0.2, rows["mlp_loss"].to_numpy(dtype=float), width=0.4, label="MLP")
        ax.set_xticks(x, rows["normalisation"].astype(str), rotation=60, ha="right", fontsize=7)
        ax.set_yscale("log")
        ax.set_title(f"dataset {str(dataset).upper()}", fontsize=9)
    axes[0][0].set_ylabel("validation loss (cross-entropy)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return figure_png(fig)
