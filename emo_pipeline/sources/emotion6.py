"""Reader for the Cornell Emotion6 database, in its real download layout.

Layout (unchanged download)::

    Emotion6/
      ground_truth.txt         TAB-separated, one header line, rows in any order, LF or CRLF
      images/<keyword>/<n>.jpg keyword = the Flickr search keyword, not the label

Decisions documented here because downstream numbers depend on them:

- The 7 probabilities are renormalised to sum to exactly 1 when their sum is within 1e-3 of 1
  (the real file is within 2e-6); a row further off is rejected.
- The dominant emotion is the argmax of the 7 probabilities, ties broken by column order (anger,
  disgust, fear, joy, sadness, surprise, neutral). The keyword is never used as the label: on the real
  file the dominant emotion equals the keyword for 1008 of 1980 images (85 rows have a tied maximum).
- A duplicated image key keeps its first row; later ones are rejected, naming the first line.
- An image key is kept inside images/ by how it is written (core.paths): symbolic links below
  images/ (keyword folders on another disk) are followed; a dangling one is named in the rejection.
- Every image is decoded (at reduced JPEG scale, which still reads the whole stream) so that a
  truncated or corrupt file is rejected here rather than in a training loop hours later.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from emo_pipeline.core.emotions import EMOTIONS, KEYWORDS, PROB_COLUMNS
from emo_pipeline.core.paths import OutsideRoot, link_problem, path_under
from emo_pipeline.core.rejection import DatasetReport, NotADatasetError, Rejection

GROUND_TRUTH = "ground_truth.txt"
# The warehouse tables read from an Emotion6 folder.
TABLES = ("emotion6_labels", "emotion6_rejected")
HEADER = (
    "[image_filename]\t[valence]\t[arousal]\t[prob. anger]\t[prob. disgust]\t[prob. fear]"
    "\t[prob. joy]\t[prob. sadness]\t[prob. surprise]\t[prob. neutral]"
)
HEADER_FIELDS = HEADER.split("\t")
SUM_TOLERANCE = 1e-3
TIE_RULE = "argmax over (anger, disgust, fear, joy, sadness, surprise, neutral); ties go to the first column"

LABEL_COLUMNS = (
    "image_key", "keyword", "valence", "arousal", *PROB_COLUMNS,
    "dominant_emotion", "dominant_tied", "image_path", "width", "height",
)

_KEY = re.compile(r"^(?P<keyword>[a-z]+)/(?P<n>[0-9]+)\.jpg$")


@dataclass
class Emotion6Data:
    labels: pd.DataFrame
    rejected: list[Rejection]


def dominant_emotion(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the dominant emotion per row (first column wins a tie) and whether it was tied."""
    probs = np.asarray(probs, dtype=float)
    top = probs.max(axis=1, keepdims=True)
    # np.argmax returns the first maximum, which is the documented tie rule.
    return probs.argmax(axis=1), (probs == top).sum(axis=1) > 1


def check_image(path: Path) -> tuple[int, int]:
    """Decode an image fully (at reduced scale) and return its (width, height); raise on damage."""
    with Image.open(path) as im:
        size = im.size
        # draft() lets the JPEG decoder work at 1/8 scale: fast, yet it still reads every byte.
        im.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
        im.load()
    return size


def _parse_row(fields: list[str], where: tuple[str, int]) -> tuple[dict | None, Rejection | None]:
    file, line = where

    def reject(field: str, reason: str):
        return None, Rejection(file, line, field, reason)

    if len(fields) != len(HEADER_FIELDS):
        return reject("row", f"expected {len(HEADER_FIELDS)} TAB-separated fields, found {len(fields)}")
    key = fields[0].strip()
    match = _KEY.match(key)
    if match is None:
        return reject("[image_filename]", f"{key!r} is not of the form <keyword>/<n>.jpg")
    if match["keyword"] not in KEYWORDS:
        return reject("[image_filename]", f"unknown keyword folder {match['keyword']!r}")
    values: list[float] = []
    for name, text in zip(HEADER_FIELDS[1:], fields[1:]):
        try:
            value = float(text)
        except ValueError:
            return reject(name, f"{text.strip()!r} is not a number")
        if not math.isfinite(value):
            return reject(name, f"{text.strip()!r} is not a finite number")
        if value < 0:
            return reject(name, f"negative value {value:g}")
        values.append(value)
    valence, arousal, *probs = values
    for name, value in (("[valence]", valence), ("[arousal]", arousal)):
        if not 1.0 <= value <= 9.0:
            return reject(name, f"{value:g} is outside the 1-9 scale")
    total = sum(probs)
    if abs(total - 1.0) > SUM_TOLERANCE:
        return reject("probabilities", f"sum to {total:.6g}, expected 1 within {SUM_TOLERANCE:g}")
    row = {"image_key": key, "keyword": match["keyword"], "valence": valence, "arousal": arousal}
    row.update({col: p / total for col, p in zip(PROB_COLUMNS, probs)})
    return row, None


def read_emotion6(root: str | Path, *, check_images: bool = True) -> Emotion6Data:
    """Read an Emotion6 folder into one clean label table plus the rejected records."""
    root = Path(root)
    gt_path = root / GROUND_TRUTH
    if not root.is_dir():
        raise NotADatasetError(f"{root}: not a folder")
    if not gt_path.is_file():
        raise NotADatasetError(f"{root}: no {GROUND_TRUTH}, so this is not an Emotion6 folder")
    if not (root / "images").is_dir():
        why = link_problem(root, root / "images")
        raise NotADatasetError(f"{root}: {why or 'no images/ folder'}, so this is not an Emotion6 folder")

    raw_lines = gt_path.read_bytes().split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    header = raw_lines[0].rstrip(b"\r").decode("utf-8-sig", errors="replace") if raw_lines else ""
    if header.split("\t") != HEADER_FIELDS:
        raise NotADatasetError(f"{gt_path}:1: header is not Emotion6's ({header[:80]!r})")

    rejected: list[Rejection] = []
    rows: list[dict] = []
    first_line_of: dict[str, int] = {}
    # The root the user named is theirs to resolve; paths below it are only joined (see core.paths).
    images_root = root.resolve() / "images"
    for line_no, raw in enumerate(raw_lines[1:], start=2):
        raw = raw.rstrip(b"\r")
        if not raw.strip():
            continue  # blank lines (e.g. a trailing CRLF) carry no record
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            rejected.append(Rejection(GROUND_TRUTH, line_no, "row", f"not UTF-8 ({exc.reason} at byte {exc.start})"))
            continue
        row, rejection = _parse_row(text.split("\t"), (GROUND_TRUTH, line_no))
        if rejection is not None:
            rejected.append(rejection)
            continue
        key = row["image_key"]
        if key in first_line_of:
            rejected.append(Rejection(GROUND_TRUTH, line_no, "[image_filename]",
                                      f"duplicate key {key!r}, first given on line {first_line_of[key]}"))
            continue
        first_line_of[key] = line_no
        try:
            path = path_under(images_root, key)
        except OutsideRoot as exc:
            rejected.append(Rejection(GROUND_TRUTH, line_no, "[image_filename]",
                                      f"{key!r} points outside images/ ({exc})"))
            continue
        if not path.is_file():
            why = link_problem(images_root.parent, path)
            rejected.append(Rejection(GROUND_TRUTH, line_no, "[image_filename]",
                                      f"image images/{key} cannot be reached: {why}" if why else
                                      f"image file missing: images/{key}"))
            continue
        width = height = None
        if check_images:
            try:
                width, height = check_image(path)
            except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
                rejected.append(Rejection(GROUND_TRUTH, line_no, "[image_filename]",
                                          f"image images/{key} is unreadable: {exc}"))
                continue
        row.update(image_path=str(path), width=width, height=height)
        rows.append(row)

    labels = pd.DataFrame(rows, columns=[c for c in LABEL_COLUMNS if c not in ("dominant_emotion", "dominant_tied")])
    top, tied = (dominant_emotion(labels[list(PROB_COLUMNS)].to_numpy()) if len(labels)
                 else (np.array([], int), np.array([], bool)))
    labels["dominant_emotion"] = pd.Series(np.asarray(EMOTIONS)[top] if len(labels) else [], dtype="string")
    labels["dominant_tied"] = tied.astype(bool)
    labels = labels.astype({"image_key": "string", "keyword": "string", "image_path": "string",
                            "width": "Int32", "height": "Int32",
                            **dict.fromkeys(("valence", "arousal", *PROB_COLUMNS), "float64")})
    # Sort by key so that the same records give the same table whatever the file's row order.
    labels = labels.sort_values("image_key", key=_natural_key).reset_index(drop=True)
    return Emotion6Data(labels=labels[list(LABEL_COLUMNS)], rejected=rejected)


def _natural_key(keys: pd.Series) -> pd.Series:
    """Sort `anger/2.jpg` before `anger/10.jpg`."""
    parts = keys.str.extract(r"^(?P<kw>[^/]*)/(?P<n>\d+)")
    return parts["kw"] + "/" + parts["n"].str.zfill(8)


def count_data_lines(root: str | Path) -> int:
    """Non-blank lines after the header of ground_truth.txt: the records the source holds."""
    lines = (Path(root) / GROUND_TRUTH).read_bytes().split(b"\n")[1:]
    return sum(1 for line in lines if line.strip())


def inspect_emotion6(root: str | Path) -> DatasetReport:
    data = read_emotion6(root)
    return DatasetReport("emotion6", rows=len(data.labels), rejected=data.rejected,
                         tables={"labels": len(data.labels)})
