"""The Emotion6 reader on the real database and on damaged copies of small folders."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from emo_pipeline.core.emotions import EMOTIONS, PROB_COLUMNS
from emo_pipeline.core.rejection import NotADatasetError
from emo_pipeline.sources.emotion6 import HEADER, read_emotion6


def test_real_emotion6_loads_every_image(real_emotion6: Path):
    data = read_emotion6(real_emotion6)
    labels = data.labels
    assert len(labels) == 1980
    assert data.rejected == []
    assert labels["image_key"].is_unique
    np.testing.assert_allclose(labels[list(PROB_COLUMNS)].sum(axis=1), 1.0, atol=1e-12)


def test_real_emotion6_dominant_emotion_rule(real_emotion6: Path):
    """Ties go to the first column; the keyword folder is not the label."""
    labels = read_emotion6(real_emotion6).labels
    probs = labels[list(PROB_COLUMNS)].to_numpy()
    # Independent computation from the raw file, not from the reader's own columns.
    raw = pd.read_csv(real_emotion6 / "ground_truth.txt", sep="\t")
    raw_probs = raw.iloc[:, 3:10].to_numpy()
    tied = (raw_probs == raw_probs.max(axis=1, keepdims=True)).sum(axis=1) > 1
    assert tied.sum() == 85 == labels["dominant_tied"].sum()

    assert (labels["dominant_emotion"] == labels["keyword"]).sum() == 1008
    # Had ties preferred the keyword, 12 more images would match it.
    keyword_col = labels["keyword"].map(EMOTIONS.index).to_numpy()
    keyword_is_a_max = probs[np.arange(len(probs)), keyword_col] == probs.max(axis=1)
    assert keyword_is_a_max.sum() == 1020

    first_max = np.asarray(EMOTIONS)[probs.argmax(axis=1)]
    assert (labels["dominant_emotion"].to_numpy() == first_max).all()


def test_crlf_and_shuffled_rows_give_the_same_table(real_emotion6: Path, tmp_path: Path):
    lines = (real_emotion6 / "ground_truth.txt").read_text().splitlines()
    body = lines[1:]
    random.Random(3).shuffle(body)
    copy = tmp_path / "Emotion6"
    copy.mkdir()
    (copy / "images").symlink_to(real_emotion6 / "images")
    (copy / "ground_truth.txt").write_bytes("\r\n".join([lines[0], *body, ""]).encode())
    original = read_emotion6(real_emotion6).labels
    shuffled = read_emotion6(copy).labels
    shuffled["image_path"] = shuffled["image_path"].str.replace(str(copy / "images"), str(real_emotion6 / "images"))
    pd.testing.assert_frame_equal(original.drop(columns="image_path"), shuffled.drop(columns="image_path"))


def test_real_emotion6_through_symlinked_keyword_folders(real_emotion6: Path, tmp_path: Path):
    """images/<keyword> -> the real folders, as when a download is spread over disks: every row is read."""
    root = tmp_path / "Emotion6"
    (root / "images").mkdir(parents=True)
    (root / "ground_truth.txt").symlink_to(real_emotion6 / "ground_truth.txt")
    for folder in sorted((real_emotion6 / "images").iterdir()):
        (root / "images" / folder.name).symlink_to(folder, target_is_directory=True)
    data = read_emotion6(root)
    assert len(data.labels) == 1980
    assert data.rejected == []
    # The paths go through the user's links, and each one is a readable file.
    assert data.labels["image_path"].str.startswith(str(root.resolve() / "images") + "/").all()
    assert all(Path(p).is_file() for p in data.labels["image_path"])


# -- damaged folders -----------------------------------------------------------------------------

GOOD_ROWS = [
    "anger/1.jpg\t3.1\t5.2\t0.6\t0.1\t0.1\t0\t0.1\t0.1\t0",
    "joy/1.jpg\t7.5\t4.4\t0\t0\t0\t0.8\t0\t0.133333\t0.0666667",
    "fear/2.jpg\t2.2\t6.9\t0.0666667\t0\t0.733333\t0\t0.0666667\t0.133333\t0",
]


def make_folder(root: Path, rows: list[str], images: list[str] | None = None) -> Path:
    """A small Emotion6 folder: the header, the given rows, and a small JPEG per image key."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    for key in images if images is not None else [r.split("\t")[0] for r in rows]:
        path = root / "images" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 48), (200, 40, 40)).save(path, quality=90)
    (root / "ground_truth.txt").write_text("\n".join([HEADER, *rows]) + "\n")
    return root


def read_damaged(tmp_path: Path, bad_row: str | None = None, images: list[str] | None = None):
    rows = GOOD_ROWS + ([bad_row] if bad_row is not None else [])
    image_keys = images if images is not None else [r.split("\t")[0] for r in GOOD_ROWS]
    data = read_emotion6(make_folder(tmp_path / "Emotion6", rows, image_keys))
    assert list(data.labels["image_key"]) == ["anger/1.jpg", "fear/2.jpg", "joy/1.jpg"], "valid rows were lost"
    return data.rejected


@pytest.mark.parametrize(
    ("bad_row", "field", "reason"),
    [
        ("sadness/4.jpg\t3.0\t4.0\t0.5\t0.5", "row", "expected 10 TAB-separated fields, found 5"),
        ("sadness/4.jpg\t3.0\tabc\t0.5\t0.5\t0\t0\t0\t0\t0", "[arousal]", "'abc' is not a number"),
        ("sadness/4.jpg\t3.0\t4.0\t0.2\t0.1\t0.1\t0\t0.1\t0\t0", "probabilities", "sum to 0.5, expected 1 within 0.001"),  # noqa: E501
        ("sadness/4.jpg\t3.0\t4.0\t-0.2\t0.6\t0.6\t0\t0\t0\t0", "[prob. anger]", "negative value -0.2"),
        ("sadness/4.jpg\t3.0\t4.0\tnan\t0.5\t0.5\t0\t0\t0\t0", "[prob. anger]", "'nan' is not a finite number"),
        ("joy/1.jpg\t6.0\t4.0\t0\t0\t0\t1\t0\t0\t0", "[image_filename]", "duplicate key 'joy/1.jpg', first given on line 3"),  # noqa: E501
        ("calm/1.jpg\t6.0\t4.0\t0\t0\t0\t1\t0\t0\t0", "[image_filename]", "unknown keyword folder 'calm'"),
        ("../secret/1.jpg\t6.0\t4.0\t0\t0\t0\t1\t0\t0\t0", "[image_filename]", "is not of the form <keyword>/<n>.jpg"),  # noqa: E501
        ("joy/../../secret/1.jpg\t6.0\t4.0\t0\t0\t0\t1\t0\t0\t0", "[image_filename]", "is not of the form <keyword>/<n>.jpg"),  # noqa: E501
        ("/etc/joy/1.jpg\t6.0\t4.0\t0\t0\t0\t1\t0\t0\t0", "[image_filename]", "is not of the form <keyword>/<n>.jpg"),  # noqa: E501
        ("sadness/9.jpg\t6.0\t4.0\t0\t0\t0\t1\t0\t0\t0", "[image_filename]", "image file missing: images/sadness/9.jpg"),  # noqa: E501
        ("sadness/4.jpg\t12.0\t4.0\t0\t0\t0\t1\t0\t0\t0", "[valence]", "12 is outside the 1-9 scale"),
    ],
)
def test_bad_row_is_rejected_by_name(tmp_path: Path, bad_row: str, field: str, reason: str):
    images = [r.split("\t")[0] for r in GOOD_ROWS] + ["sadness/4.jpg"]
    rejected = read_damaged(tmp_path, bad_row, images)
    assert len(rejected) == 1
    (rejection,) = rejected
    assert (rejection.file, rejection.line, rejection.field) == ("ground_truth.txt", 5, field)
    assert reason in rejection.reason


def test_probabilities_close_to_one_are_renormalised(tmp_path: Path):
    row = "sadness/4.jpg\t3.0\t4.0\t0.1\t0.1\t0.1\t0.1\t0.1\t0.1\t0.4005"
    data = read_emotion6(make_folder(tmp_path / "E", GOOD_ROWS + [row]))
    assert data.rejected == []
    sad = data.labels.set_index("image_key").loc["sadness/4.jpg"]
    assert sad[list(PROB_COLUMNS)].sum() == pytest.approx(1.0, abs=1e-12)
    assert sad["prob_neutral"] == pytest.approx(0.4005 / 1.0005)


def test_corrupt_and_truncated_jpegs_are_rejected(tmp_path: Path):
    root = make_folder(tmp_path / "Emotion6", GOOD_ROWS + [
        "sadness/4.jpg\t3.0\t4.0\t0\t0\t0\t0\t1\t0\t0",
        "sadness/5.jpg\t3.0\t4.0\t0\t0\t0\t0\t1\t0\t0",
        "sadness/6.jpg\t3.0\t4.0\t0\t0\t0\t0\t1\t0\t0",
    ])
    truncated = root / "images/sadness/4.jpg"
    truncated.write_bytes(truncated.read_bytes()[:300])
    (root / "images/sadness/5.jpg").write_bytes(b"this is not a JPEG")
    (root / "images/sadness/6.jpg").write_bytes(b"")
    data = read_emotion6(root)
    assert len(data.labels) == 3
    assert {r.line for r in data.rejected} == {5, 6, 7}
    assert all("is unreadable" in r.reason and r.field == "[image_filename]" for r in data.rejected)


def test_non_utf8_line_is_rejected_and_others_kept(tmp_path: Path):
    root = make_folder(tmp_path / "Emotion6", GOOD_ROWS)
    text = (root / "ground_truth.txt").read_bytes()
    (root / "ground_truth.txt").write_bytes(text + b"sadness/\xff.jpg\t3\t4\t0\t0\t0\t0\t1\t0\t0\n")
    data = read_emotion6(root)
    assert len(data.labels) == 3
    assert [(r.line, r.field) for r in data.rejected] == [(5, "row")]
    assert "not UTF-8" in data.rejected[0].reason


def test_a_folder_that_is_not_emotion6_is_named(tmp_path: Path):
    with pytest.raises(NotADatasetError, match="no ground_truth.txt"):
        read_emotion6(tmp_path)
    root = make_folder(tmp_path / "E", GOOD_ROWS)
    (root / "ground_truth.txt").write_text("image\tlabel\nanger/1.jpg\tanger\n")
    with pytest.raises(NotADatasetError, match="header is not Emotion6's"):
        read_emotion6(root)


def test_empty_ground_truth_gives_an_empty_table(tmp_path: Path):
    root = make_folder(tmp_path / "E", [], images=[])
    data = read_emotion6(root)
    assert len(data.labels) == 0 and data.rejected == []
    assert "dominant_emotion" in data.labels.columns


def test_symlinked_keyword_folders_read_every_row(tmp_path: Path):
    """Keyword folders that are links (absolute or relative) to another disk are followed."""
    disk = make_folder(tmp_path / "other_disk", GOOD_ROWS)
    root = tmp_path / "Emotion6"
    (root / "images").mkdir(parents=True)
    (root / "ground_truth.txt").write_text((disk / "ground_truth.txt").read_text())
    (root / "images" / "anger").symlink_to(disk / "images" / "anger", target_is_directory=True)
    (root / "images" / "joy").symlink_to(Path("..", "..", "other_disk", "images", "joy"), target_is_directory=True)
    (root / "images" / "fear").symlink_to(disk / "images" / "fear", target_is_directory=True)
    data = read_emotion6(root)
    assert data.rejected == []
    assert list(data.labels["image_key"]) == ["anger/1.jpg", "fear/2.jpg", "joy/1.jpg"]
    assert list(data.labels["image_path"]) == [str(root.resolve() / "images" / k)
                                               for k in ("anger/1.jpg", "fear/2.jpg", "joy/1.jpg")]
    assert list(data.labels["width"]) == [64, 64, 64]


def test_a_dangling_keyword_link_is_named_in_the_rejection(tmp_path: Path):
    root = make_folder(tmp_path / "Emotion6", GOOD_ROWS, images=["anger/1.jpg", "joy/1.jpg"])
    unplugged = tmp_path / "unplugged_disk" / "fear"
    (root / "images" / "fear").symlink_to(unplugged, target_is_directory=True)
    data = read_emotion6(root)
    assert list(data.labels["image_key"]) == ["anger/1.jpg", "joy/1.jpg"]
    (rejection,) = data.rejected
    assert (rejection.file, rejection.line, rejection.field) == ("ground_truth.txt", 4, "[image_filename]")
    assert rejection.reason == (f"image images/fear/2.jpg cannot be reached: images/fear is a symbolic link to "
                                f"{unplugged}, which does not exist")
