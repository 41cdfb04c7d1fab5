"""Datasets A and B of the paper: images with an emotion distribution and the objects they contain.

- A: Emotion6 images, their annotated (true) distribution, the objects the detector found.
- B: Visual Genome images, the distribution predicted by the best image model, the annotated objects
  and relationships.

Both are written as Parquet with the emotions as named columns (`anger` ... `neutral`), so that SQL
reads naturally (`WHERE joy > 0.5`). Per image: `dataset_a` / `dataset_b`; per image and object:
`dataset_a_objects` / `dataset_b_objects`; per relationship: `dataset_b_relationships`. The joins
run in DuckDB over the Parquet files, which stays within memory at Visual Genome's full size.

Dataset B's predictions are computed in shards of image ids (`image_id % shards`), each its own
Parquet partition, so a crashed run only redoes the shards it had not finished. They cover every
Visual Genome image, or a seeded sample of them (`select_images`; the paper's dataset B is "this
2000-image subset of Visual Genome"), and dataset B has one row per predicted image.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from emo_pipeline.core.emotions import EMOTIONS, PROB_COLUMNS
from emo_pipeline.core.paths import OutsideRoot, path_under
from emo_pipeline.image_emotion.predict import RunOptions, card_distributions
from emo_pipeline.storage.model_store import ModelCard
from emo_pipeline.storage.warehouse import Warehouse

SHARDS = 16
PREDICTION_COLUMNS = ("image_id", "model", "model_version", "readable", "dominant_emotion", *PROB_COLUMNS)
DATASET_B_TABLES = ("dataset_b", "dataset_b_objects", "dataset_b_relationships")
DATASET_A_TABLES = ("dataset_a", "dataset_a_objects")

# prob_joy AS joy, ...: the emotions as named columns
_NAMED = ", ".join(f"{column} AS {emotion}" for column, emotion in zip(PROB_COLUMNS, EMOTIONS))


def shard_keys(shards: int = SHARDS) -> list[str]:
    return [f"shard_{i:02d}" for i in range(shards)]


def shard_index(key: str) -> int:
    return int(key.removeprefix("shard_"))


def shard_images(images: pd.DataFrame, key: str, shards: int = SHARDS) -> pd.DataFrame:
    """The rows of `images` (with image_id) that belong to shard `key`, by image id."""
    return images[images["image_id"] % shards == shard_index(key)].sort_values("image_id").reset_index(drop=True)


ALL_IMAGES = 0  # `select_images` count meaning every image


def select_images(images: pd.DataFrame, count: int, seed: int = 0) -> pd.DataFrame:
    """The images dataset B is made of, sorted by image_id: every row of `images` (image_id, image_path)
    for count ALL_IMAGES (0), else a uniform sample of `count` images among those with an image_path.

    The sample depends only on the set of candidate image ids and `seed` (not on row order), so every
    shard of a run, and every later run with the same data and seed, draws the same images. When fewer
    than `count` images have a path, all of those are taken.
    """
    if count < 0:
        raise ValueError(f"images must be {ALL_IMAGES} (every image) or a positive count, not {count}")
    ordered = images.sort_values("image_id", kind="stable").reset_index(drop=True)
    if count == ALL_IMAGES:
        return ordered
    candidates = ordered[ordered["image_path"].notna()].reset_index(drop=True)
    if count >= len(candidates):
        return candidates
    chosen = np.random.default_rng(seed).choice(len(candidates), size=count, replace=False)
    return candidates.iloc[np.sort(chosen)].reset_index(drop=True)


def resolve_image_paths(images: pd.DataFrame, root: Path) -> pd.DataFrame:
    """`image_path` made absolute under the data set `root`; a path that would leave it becomes NULL.

    Visual Genome stores `<folder>/<file>` relative to its root. The path comes from a data file, so
    it is kept inside the root by how it is written (no absolute path, no `..` above the root), while
    links the user put inside the root (`VG_100K -> /other/disk/VG_100K`) are followed (core.paths).
    """
    base = Path(root).resolve()

    def inside(relative: object) -> str | None:
        if not isinstance(relative, str):
            return None
        try:
            return str(path_under(base, relative))
        except OutsideRoot:
            return None

    return images.assign(image_path=images["image_path"].map(inside).astype("string"))


def predict_shard(images: pd.DataFrame, card: ModelCard, models_dir: Path, version: str,
                  options: RunOptions = RunOptions(),
                  progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """One row per image of `images` (image_id, image_path): the predicted distribution under `card`.

    Images without a file (annotation-only downloads) or with an unreadable one keep their row, with
    readable = false and NULL emotions, so the table always covers every image.
    """
    has_file = images["image_path"].notna().to_numpy()
    paths = images.loc[has_file, "image_path"].astype(str).tolist()
    distributions, readable = card_distributions(card, models_dir, paths, options, progress)
    probs = np.full((len(images), len(EMOTIONS)), np.nan)
    flags = np.zeros(len(images), dtype=bool)
    probs[has_file], flags[has_file] = distributions, readable
    frame = pd.DataFrame(probs, columns=list(PROB_COLUMNS))
    dominant = np.where(flags, np.asarray(EMOTIONS)[np.nan_to_num(probs, nan=-1).argmax(axis=1)], None)
    frame.insert(0, "dominant_emotion", pd.array(dominant, dtype="string"))
    frame.insert(0, "readable", flags)
    frame.insert(0, "model_version", pd.array([version] * len(images), dtype="string"))
    frame.insert(0, "model", pd.array([card.name] * len(images), dtype="string"))
    frame.insert(0, "image_id", images["image_id"].to_numpy(dtype=np.int64))
    return frame


def shard_is_current(existing: pd.DataFrame, images: pd.DataFrame, model: str, version: str) -> bool:
    """True when a stored shard already holds this model version's predictions for exactly these images."""
    return (len(existing) == len(images)
            and set(existing["model"].unique()) == {model} and set(existing["model_version"].unique()) == {version}
            and np.array_equal(np.sort(existing["image_id"].to_numpy()), np.sort(images["image_id"].to_numpy())))


def build_dataset_b(store: Warehouse, predictions: str = "vg_emotion_predictions") -> dict[str, int]:
    """Write the dataset B tables from the predictions and the Visual Genome tables; row counts.

    One dataset B row per image in `predictions`: every Visual Genome image, or the sample that was
    predicted (an image without a readable file keeps its row, readable = false)."""
    con = store.connect_scratch()
    try:
        store.write_query("dataset_b", con, f"""
            SELECT i.image_id, i.width, i.height, p.model, coalesce(p.readable, false) AS readable,
                   p.dominant_emotion, {_NAMED.replace('prob_', 'p.prob_')},
                   coalesce(o.objects, 0) AS objects, coalesce(o.object_names, []) AS object_names,
                   coalesce(r.relationships, 0) AS relationships
            FROM vg_images i
            JOIN {predictions} p USING (image_id)
            LEFT JOIN (SELECT image_id, count(*) AS objects, list(DISTINCT name ORDER BY name) AS object_names
                       FROM vg_objects GROUP BY image_id) o USING (image_id)
            LEFT JOIN (SELECT image_id, count(*) AS relationships FROM vg_relationships GROUP BY image_id) r
                   USING (image_id)
            ORDER BY i.image_id""", refresh=False)
        store.create_view(con, "dataset_b", store.table_uri("dataset_b"), replace=True)
        store.write_query("dataset_b_objects", con, f"""
            SELECT o.image_id, o.object_id, o.name AS object, o.x, o.y, o.w, o.h,
                   b.dominant_emotion, {', '.join(f'b.{e}' for e in EMOTIONS)}
            FROM vg_objects o JOIN dataset_b b USING (image_id)
            WHERE b.readable
            ORDER BY o.image_id, o.object_id""", refresh=False)
        store.write_query("dataset_b_relationships", con, f"""
            SELECT r.image_id, r.relationship_id, r.subject_id, r.subject_name AS subject, r.predicate,
                   r.object_id, r.object_name AS object, b.dominant_emotion, {', '.join(f'b.{e}' for e in EMOTIONS)}
            FROM vg_relationships r JOIN dataset_b b USING (image_id)
            WHERE b.readable
            ORDER BY r.image_id, r.relationship_id""", refresh=False)
    finally:
        con.close()
    store.refresh_views()
    return {name: store.table_row_count(name) for name in DATASET_B_TABLES}


def build_dataset_a(store: Warehouse, detections: str = "emotion6_detections") -> dict[str, int]:
    """Write the dataset A tables from the Emotion6 labels and the detector's output; row counts."""
    con = store.connect_scratch()
    try:
        store.write_query("dataset_a", con, f"""
            SELECT l.image_key, l.dominant_emotion, {_NAMED.replace('prob_', 'l.prob_')},
                   coalesce(d.objects, 0) AS objects, coalesce(d.object_names, []) AS object_names
            FROM emotion6_labels l
            LEFT JOIN (SELECT image_key, count(object) AS objects,
                              list(DISTINCT object ORDER BY object) FILTER (WHERE object IS NOT NULL) AS object_names
                       FROM {detections} GROUP BY image_key) d USING (image_key)
            ORDER BY l.image_key""", refresh=False)
        store.create_view(con, "dataset_a", store.table_uri("dataset_a"), replace=True)
        store.write_query("dataset_a_objects", con, f"""
            SELECT d.image_key, d.object, d.confidence, d.x, d.y, d.w, d.h,
                   a.dominant_emotion, {', '.join(f'a.{e}' for e in EMOTIONS)}
            FROM {detections} d JOIN dataset_a a USING (image_key)
            WHERE d.object IS NOT NULL
            ORDER BY d.image_key, d.confidence DESC""", refresh=False)
    finally:
        con.close()
    store.refresh_views()
    return {name: store.table_row_count(name) for name in DATASET_A_TABLES}
