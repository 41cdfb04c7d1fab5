"""The YOLO dataset of a detector trained here: Visual Genome boxes of the most frequent object names.

The Visual Genome boxes of the N most frequent object names (`vocabulary`) are written in the YOLO
dataset layout (`write_yolo_dataset`), so a detector trained on them (`training`) gives dataset A the
same object vocabulary as dataset B.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from emo_pipeline.detection import Log, no_log


def normalise_name(name: str) -> str:
    """Lower case, stripped, runs of whitespace collapsed: how the Visual Genome reader writes names."""
    return " ".join(str(name).lower().split())


def vocabulary(objects: pd.DataFrame, n: int) -> list[str]:
    """The `n` most frequent object names (by number of boxes) of a `vg_objects` table.

    Names are normalised again (the reader already did; a hand-made table may not have) and ties are
    broken alphabetically, so the same table always gives the same list in the same order: the class
    index of a name is its position here.
    """
    if n < 1:
        raise ValueError(f"the vocabulary needs at least one name, not {n}")
    names = objects["name"].dropna().map(normalise_name)
    names = names[names != ""]
    counts = names.value_counts()
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [name for name, _ in ranked[:n]]


@dataclass
class YoloDataset:
    """A dataset in the ultralytics layout: `root/images/{train,val}`, `root/labels/{train,val}`, `data.yaml`."""

    root: Path
    data_yaml: Path
    names: list[str]
    images: dict[str, int]          # split -> images
    boxes: dict[str, int]           # split -> boxes of the vocabulary
    background_images: int          # images with no box of the vocabulary (empty label files)
    missing_images: int             # rows of the images table whose file does not exist
    linked: bool                    # images are symlinks (True) or copies


def _label_lines(boxes: pd.DataFrame, width: float, height: float) -> list[str]:
    """YOLO label lines `class cx cy w h`, normalised to the image and clipped to [0, 1]."""
    if boxes.empty:
        return []
    x0 = np.clip(boxes["x"].to_numpy(float) / width, 0.0, 1.0)
    y0 = np.clip(boxes["y"].to_numpy(float) / height, 0.0, 1.0)
    x1 = np.clip((boxes["x"].to_numpy(float) + boxes["w"].to_numpy(float)) / width, 0.0, 1.0)
    y1 = np.clip((boxes["y"].to_numpy(float) + boxes["h"].to_numpy(float)) / height, 0.0, 1.0)
    keep = (x1 > x0) & (y1 > y0)
    classes = boxes["class_id"].to_numpy()
    return [f"{int(c)} {(a + b) / 2:.6f} {(c0 + d) / 2:.6f} {b - a:.6f} {d - c0:.6f}"
            for c, a, c0, b, d, k in zip(classes, x0, y0, x1, y1, keep) if k]


def _place_image(source: Path, target: Path, link: bool) -> bool:
    """Symlink the image (no copy of a 15 GB data set); copy where links are not allowed."""
    if link:
        try:
            os.symlink(source, target)
            return True
        except OSError:
            pass
    shutil.copyfile(source, target)
    return False


def split_images(image_ids: Sequence[int], val_share: float, seed: int) -> dict[int, str]:
    """Seeded train/val assignment: at least one image in each split when there are two or more."""
    if not 0.0 < val_share < 1.0:
        raise ValueError(f"val_share must be between 0 and 1, not {val_share}")
    ids = sorted(int(i) for i in image_ids)
    order = np.random.default_rng(seed).permutation(len(ids))
    n_val = min(max(1, round(val_share * len(ids))), len(ids) - 1) if len(ids) > 1 else 0
    val = {ids[i] for i in order[:n_val]}
    return {i: ("val" if i in val else "train") for i in ids}


def write_yolo_dataset(images: pd.DataFrame, objects: pd.DataFrame, names: Sequence[str], image_root: Path,
                       out_dir: Path, val_share: float = 0.2, seed: int = 0, link: bool = True,
                       log: Log = no_log) -> YoloDataset:
    """Write Visual Genome boxes of `names` as a YOLO dataset under `out_dir`, replacing it atomically.

    `images` is a `vg_images` table (image_id, width, height, image_path relative to `image_root`),
    `objects` a `vg_objects` table (image_id, name, clipped x, y, w, h in pixels). Every image whose
    file exists goes in, with one label file each: images without a box of the vocabulary get an
    empty one and teach the model what is not an object. Files are named by image id only, so nothing
    is written outside `out_dir` whatever the tables hold. The folder is built beside `out_dir` and
    swapped in at the end: a crash leaves the previous dataset whole, and the same input writes the
    same files again.
    """
    names = [normalise_name(n) for n in names]
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"class names must be distinct and non-empty: {names}")
    out_dir = Path(out_dir).resolve()
    image_root = Path(image_root).resolve()
    index = {name: i for i, name in enumerate(names)}

    table = images[["image_id", "width", "height", "image_path"]].dropna()
    table = table[(table["width"] > 0) & (table["height"] > 0)].drop_duplicates("image_id")
    sources = {int(r.image_id): image_root / str(r.image_path) for r in table.itertuples(index=False)}
    present = {i for i, path in sources.items() if path.is_file()}
    missing = len(sources) - len(present)
    if missing:
        log(f"YOLO dataset: {missing} of {len(sources)} images have no file under {image_root}; left out")
    if len(present) < 2:
        raise ValueError(f"need at least two images with files under {image_root} to train a detector, "
                         f"found {len(present)}")
    table = table[table["image_id"].astype("int64").isin(present)]

    boxes = objects[["image_id", "name", "x", "y", "w", "h"]].dropna().copy()
    boxes["name"] = boxes["name"].map(normalise_name)
    boxes = boxes[boxes["name"].isin(index) & boxes["image_id"].astype("int64").isin(present)]
    boxes["class_id"] = boxes["name"].map(index).astype(int)
    by_image = {int(k): g for k, g in boxes.groupby("image_id", sort=False)}
    assignment = split_images(list(present), val_share, seed)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.staging-", dir=out_dir.parent))
    counts = {"train": 0, "val": 0}
    box_counts = {"train": 0, "val": 0}
    background = 0
    linked = link
    try:
        for split in ("train", "val"):
            (staging / "images" / split).mkdir(parents=True)
            (staging / "labels" / split).mkdir(parents=True)
        for row in table.sort_values("image_id").itertuples(index=False):
            image_id = int(row.image_id)
            split = assignment[image_id]
            source = sources[image_id]
            suffix = source.suffix.lower() if source.suffix else ".jpg"
            linked &= _place_image(source, staging / "images" / split / f"{image_id}{suffix}", link)
            own = by_image.get(image_id)
            lines = _label_lines(own, float(row.width), float(row.height)) if own is not None else []
            (staging / "labels" / split / f"{image_id}.txt").write_text(
                "".join(line + "\n" for line in lines), encoding="utf-8")
            counts[split] += 1
            box_counts[split] += len(lines)
            background += not lines
        data = {"path": str(out_dir), "train": "images/train", "val": "images/val",
                "names": dict(enumerate(names))}
        (staging / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True),
                                           encoding="utf-8")
        _swap_in(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log(f"YOLO dataset at {out_dir}: {counts['train']} train / {counts['val']} val images, "
        f"{box_counts['train']} / {box_counts['val']} boxes of {len(names)} classes, {background} background images")
    return YoloDataset(root=out_dir, data_yaml=out_dir / "data.yaml", names=names, images=counts,
                       boxes=box_counts, background_images=background, missing_images=missing, linked=linked)


def _swap_in(staging: Path, final: Path) -> None:
    """Replace `final` by `staging` with renames only; the old folder is removed afterwards."""
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}-{time.monotonic_ns()}"
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
