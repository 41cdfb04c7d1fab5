"""Reader for EmotionROI (images with emotion stimuli maps), in its public download layout.

Layout::

    EmotionROI/
      images/<emotion>/<n>.jpg          6 emotions, no neutral
      ground_truth/<emotion>/<n>.jpg    the emotion stimuli map (ESM): grayscale, same size as the image
      training_testing_split/training.txt, testing.txt   one relative path (`anger/12.jpg`) per line

An image is kept when it and its ESM decode, the ESM is grayscale (mode L) and of the image's size.
A split line is rejected when it leaves the data root, names no kept image, or repeats an image
already assigned; an image in no split file stays in the maps table and has no row in the split table.

Paths are kept inside the data root by how they are written (core.paths): symbolic links below the
root (emotion folders on another disk) are followed; a dangling one is named in the rejection, and an
emotion folder that is a dangling link is rejected as a whole rather than silently skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from emo_pipeline.core.emotions import KEYWORDS
from emo_pipeline.core.paths import OutsideRoot, link_problem, path_under
from emo_pipeline.core.rejection import DatasetReport, NotADatasetError, Rejection
from emo_pipeline.sources.emotion6 import check_image

# The warehouse tables read from an EmotionROI folder.
TABLES = ("emotionroi_maps", "emotionroi_split", "emotionroi_rejected")
SPLIT_FILES = {"train": "training_testing_split/training.txt", "test": "training_testing_split/testing.txt"}
MAP_COLUMNS = ("image_key", "emotion", "image_path", "esm_path", "width", "height", "esm_mean")
# DecompressionBombError: PIL refuses images over 2x MAX_IMAGE_PIXELS at open; a rejection like any other.
_IMAGE_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError)


@dataclass
class EmotionROIData:
    maps: pd.DataFrame   # one row per image with a valid ESM
    split: pd.DataFrame  # image_key, split ("train" / "test")
    rejected: list[Rejection]


def _read_esm(path: Path, size: tuple[int, int]) -> float:
    """Return the ESM's mean level in [0, 1]; raise ValueError naming what is wrong with it."""
    with Image.open(path) as esm:
        if esm.mode != "L":
            raise ValueError(f"ESM mode is {esm.mode}, expected grayscale (L)")
        if esm.size != size:
            raise ValueError(f"ESM is {esm.size[0]}x{esm.size[1]}, image is {size[0]}x{size[1]}")
        return float(np.asarray(esm, dtype=np.float32).mean() / 255.0)


def _source_images(root: Path, rejected: list[Rejection] | None = None) -> list[tuple[str, Path]]:
    """(emotion, path) of every JPEG under images/<emotion>/, in natural order; an emotion folder that
    is a link which cannot be followed goes to `rejected` when given."""
    found = []
    for emotion in KEYWORDS:
        folder = root / "images" / emotion
        if folder.is_dir():
            found += [(emotion, p) for p in sorted(folder.glob("*.jpg"), key=lambda p: (len(p.stem), p.stem))]
        elif rejected is not None and (why := link_problem(root, folder)):
            rejected.append(Rejection(f"images/{emotion}", None, "folder", why))
    return found


def count_source_images(root: str | Path) -> int:
    return len(_source_images(Path(root)))


def _read_maps(root: Path, rejected: list[Rejection]) -> pd.DataFrame:
    rows = []
    for emotion, path in _source_images(root, rejected):
        key = f"{emotion}/{path.name}"
        esm_path = root / "ground_truth" / key
        if why := link_problem(root, path):
            rejected.append(Rejection(f"images/{key}", None, "image", why))
            continue
        try:
            size = check_image(path)
        except _IMAGE_ERRORS as exc:
            rejected.append(Rejection(f"images/{key}", None, "image", f"unreadable: {exc}"))
            continue
        if not esm_path.is_file():
            rejected.append(Rejection(f"ground_truth/{key}", None, "esm",
                                      link_problem(root, esm_path) or "ESM file missing"))
            continue
        try:
            esm_mean = _read_esm(esm_path, size)
        except _IMAGE_ERRORS as exc:
            rejected.append(Rejection(f"ground_truth/{key}", None, "esm", str(exc)))
            continue
        rows.append((key, emotion, str(path), str(esm_path), size[0], size[1], esm_mean))
    maps = pd.DataFrame(rows, columns=list(MAP_COLUMNS))
    return maps.astype({"image_key": "string", "emotion": "string", "image_path": "string",
                        "esm_path": "string", "width": "int32", "height": "int32", "esm_mean": "float64"})


def _read_split(root: Path, known: set[str], rejected: list[Rejection]) -> pd.DataFrame:
    assigned: dict[str, tuple[str, int]] = {}
    for split, rel in SPLIT_FILES.items():
        path = root / rel
        if not path.is_file():
            rejected.append(Rejection(rel, None, "file", "split file missing"))
            continue
        for line_no, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                rejected.append(Rejection(rel, line_no, "path", "not UTF-8"))
                continue
            if not text:
                continue
            try:
                image = path_under(root / "images", text)
            except OutsideRoot as exc:
                rejected.append(Rejection(rel, line_no, "path", f"{text!r} points outside the data root ({exc})"))
                continue
            key = image.relative_to(root / "images").as_posix()
            if key not in known:
                if image.is_file():
                    reason = "image was rejected"
                else:
                    why = link_problem(root, image)
                    reason = f"image cannot be reached: {why}" if why else "no such image under images/"
                rejected.append(Rejection(rel, line_no, "path", f"{text!r}: {reason}"))
                continue
            if key in assigned:
                first_split, first_line = assigned[key]
                rejected.append(Rejection(rel, line_no, "path",
                                          f"{key!r} already in {first_split} (line {first_line})"))
                continue
            assigned[key] = (split, line_no)
    frame = pd.DataFrame([(k, s) for k, (s, _) in assigned.items()], columns=["image_key", "split"])
    return frame.astype("string").sort_values("image_key").reset_index(drop=True)


def read_emotionroi(root: str | Path) -> EmotionROIData:
    """Read an EmotionROI folder: image/ESM pairs, the train/test split, and rejected records."""
    # The root the user named is theirs to resolve; paths below it are only joined (see core.paths).
    root = Path(root).resolve()
    for needed in ("images", "ground_truth"):
        if not (root / needed).is_dir():
            why = link_problem(root, root / needed) or f"no {needed}/ folder"
            raise NotADatasetError(f"{root}: {why}, so this is not an EmotionROI folder")
    rejected: list[Rejection] = []
    maps = _read_maps(root, rejected)
    split = _read_split(root, set(maps["image_key"]), rejected)
    return EmotionROIData(maps=maps, split=split, rejected=rejected)


def inspect_emotionroi(root: str | Path) -> DatasetReport:
    data = read_emotionroi(root)
    return DatasetReport("emotionroi", rows=len(data.maps), rejected=data.rejected,
                         tables={"maps": len(data.maps), "split": len(data.split)})
