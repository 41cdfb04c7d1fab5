"""The EmotionROI reader: image/ESM pairs, the split files, and what it rejects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emo_pipeline.core.rejection import NotADatasetError
from emo_pipeline.sources.emotionroi import read_emotionroi


def make_roi(root: Path, keys: list[str], train: list[str], test: list[str]) -> Path:
    for i, key in enumerate(keys):
        image = root / "images" / key
        esm = root / "ground_truth" / key
        image.parent.mkdir(parents=True, exist_ok=True)
        esm.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (80, 60), (30 * i % 255, 90, 160)).save(image)
        level = np.zeros((60, 80), np.uint8)
        level[10:40, 20:60] = 255
        Image.fromarray(level, mode="L").save(esm)
    split_dir = root / "training_testing_split"
    split_dir.mkdir(parents=True, exist_ok=True)
    (split_dir / "training.txt").write_text("\n".join(train) + "\n")
    (split_dir / "testing.txt").write_text("\n".join(test) + "\n")
    return root


KEYS = ["anger/1.jpg", "joy/1.jpg", "joy/2.jpg", "fear/3.jpg"]


def test_clean_folder_reads_every_pair_and_the_split(tmp_path: Path):
    data = read_emotionroi(make_roi(tmp_path / "ROI", KEYS, KEYS[:3], KEYS[3:]))
    assert data.rejected == []
    assert sorted(data.maps["image_key"]) == sorted(KEYS)
    assert dict(zip(data.split["image_key"], data.split["split"])) == {
        "anger/1.jpg": "train", "joy/1.jpg": "train", "joy/2.jpg": "train", "fear/3.jpg": "test"}
    # The ESM covers 30x40 of 60x80 pixels at full level; JPEG blurs the edge slightly.
    assert data.maps["esm_mean"].to_numpy() == pytest.approx(0.25, abs=0.02)


def test_esm_of_the_wrong_size_or_mode_is_rejected(tmp_path: Path):
    root = make_roi(tmp_path / "ROI", KEYS, KEYS, [])
    Image.new("L", (40, 30)).save(root / "ground_truth/joy/1.jpg")
    Image.new("RGB", (80, 60)).save(root / "ground_truth/joy/2.jpg")
    (root / "ground_truth/fear/3.jpg").unlink()
    data = read_emotionroi(root)
    assert list(data.maps["image_key"]) == ["anger/1.jpg"]
    reasons = {r.file: r.reason for r in data.rejected if r.field == "esm"}
    assert reasons == {
        "ground_truth/joy/1.jpg": "ESM is 40x30, image is 80x60",
        "ground_truth/joy/2.jpg": "ESM mode is RGB, expected grayscale (L)",
        "ground_truth/fear/3.jpg": "ESM file missing",
    }
    # Their split lines are rejected too, naming why.
    split_reasons = [r.reason for r in data.rejected if r.field == "path"]
    assert len(split_reasons) == 3 and all("image was rejected" in r for r in split_reasons)


def test_split_lines_outside_the_root_missing_or_repeated_are_rejected(tmp_path: Path):
    root = make_roi(tmp_path / "ROI", KEYS, ["../../x.jpg", "anger/1.jpg", "/etc/passwd", "joy/1.jpg"],
                    ["anger/1.jpg", "sadness/99.jpg", "fear/3.jpg"])
    data = read_emotionroi(root)
    assert len(data.maps) == 4
    assert dict(zip(data.split["image_key"], data.split["split"])) == {
        "anger/1.jpg": "train", "joy/1.jpg": "train", "fear/3.jpg": "test"}
    rejected = {(r.file, r.line): r.reason for r in data.rejected}
    train, test = "training_testing_split/training.txt", "training_testing_split/testing.txt"
    assert rejected == {
        (train, 1): "'../../x.jpg' points outside the data root (its '..' climbs above the root)",
        (train, 3): "'/etc/passwd' points outside the data root (absolute path)",
        (test, 1): "'anger/1.jpg' already in train (line 2)",
        (test, 2): "'sadness/99.jpg': no such image under images/",
    }


def test_corrupt_image_is_rejected_and_the_rest_kept(tmp_path: Path):
    root = make_roi(tmp_path / "ROI", KEYS, KEYS, [])
    (root / "images/joy/2.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    data = read_emotionroi(root)
    assert sorted(data.maps["image_key"]) == ["anger/1.jpg", "fear/3.jpg", "joy/1.jpg"]
    assert any(r.file == "images/joy/2.jpg" and r.field == "image" for r in data.rejected)


def test_not_an_emotionroi_folder(tmp_path: Path):
    with pytest.raises(NotADatasetError, match="no images/ folder"):
        read_emotionroi(tmp_path)


def test_linked_emotion_folders_are_followed_and_dangling_links_named(tmp_path: Path):
    """Emotion folders linked to another disk read like plain ones; a dangling link is named, not skipped."""
    disk = make_roi(tmp_path / "disk", KEYS, [], [])
    root = tmp_path / "ROI"
    for sub in ("images", "ground_truth"):
        (root / sub).mkdir(parents=True)
        for emotion in ("anger", "joy", "fear"):
            (root / sub / emotion).symlink_to(disk / sub / emotion, target_is_directory=True)
    gone = tmp_path / "unplugged"
    (root / "images" / "sadness").symlink_to(gone / "sadness", target_is_directory=True)
    (root / "ground_truth" / "fear").unlink()
    (root / "ground_truth" / "fear").symlink_to(gone / "fear", target_is_directory=True)
    split_dir = root / "training_testing_split"
    split_dir.mkdir()
    # '..' that stays inside images/ is normalised, as written; it is not judged by where links point.
    (split_dir / "training.txt").write_text("anger/1.jpg\njoy/../joy/2.jpg\njoy/1.jpg\n")
    (split_dir / "testing.txt").write_text("fear/3.jpg\nanger/../../images/anger/1.jpg\n")

    data = read_emotionroi(root)
    assert sorted(data.maps["image_key"]) == ["anger/1.jpg", "joy/1.jpg", "joy/2.jpg"]
    assert set(data.maps["image_path"]) == {str(root.resolve() / "images" / k)
                                            for k in ("anger/1.jpg", "joy/1.jpg", "joy/2.jpg")}
    assert dict(zip(data.split["image_key"], data.split["split"])) == {
        "anger/1.jpg": "train", "joy/1.jpg": "train", "joy/2.jpg": "train"}
    test = "training_testing_split/testing.txt"
    assert {(r.file, r.line, r.field): r.reason for r in data.rejected} == {
        ("images/sadness", None, "folder"): f"images/sadness is a symbolic link to {gone / 'sadness'}, "
                                            f"which does not exist",
        ("ground_truth/fear/3.jpg", None, "esm"): f"ground_truth/fear is a symbolic link to {gone / 'fear'}, "
                                                  f"which does not exist",
        (test, 1, "path"): "'fear/3.jpg': image was rejected",
        (test, 2, "path"): "'anger/../../images/anger/1.jpg' points outside the data root "
                           "(its '..' climbs above the root)",
    }
