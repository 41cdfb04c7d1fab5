"""Bad input across every reader and command, gathered in one place.

Each case starts from a few valid records of one synthetic world, damages one thing and checks what
a user sees: either a named rejection (file, line or record, field, reason) while every valid record
of the same input is still returned (exact counts), or a clear error (exception type or exit status,
and a message naming the file, the line or the flag where that applies).

Some cases are also covered, in more depth, by the per-reader test files; here they are kept short
so that this file lists every kind of bad input in one place.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from emo_pipeline.cli import main
from emo_pipeline.core.emotions import PROB_COLUMNS
from emo_pipeline.core.rejection import NotADatasetError, Rejection
from emo_pipeline.datasets.build import resolve_image_paths
from emo_pipeline.image_emotion.image_data import load_rgb
from emo_pipeline.sources.emotion6 import GROUND_TRUTH, check_image, read_emotion6
from emo_pipeline.sources.emotionroi import SPLIT_FILES, read_emotionroi
from emo_pipeline.sources.visual_genome import read_visual_genome
from emo_pipeline.storage.warehouse import Warehouse

# A file of 100M pixels is over PIL's warning limit (89M) but under its refusal limit (179M): it is a
# valid picture and the readers take it; PIL's warning about it is expected here.
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


# ------------------------------------------------------------------------------------------------
# Fixtures: one synthetic world (`world`, the session's, read-only: each case damages a small copy of
# it), damaged image files


def jpeg_bytes(mode: str = "RGB", size: tuple[int, int] = (40, 30), color: object = (200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def bomb_jpeg() -> bytes:
    """A JPEG whose header claims 20000x20000 (400M pixels): PIL refuses it at open, before decoding."""
    data = bytearray(jpeg_bytes())
    sof = data.find(b"\xff\xc0")  # baseline frame header: length (2), precision (1), height (2), width (2)
    data[sof + 5:sof + 9] = struct.pack(">HH", 20000, 20000)
    return bytes(data)


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid 10000x10000 grayscale JPEG (100M pixels, about 1 MB on disk)."""
    path = tmp_path_factory.mktemp("big") / "big.jpg"
    Image.new("L", (10000, 10000), 128).save(path, quality=50)
    return path


# -- Emotion6 ------------------------------------------------------------------------------------

E6_ROWS = 6  # valid rows copied from the world: lines 2-7 of ground_truth.txt
NEW_KEY = "sadness/900.jpg"
VALID_VALUES = "3.0\t4.0\t0\t0\t0\t0\t1\t0\t0"  # valence, arousal, then the 7 probabilities


def emotion6_copy(world: Path, dst: Path) -> tuple[Path, list[str]]:
    """The header and first E6_ROWS rows of the world's Emotion6 with their images; (root, keys)."""
    src = world / "Emotion6"
    lines = (src / GROUND_TRUTH).read_text(encoding="utf-8").splitlines()
    body = lines[1:1 + E6_ROWS]
    keys = [row.split("\t")[0] for row in body]
    for key in keys:
        (dst / "images" / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / "images" / key, dst / "images" / key)
    (dst / GROUND_TRUTH).write_text("\n".join([lines[0], *body]) + "\n", encoding="utf-8")
    return dst, keys


def append_raw(root: Path, raw: bytes, newline: bool = True) -> None:
    with open(root / GROUND_TRUTH, "ab") as handle:
        handle.write(raw + (b"\n" if newline else b""))


def add_image(root: Path, key: str, data: bytes | None = None) -> Path:
    path = root / "images" / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes() if data is None else data)
    return path


def only_rejection(rejected: list[Rejection]) -> Rejection:
    assert len(rejected) == 1, rejected
    return rejected[0]


def test_emotion6_fixture_is_clean(world: Path, tmp_path: Path) -> None:
    root, keys = emotion6_copy(world, tmp_path / "E6")
    data = read_emotion6(root)
    assert data.rejected == []
    assert sorted(data.labels["image_key"]) == sorted(keys)


@pytest.mark.parametrize(
    ("bad_row", "field", "reason"),
    [
        pytest.param(f"{NEW_KEY}\t3.0\t4.0\tnan\t0\t0\t0\t1\t0\t0".encode(), "[prob. anger]",
                     "'nan' is not a finite number", id="nan-probability"),
        pytest.param(f"{NEW_KEY}\t3.0\t4.0\t0\t0\t0\t0\t1\tinf\t0".encode(), "[prob. surprise]",
                     "'inf' is not a finite number", id="infinite-probability"),
        pytest.param(f"{NEW_KEY}\t3.0\t4.0\t-0.2\t0\t0\t0\t1.2\t0\t0".encode(), "[prob. anger]",
                     "negative value -0.2", id="negative-probability"),
        pytest.param(f"{NEW_KEY}\t3.0\t4.0\t0.1\t0.1\t0\t0\t0.3\t0\t0".encode(), "probabilities",
                     "sum to 0.5, expected 1 within 0.001", id="probabilities-not-summing-to-1"),
        pytest.param(f"{NEW_KEY}\t3.0\t4.0\t0\t0\t0\tmuch\t1\t0\t0".encode(), "[prob. joy]",
                     "'much' is not a number", id="text-in-a-probability"),
        pytest.param(f"{NEW_KEY}\t3.0\t4.0\t0.5\t0.5".encode(), "row",
                     "expected 10 TAB-separated fields, found 5", id="too-few-fields"),
        pytest.param(f"calm/1.jpg\t{VALID_VALUES}".encode(), "[image_filename]",
                     "unknown keyword folder 'calm'", id="unknown-keyword-folder"),
        pytest.param(f"../../etc/passwd\t{VALID_VALUES}".encode(), "[image_filename]",
                     "'../../etc/passwd' is not of the form <keyword>/<n>.jpg", id="key-escaping-images"),
        pytest.param(f"sadness/901.jpg\t{VALID_VALUES}".encode(), "[image_filename]",
                     "image file missing: images/sadness/901.jpg", id="missing-image-file"),
        pytest.param(b"sadness/9\xff0.jpg\t" + VALID_VALUES.encode(), "row",
                     "not UTF-8", id="non-utf8-key"),
        pytest.param(b"sadness/900.jpg\t3.0\t4.0\t0\t0\t0\t0\t1\t0\t0\xe9", "row",
                     "not UTF-8", id="latin1-byte-in-a-number"),
    ],
)
def test_emotion6_bad_row_is_rejected_by_name(world: Path, tmp_path: Path, bad_row: bytes, field: str,
                                              reason: str) -> None:
    root, keys = emotion6_copy(world, tmp_path / "E6")
    add_image(root, NEW_KEY)
    append_raw(root, bad_row)
    data = read_emotion6(root)
    rejection = only_rejection(data.rejected)
    assert (rejection.file, rejection.line, rejection.field) == (GROUND_TRUTH, E6_ROWS + 2, field)
    assert reason in rejection.reason
    assert sorted(data.labels["image_key"]) == sorted(keys), "a valid row was lost"


def test_emotion6_duplicate_key_keeps_the_first_row(world: Path, tmp_path: Path) -> None:
    root, keys = emotion6_copy(world, tmp_path / "E6")
    clean = read_emotion6(root).labels
    append_raw(root, f"{keys[1]}\t{VALID_VALUES}".encode())
    data = read_emotion6(root)
    rejection = only_rejection(data.rejected)
    assert (rejection.line, rejection.field) == (E6_ROWS + 2, "[image_filename]")
    assert rejection.reason == f"duplicate key '{keys[1]}', first given on line 3"
    pd.testing.assert_frame_equal(data.labels, clean)  # the first row is the one kept


@pytest.mark.parametrize(
    ("tail", "field", "reason"),
    [
        # the file ends after the third field of its last row
        pytest.param(f"{NEW_KEY}\t3.0\t4.", "row", "expected 10 TAB-separated fields, found 3",
                     id="cut-after-a-field"),
        # the file ends inside the last number: 0.4 became "0."
        pytest.param(f"{NEW_KEY}\t3.0\t4.0\t0\t0\t0\t0\t0.6\t0\t0.", "probabilities",
                     "sum to 0.6, expected 1 within 0.001", id="cut-inside-a-number"),
    ],
)
def test_emotion6_truncated_file(world: Path, tmp_path: Path, tail: str, field: str, reason: str) -> None:
    root, keys = emotion6_copy(world, tmp_path / "E6")
    add_image(root, NEW_KEY)
    append_raw(root, tail.encode(), newline=False)  # no final newline: the file was cut here
    data = read_emotion6(root)
    rejection = only_rejection(data.rejected)
    assert (rejection.line, rejection.field) == (E6_ROWS + 2, field)
    assert reason in rejection.reason
    assert len(data.labels) == E6_ROWS


def _replace(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def _directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _link_outside(path: Path) -> None:
    outside = path.parents[3] / "outside.jpg"  # beside the data set folder, not under images/
    outside.write_bytes(jpeg_bytes())
    path.unlink()
    path.symlink_to(outside)


def _dangling_link(path: Path) -> None:
    path.unlink()
    path.symlink_to(path.parents[3] / "unplugged" / path.name)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        pytest.param(_replace(b""), "is unreadable: cannot identify image file", id="zero-byte-jpeg"),
        pytest.param(_replace(bytes(range(256)) * 4), "is unreadable: cannot identify image file",
                     id="random-bytes"),
        pytest.param(lambda p: p.write_bytes(p.read_bytes()[:300]), "is unreadable", id="truncated-jpeg"),
        pytest.param(_replace(bomb_jpeg()), "is unreadable: Image size (400000000 pixels) exceeds limit",
                     id="decompression-bomb-20000x20000"),
        pytest.param(_directory, "image file missing", id="directory-instead-of-image"),
        pytest.param(_dangling_link, "is a symbolic link to ", id="dangling-symlink"),
    ],
)
def test_emotion6_bad_image_is_rejected_by_name(world: Path, tmp_path: Path, damage: Callable[[Path], None],
                                                reason: str) -> None:
    root, keys = emotion6_copy(world, tmp_path / "data" / "E6")
    damage(root / "images" / keys[2])
    data = read_emotion6(root)
    rejection = only_rejection(data.rejected)
    assert (rejection.file, rejection.line, rejection.field) == (GROUND_TRUTH, 4, "[image_filename]")
    assert reason in rejection.reason and keys[2] in rejection.reason
    assert sorted(data.labels["image_key"]) == sorted(keys[:2] + keys[3:])


def test_emotion6_image_linked_outside_images_is_followed(world: Path, tmp_path: Path) -> None:
    """A link the user put inside the data set is theirs: followed wherever it points (docs/data.md)."""
    root, keys = emotion6_copy(world, tmp_path / "data" / "E6")
    _link_outside(root / "images" / keys[2])
    data = read_emotion6(root)
    assert data.rejected == []
    assert len(data.labels) == E6_ROWS
    assert data.labels.set_index("image_key").loc[keys[2], "image_path"] == str(root.resolve() / "images" / keys[2])


@pytest.mark.parametrize(
    ("mode", "size", "color", "rgb"),
    [
        pytest.param("CMYK", (40, 30), (0, 255, 255, 0), (255, 0, 0), id="cmyk-jpeg"),
        pytest.param("L", (40, 30), 90, (90, 90, 90), id="grayscale-jpeg"),
        pytest.param("RGB", (1, 1), (10, 200, 30), (10, 200, 30), id="1x1-image"),
    ],
)
def test_emotion6_unusual_but_valid_images_are_kept_and_read_as_rgb(
        world: Path, tmp_path: Path, mode: str, size: tuple[int, int], color: object, rgb: tuple) -> None:
    root, keys = emotion6_copy(world, tmp_path / "E6")
    path = add_image(root, keys[0], jpeg_bytes(mode, size, color))
    data = read_emotion6(root)
    assert data.rejected == []
    assert len(data.labels) == E6_ROWS
    row = data.labels.set_index("image_key").loc[keys[0]]
    assert (row["width"], row["height"]) == size
    pixels = load_rgb(path, 16)  # how training and inference read it
    assert pixels.shape == (16, 16, 3) and pixels.dtype == np.uint8
    np.testing.assert_allclose(pixels[8, 8], rgb, atol=6)


def pixel_bytes_allocated(read: Callable[[], object]) -> int:
    """An upper bound of the pixel memory PIL allocates while `read` runs (blocks x block size)."""
    Image.core.reset_stats()
    read()
    return Image.core.get_stats()["allocated_blocks"] * Image.core.get_block_size()


def test_emotion6_10000x10000_image_is_kept_in_bounded_memory(world: Path, tmp_path: Path, big_jpeg: Path) -> None:
    """100M pixels: the reader and the loader decode it at 1/8 scale, never at full size (100 MB)."""
    root, keys = emotion6_copy(world, tmp_path / "E6")
    shutil.copy(big_jpeg, root / "images" / keys[0])
    data = read_emotion6(root)
    assert (len(data.labels), data.rejected) == (E6_ROWS, [])
    row = data.labels.set_index("image_key").loc[keys[0]]
    assert (row["width"], row["height"]) == (10000, 10000)
    full_decode = 10000 * 10000
    assert pixel_bytes_allocated(lambda: check_image(big_jpeg)) < full_decode / 2  # what the reader runs per image
    assert pixel_bytes_allocated(lambda: load_rgb(big_jpeg, 32)) < full_decode  # training and inference
    assert load_rgb(big_jpeg, 32).shape == (32, 32, 3)


def test_emotion6_header_only_is_an_empty_table_of_the_right_types(world: Path, tmp_path: Path, capsys) -> None:
    root, _ = emotion6_copy(world, tmp_path / "E6")
    header = (root / GROUND_TRUTH).read_text(encoding="utf-8").splitlines()[0]
    (root / GROUND_TRUTH).write_text(header + "\n", encoding="utf-8")
    data = read_emotion6(root)
    assert len(data.labels) == 0 and data.rejected == []
    full = read_emotion6(emotion6_copy(world, tmp_path / "full")[0]).labels
    assert data.labels.dtypes.to_dict() == full.dtypes.to_dict()
    assert main(["inspect", "emotion6", str(root)]) == 0
    assert "emotion6: 0 valid images, 0 rejected records" in capsys.readouterr().out


def test_emotion6_every_row_rejected_keeps_the_types_and_names_each(world: Path, tmp_path: Path) -> None:
    root, keys = emotion6_copy(world, tmp_path / "E6")
    shutil.rmtree(root / "images")
    (root / "images").mkdir()
    data = read_emotion6(root)
    assert len(data.labels) == 0
    assert [(r.line, r.reason) for r in data.rejected] == [
        (line, f"image file missing: images/{key}") for line, key in enumerate(keys, start=2)]
    assert all(data.labels[c].dtype == np.float64 for c in ("valence", "arousal", *PROB_COLUMNS))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        pytest.param(lambda root: (root / GROUND_TRUTH).write_bytes(b""),
                     r"ground_truth\.txt:1: header is not Emotion6's \(''\)", id="zero-byte-ground-truth"),
        pytest.param(lambda root: (root / GROUND_TRUTH).write_text(
            (root / GROUND_TRUTH).read_text(encoding="utf-8"), encoding="utf-16"),
            r"ground_truth\.txt:1: header is not Emotion6's", id="utf16-ground-truth"),
        pytest.param(lambda root: (root / GROUND_TRUTH).unlink(), "no ground_truth.txt", id="missing-ground-truth"),
        pytest.param(lambda root: shutil.rmtree(root / "images"), "no images/ folder", id="missing-images-folder"),
    ],
)
def test_emotion6_folder_that_cannot_be_read_is_a_clear_error(world: Path, tmp_path: Path,
                                                              damage: Callable[[Path], None], message: str) -> None:
    root, _ = emotion6_copy(world, tmp_path / "E6")
    damage(root)
    with pytest.raises(NotADatasetError, match=message) as error:
        read_emotion6(root)
    assert str(root) in str(error.value)


# -- EmotionROI ----------------------------------------------------------------------------------

ROI_KEYS = [f"{emotion}/{n}.jpg" for emotion in ("anger", "joy") for n in (1, 2, 3)]
TRAIN = SPLIT_FILES["train"]


def roi_copy(world: Path, dst: Path) -> dict[str, str]:
    """Six image/map pairs of the world's EmotionROI with their split lines; key -> split."""
    src = world / "EmotionROI"
    split_of = {line.strip(): split for split, rel in SPLIT_FILES.items()
                for line in (src / rel).read_text(encoding="utf-8").splitlines() if line.strip()}
    for key in ROI_KEYS:
        for folder in ("images", "ground_truth"):
            (dst / folder / key).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src / folder / key, dst / folder / key)
    for split, rel in SPLIT_FILES.items():
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        (dst / rel).write_text("".join(f"{k}\n" for k in ROI_KEYS if split_of[k] == split), encoding="utf-8")
    return {k: split_of[k] for k in ROI_KEYS}


def split_line(root: Path, split: str, key: str) -> int:
    lines = (root / SPLIT_FILES[split]).read_text(encoding="utf-8").splitlines()
    return lines.index(key) + 1


def test_emotionroi_fixture_is_clean(world: Path, tmp_path: Path) -> None:
    splits = roi_copy(world, tmp_path / "ROI")
    data = read_emotionroi(tmp_path / "ROI")
    assert data.rejected == []
    assert dict(zip(data.split["image_key"], data.split["split"])) == splits
    assert set(splits.values()) == {"train", "test"}


def _esm_size(root: Path, key: str) -> None:
    Image.new("L", (10, 10)).save(root / "ground_truth" / key)


def _esm_rgb(root: Path, key: str) -> None:
    with Image.open(root / "images" / key) as image:
        Image.new("RGB", image.size).save(root / "ground_truth" / key)


@pytest.mark.parametrize(
    ("damage", "file", "field", "reason"),
    [
        pytest.param(lambda root, key: (root / "ground_truth" / key).unlink(), "ground_truth", "esm",
                     "ESM file missing", id="esm-missing"),
        pytest.param(_esm_size, "ground_truth", "esm", "ESM is 10x10, image is", id="esm-wrong-size"),
        pytest.param(_esm_rgb, "ground_truth", "esm", "ESM mode is RGB, expected grayscale (L)", id="esm-rgb"),
        pytest.param(lambda root, key: (root / "ground_truth" / key).write_bytes(b""), "ground_truth", "esm",
                     "cannot identify image file", id="esm-zero-byte"),
        pytest.param(lambda root, key: (root / "ground_truth" / key).write_bytes(
            (root / "ground_truth" / key).read_bytes()[:200]), "ground_truth", "esm", "Truncated File Read",
            id="esm-truncated"),
        pytest.param(lambda root, key: (root / "images" / key).write_bytes(b""), "images", "image",
                     "unreadable: cannot identify image file", id="image-zero-byte"),
        pytest.param(lambda root, key: (root / "images" / key).write_bytes(bomb_jpeg()), "images", "image",
                     "unreadable: Image size (400000000 pixels) exceeds limit", id="image-decompression-bomb"),
    ],
)
def test_emotionroi_bad_pair_is_rejected_with_its_split_line(world: Path, tmp_path: Path, damage, file: str,
                                                             field: str, reason: str) -> None:
    root = tmp_path / "ROI"
    splits = roi_copy(world, root)
    key = ROI_KEYS[4]
    damage(root, key)
    data = read_emotionroi(root)
    assert sorted(data.maps["image_key"]) == sorted(k for k in ROI_KEYS if k != key)
    pair, line = sorted(data.rejected, key=lambda r: r.field)
    assert (pair.file, pair.line, pair.field) == (f"{file}/{key}", None, field)
    assert reason in pair.reason
    assert (line.file, line.line, line.field) == (SPLIT_FILES[splits[key]], split_line(root, splits[key], key), "path")
    assert line.reason == f"'{key}': image was rejected"
    assert len(data.split) == len(ROI_KEYS) - 1


def test_emotionroi_bad_split_lines_are_rejected_and_the_rest_assigned(world: Path, tmp_path: Path) -> None:
    root = tmp_path / "ROI"
    splits = roi_copy(world, root)
    in_train = next(k for k, s in splits.items() if s == "train")
    n = len((root / TRAIN).read_text(encoding="utf-8").splitlines())
    first = split_line(root, "train", in_train)
    with open(root / TRAIN, "ab") as handle:
        handle.write(b"sadness/999.jpg\n../../etc/passwd\n/etc/passwd\nanger/\xff.jpg\n" + in_train.encode() + b"\n")
    data = read_emotionroi(root)
    assert len(data.maps) == len(ROI_KEYS)
    assert dict(zip(data.split["image_key"], data.split["split"])) == splits
    assert [(r.file, r.line, r.field, r.reason) for r in data.rejected] == [
        (TRAIN, n + 1, "path", "'sadness/999.jpg': no such image under images/"),
        (TRAIN, n + 2, "path", "'../../etc/passwd' points outside the data root (its '..' climbs above the root)"),
        (TRAIN, n + 3, "path", "'/etc/passwd' points outside the data root (absolute path)"),
        (TRAIN, n + 4, "path", "not UTF-8"),
        (TRAIN, n + 5, "path", f"'{in_train}' already in train (line {first})"),
    ]


def test_emotionroi_missing_split_file_is_one_rejection(world: Path, tmp_path: Path) -> None:
    root = tmp_path / "ROI"
    splits = roi_copy(world, root)
    (root / TRAIN).unlink()
    data = read_emotionroi(root)
    assert only_rejection(data.rejected) == Rejection(TRAIN, None, "file", "split file missing")
    assert len(data.maps) == len(ROI_KEYS)
    assert sorted(data.split["image_key"]) == sorted(k for k, s in splits.items() if s == "test")


def test_emotionroi_1x1_pair_is_kept(world: Path, tmp_path: Path) -> None:
    root = tmp_path / "ROI"
    roi_copy(world, root)
    Image.new("RGB", (1, 1), (0, 90, 0)).save(root / "images" / ROI_KEYS[0])
    Image.new("L", (1, 1), 255).save(root / "ground_truth" / ROI_KEYS[0])
    data = read_emotionroi(root)
    assert data.rejected == []
    row = data.maps.set_index("image_key").loc[ROI_KEYS[0]]
    assert (row["width"], row["height"], row["esm_mean"]) == (1, 1, pytest.approx(1.0, abs=0.02))


def test_emotionroi_empty_data_set_is_zero_typed_rows(tmp_path: Path, capsys) -> None:
    root = tmp_path / "ROI"
    for folder in ("images", "ground_truth"):
        (root / folder).mkdir(parents=True)
    for rel in SPLIT_FILES.values():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("", encoding="utf-8")
    data = read_emotionroi(root)
    assert (len(data.maps), len(data.split), data.rejected) == (0, 0, [])
    assert str(data.maps["width"].dtype) == "int32" and str(data.maps["esm_mean"].dtype) == "float64"
    assert main(["inspect", "emotionroi", str(root)]) == 0
    assert "emotionroi: 0 valid images, 0 rejected records" in capsys.readouterr().out


# -- Visual Genome -------------------------------------------------------------------------------

VG_JSON = ("image_data.json", "objects.json", "relationships.json", "attributes.json")
VG_RECORDS = 5
Records = dict[str, list[dict]]


def vg_copy(world: Path, dst: Path, edit: Callable[[Records], None] | None = None) -> Records:
    """The first VG_RECORDS records of each annotation file of the world (edited), and the alias files."""
    src = world / "VG"
    dst.mkdir(parents=True, exist_ok=True)
    records = {name: json.loads((src / name).read_text(encoding="utf-8"))[:VG_RECORDS] for name in VG_JSON}
    if edit is not None:
        edit(records)
    for name, rows in records.items():
        (dst / name).write_text(json.dumps(rows), encoding="utf-8")
    for name in ("object_alias.txt", "relationship_alias.txt"):
        shutil.copy(src / name, dst / name)
    return records


def count(records: Records, name: str, key: str, positions: range | None = None) -> int:
    """Entries of `key` lists in records of `name` (1-based positions `positions`, default all)."""
    rows = records[name]
    chosen = [rows[p - 1] for p in positions] if positions is not None else rows
    return sum(len(r.get(key, [])) for r in chosen)


def test_vg_fixture_is_clean(world: Path, tmp_path: Path) -> None:
    records = vg_copy(world, tmp_path / "VG")
    data = read_visual_genome(tmp_path / "VG")
    assert data.rejected == []
    assert (len(data.images), len(data.objects), len(data.relationships)) == (
        VG_RECORDS, count(records, "objects.json", "objects"), count(records, "relationships.json", "relationships"))
    assert count(records, "objects.json", "objects", range(1, 2)) >= 2


def test_vg_truncated_objects_keeps_every_complete_record(world: Path, tmp_path: Path) -> None:
    records = vg_copy(world, tmp_path / "VG")
    complete = json.dumps(records["objects.json"][:3])[:-1]  # "[rec1, rec2, rec3"
    (tmp_path / "VG/objects.json").write_text(json.dumps(records["objects.json"])[:len(complete) + 30],
                                              encoding="utf-8")
    data = read_visual_genome(tmp_path / "VG")
    rejection = only_rejection(data.rejected)
    assert (rejection.file, rejection.line, rejection.field) == ("objects.json", 4, "(record)")
    assert rejection.reason.startswith("truncated JSON") and "the 3 records before it were kept" in rejection.reason
    assert len(data.objects) == count(records, "objects.json", "objects", range(1, 4))
    assert len(data.relationships) == count(records, "relationships.json", "relationships")


def test_vg_truncated_image_data_names_the_records_it_orphans(world: Path, tmp_path: Path) -> None:
    records = vg_copy(world, tmp_path / "VG")
    complete = json.dumps(records["image_data.json"][:2])[:-1]
    (tmp_path / "VG/image_data.json").write_text(json.dumps(records["image_data.json"])[:len(complete) + 20],
                                                 encoding="utf-8")
    data = read_visual_genome(tmp_path / "VG")
    assert len(data.images) == 2
    by_file: dict[str, list[Rejection]] = {}
    for r in data.rejected:
        by_file.setdefault(r.file, []).append(r)
    (damage,) = by_file.pop("image_data.json")
    assert (damage.line, damage.field) == (3, "(record)") and "truncated JSON" in damage.reason
    for name, rejected in by_file.items():  # each record of a lost image is named once
        assert [(r.line, r.field) for r in rejected] == [(p, "image_id") for p in (3, 4, 5)], name
        assert all("is not a valid image of image_data.json" in r.reason for r in rejected)
    assert len(data.objects) == count(records, "objects.json", "objects", range(1, 3))


def test_vg_non_utf8_relationships_keeps_every_relationship(world: Path, tmp_path: Path) -> None:
    records = vg_copy(world, tmp_path / "VG")
    raw = (tmp_path / "VG/relationships.json").read_bytes()
    at = raw.index(b'"predicate": "') + len(b'"predicate": "')
    (tmp_path / "VG/relationships.json").write_bytes(raw[:at] + b"\xff\xfe" + raw[at:])
    data = read_visual_genome(tmp_path / "VG")
    rejection = only_rejection(data.rejected)  # the record and field are named; the record is kept
    predicate = records["relationships.json"][0]["relationships"][0]["predicate"]
    assert (rejection.file, rejection.line, rejection.field) == ("relationships.json", 1, "relationships[0].predicate")
    assert rejection.reason == f"invalid UTF-8, read as U+FFFD: {chr(0xFFFD) * 2 + predicate!r}; the record is kept"
    assert len(data.relationships) == count(records, "relationships.json", "relationships")
    assert len(data.objects) == count(records, "objects.json", "objects")


def _del(name: str, position: int, key: str) -> Callable[[Records], None]:
    return lambda records: records[name][position - 1].pop(key)


def _negative_width(records: Records) -> None:
    records["objects.json"][0]["objects"][1]["w"] = -7


def _duplicate_image(records: Records) -> None:
    records["image_data.json"].append(dict(records["image_data.json"][1]))


def _duplicate_record(name: str) -> Callable[[Records], None]:
    return lambda records: records[name].append(json.loads(json.dumps(records[name][1])))


def _escaping_url(records: Records) -> None:
    records["image_data.json"][1]["url"] = "https://cs.stanford.edu/VG_100K/../../../etc/passwd"


def _objects_without(*positions: int) -> Callable[[Records], int]:
    """Objects kept when the records at `positions` of objects.json lose all of theirs."""
    return lambda records: (count(records, "objects.json", "objects")
                            - sum(count(records, "objects.json", "objects", range(p, p + 1)) for p in positions))


@pytest.mark.parametrize(
    ("edit", "rejection", "images", "objects", "orphaned"),
    [
        # orphaned: the record position whose image is lost, so that its records in the other files are
        # rejected too, each by name
        pytest.param(_del("image_data.json", 3, "image_id"), ("image_data.json", 3, "image_id", "missing"),
                     4, _objects_without(3), 3, id="image-record-without-image_id"),
        pytest.param(_del("objects.json", 3, "image_id"), ("objects.json", 3, "image_id", "missing"),
                     5, _objects_without(3), None, id="objects-record-without-image_id"),
        pytest.param(_negative_width, ("objects.json", 1, "objects[1].w", "negative box size: x="),
                     5, lambda records: count(records, "objects.json", "objects") - 1, None,
                     id="box-with-negative-width"),
        pytest.param(_duplicate_image, ("image_data.json", 6, "image_id", "duplicate image_id 2 (first at record 2)"),
                     5, _objects_without(), None, id="duplicate-image-id"),
        pytest.param(_duplicate_record("objects.json"),
                     ("objects.json", 6, "image_id", "duplicate image_id 2 (first at record 2)"),
                     5, _objects_without(6), None, id="duplicate-objects-record"),
        pytest.param(_duplicate_record("relationships.json"),
                     ("relationships.json", 6, "image_id", "duplicate image_id 2 (first at record 2)"),
                     5, _objects_without(), None, id="duplicate-relationships-record"),
        pytest.param(_escaping_url, ("image_data.json", 2, "url", "names neither VG_100K/ nor VG_100K_2/: https://"),
                     4, _objects_without(2), 2, id="url-escaping-the-root"),
    ],
)
def test_vg_bad_record_is_rejected_by_name(world: Path, tmp_path: Path, edit, rejection: tuple, images: int,
                                           objects: Callable[[Records], int], orphaned: int | None) -> None:
    records = vg_copy(world, tmp_path / "VG", edit)
    data = read_visual_genome(tmp_path / "VG")
    named = [r for r in data.rejected if (r.file, r.line) == rejection[:2]]
    assert [(r.file, r.line, r.field) for r in named] == [rejection[:3]]
    assert named[0].reason.startswith(rejection[3])
    others = [r for r in data.rejected if r not in named]
    expected = {(name, orphaned, "image_id") for name in VG_JSON[1:]} if orphaned else set()
    assert {(r.file, r.line, r.field) for r in others} == expected and len(others) == len(expected)
    assert all("is not a valid image of image_data.json" in r.reason for r in others)
    assert len(data.images) == images
    assert len(data.objects) == objects(records)


def test_vg_non_utf8_alias_line_is_rejected_and_the_rest_mapped(world: Path, tmp_path: Path) -> None:
    records = vg_copy(world, tmp_path / "VG")
    alias = tmp_path / "VG/object_alias.txt"
    alias.write_bytes(b"caf\xe9,cafe\n" + alias.read_bytes())
    data = read_visual_genome(tmp_path / "VG")
    assert only_rejection(data.rejected) == Rejection("object_alias.txt", 1, "(line)", "not UTF-8 text")
    assert len(data.objects) == count(records, "objects.json", "objects")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        pytest.param("objects.json", b"", r"objects\.json holds nothing \(empty file\)", id="zero-byte-objects"),
        pytest.param("image_data.json", b"[]", r"image_data\.json holds no valid image record",
                     id="empty-image-list"),
        pytest.param("image_data.json", None, r"has no image_data\.json", id="missing-image-data"),
    ],
)
def test_vg_folder_that_cannot_be_read_is_a_clear_error(world: Path, tmp_path: Path, name: str,
                                                        content: bytes | None, message: str) -> None:
    vg_copy(world, tmp_path / "VG")
    if content is None:
        (tmp_path / "VG" / name).unlink()
    else:
        (tmp_path / "VG" / name).write_bytes(content)
    with pytest.raises(NotADatasetError, match=message):
        read_visual_genome(tmp_path / "VG")


def test_vg_zero_byte_relationships_is_one_rejection(world: Path, tmp_path: Path) -> None:
    records = vg_copy(world, tmp_path / "VG")
    (tmp_path / "VG/relationships.json").write_bytes(b"")
    data = read_visual_genome(tmp_path / "VG")
    rejection = only_rejection(data.rejected)
    assert (rejection.file, rejection.line, rejection.field) == ("relationships.json", None, "(file)")
    assert "nothing (empty file)" in rejection.reason
    assert len(data.relationships) == 0
    assert len(data.objects) == count(records, "objects.json", "objects")


def test_vg_image_paths_never_leave_the_data_root(tmp_path: Path) -> None:
    root = tmp_path / "VG"
    (root / "VG_100K").mkdir(parents=True)
    (root / "VG_100K/1.jpg").write_bytes(jpeg_bytes())
    (tmp_path / "secret.jpg").write_bytes(jpeg_bytes())
    (root / "VG_100K/link.jpg").symlink_to(tmp_path / "secret.jpg")
    images = pd.DataFrame({"image_id": [1, 2, 3, 4, 5],
                           "image_path": pd.array(["VG_100K/1.jpg", "../../etc/passwd", "/etc/passwd",
                                                   "VG_100K/link.jpg", None], dtype="string")})
    resolved = resolve_image_paths(images, root)["image_path"]
    # Decided on the path as written: `..` and absolute paths never leave the root; a link the user put
    # inside the root is followed.
    assert resolved.isna().tolist() == [False, True, True, False, True]
    base = root.resolve()
    assert resolved[[0, 3]].tolist() == [str(base / "VG_100K/1.jpg"), str(base / "VG_100K/link.jpg")]


# ------------------------------------------------------------------------------------------------
# Commands, as a user runs them


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained small CNN saved with its card: enough to run `predict` end to end."""
    import torch

    from emo_pipeline.models import build_model
    from emo_pipeline.storage.model_store import ModelCard, save_torch_model

    torch.manual_seed(0)
    model, _ = build_model("small_cnn")
    models = tmp_path_factory.mktemp("models")
    save_torch_model(models, ModelCard("small_cnn", "image", "small_cnn", 32), model)
    return models


def test_predict_names_each_unreadable_file_and_predicts_the_others(tmp_path: Path, small_model: Path,
                                                                    big_jpeg: Path, capsys) -> None:
    good = {"cmyk.jpg": jpeg_bytes("CMYK", color=(0, 255, 255, 0)), "gray.jpg": jpeg_bytes("L", color=90),
            "one_pixel.jpg": jpeg_bytes(size=(1, 1)), "photo.jpg": jpeg_bytes()}
    bad = {"zero.jpg": b"", "text.jpg": b"holiday photo, honest", "bomb.jpg": bomb_jpeg()}
    for name, data in {**good, **bad}.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "a_folder").mkdir()
    order = ["cmyk.jpg", "zero.jpg", "gray.jpg", "a_folder", "missing.jpg", "one_pixel.jpg", "text.jpg",
             "bomb.jpg", "photo.jpg"]
    paths = [str(tmp_path / name) for name in order] + [str(big_jpeg)]
    code = main(["predict", *paths, "--model", "small_cnn", "--models", str(small_model), "--json"])
    out, err = capsys.readouterr()
    assert code == 1
    readable = [str(tmp_path / n) for n in order if n in good] + [str(big_jpeg)]
    rows = json.loads(out)
    assert [row["image"] for row in rows] == readable
    assert all(abs(sum(row["distribution"].values()) - 1) < 1e-5 for row in rows)
    reasons = {"zero.jpg": "empty file (0 bytes)", "a_folder": "a folder, not a file", "missing.jpg": "no such file",
               "text.jpg": "not in an image format PIL reads", "bomb.jpg": "too many pixels to decode safely (Image"}
    lines = err.strip().splitlines()
    assert len(lines) == len(reasons)
    for line, name in zip(lines, [n for n in order if n not in good]):
        assert line.startswith(f"emo-pipeline predict: skipped {tmp_path / name}: {reasons[name]}"), line


def test_predict_with_no_readable_file_or_no_model(tmp_path: Path, small_model: Path, capsys) -> None:
    (tmp_path / "zero.jpg").write_bytes(b"")
    assert main(["predict", str(tmp_path / "zero.jpg"), "--model", "small_cnn", "--models", str(small_model)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and f"skipped {tmp_path / 'zero.jpg'}" in err
    assert main(["predict", str(tmp_path / "zero.jpg"), "--model", "nope", "--models", str(small_model)]) == 2
    assert "emo-pipeline predict: no model 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["objects", "scene"])
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["--happiness", "1"], "unknown emotion(s) 'happiness': choose from anger, disgust, fear, joy, "
                     "sadness, surprise, neutral", id="unknown-emotion"),
        pytest.param(["--joy", "1", "--Joy=2"], "unknown emotion(s) 'Joy'", id="unknown-emotion-with-equals"),
        pytest.param(["--anger", "-1", "--joy", "1"], "must be finite and non-negative, got anger=-1",
                     id="negative-weight"),
        pytest.param(["--joy", "nan"], "must be finite and non-negative, got joy=nan", id="nan-weight"),
        pytest.param(["--joy", "inf"], "must be finite and non-negative, got joy=inf", id="infinite-weight"),
        pytest.param(["--joy", "0"], "give at least one emotion a positive weight", id="all-zero"),
        pytest.param(["--joy", "1", "surprise", "0.3"], "unexpected argument 'surprise'", id="stray-argument"),
        pytest.param(["--joy", "1", "-k", "0"], "-k must be at least 1, got 0", id="k-zero"),
    ],
)
def test_emotion_flags_refuse_bad_weights(tmp_path: Path, capsys, command: str, argv: list[str],
                                          message: str) -> None:
    extra = ["--out", str(tmp_path / "scenes")] if command == "scene" else []
    nowhere = ["--warehouse", str(tmp_path / "no_warehouse"), "--models", str(tmp_path / "no_models")]
    assert main([command, *argv, *extra, *nowhere]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = err.strip().splitlines()
    assert line.startswith(f"emo-pipeline {command}: ") and message in line
    assert not (tmp_path / "scenes").exists()


def test_emotion_flag_that_is_not_a_number(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["objects", "--joy", "lots"])
    assert exit_.value.code == 2
    assert "argument --joy: invalid float value: 'lots'" in capsys.readouterr().err


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    store = Warehouse(tmp_path / "wh")
    store.write_table("scores", pd.DataFrame({"emotion": ["joy", "fear", "joy"], "score": [0.5, 0.25, 0.75]}))
    return store


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        pytest.param("COPY (SELECT * FROM scores) TO '{tmp}/out.csv'", "read-only: COPY statements are refused",
                     id="copy-to"),
        pytest.param("ATTACH '{tmp}/other.duckdb' AS other", "read-only: ATTACH statements are refused", id="attach"),
        pytest.param("INSTALL httpfs", "read-only: LOAD statements are refused", id="install-httpfs"),
        pytest.param("LOAD httpfs", "read-only: LOAD statements are refused", id="load-httpfs"),
        pytest.param("DELETE FROM scores", "read-only: DELETE statements are refused", id="delete"),
        pytest.param("SELECT 1; DELETE FROM scores", "read-only: DELETE statements are refused",
                     id="delete-after-a-select"),
        pytest.param("SET threads = 1", "read-only: SET statements are refused", id="set"),
        pytest.param("  ;  ", "no SQL statement given", id="empty"),
        # A query naming a URL would make DuckDB download and load httpfs on its own; one naming a
        # file outside the tables would read it. Neither may.
        pytest.param("SELECT * FROM read_parquet('https://example.invalid/x.parquet')",
                     "Cannot access file \"https://example.invalid/x.parquet\" - file system operations are "
                     "disabled by configuration", id="select-that-would-install-httpfs"),
        pytest.param("SELECT * FROM read_text('/etc/hostname')",
                     "Cannot access file \"/etc/hostname\" - file system operations are disabled by configuration",
                     id="select-outside-the-tables"),
        pytest.param("SELECT * FROM no_such_table", "CatalogException", id="unknown-table"),
    ],
)
def test_sql_refuses_with_a_clear_message_and_changes_nothing(warehouse: Warehouse, tmp_path: Path, capsys,
                                                              sql: str, message: str) -> None:
    before = _snapshot(tmp_path)
    assert main(["sql", "--warehouse", str(warehouse.root), sql.format(tmp=tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("emo-pipeline sql: ")
    assert message in err
    assert "download" not in err.lower()
    assert _snapshot(tmp_path) == before
    assert len(warehouse.query("SELECT * FROM scores")) == 3


def test_sql_without_a_warehouse(tmp_path: Path, capsys) -> None:
    assert main(["sql", "--warehouse", str(tmp_path / "none"), "SELECT 1"]) == 2
    assert f"emo-pipeline sql: no catalog at {tmp_path / 'none' / 'catalog.duckdb'}" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize(
    ("dataset", "where", "reason"),
    [
        pytest.param("emotion6", "EmotionROI", "no ground_truth.txt", id="emotion6-given-emotionroi"),
        pytest.param("emotionroi", "Emotion6", "no ground_truth/ folder", id="emotionroi-given-emotion6"),
        pytest.param("vg", "Emotion6", "has no image_data.json", id="vg-given-emotion6"),
        pytest.param("vg", "planted_scenes.json", "is not a folder", id="vg-given-a-file"),
        pytest.param("emotion6", "absent", "not a folder", id="emotion6-given-a-missing-path"),
    ],
)
def test_inspect_a_folder_that_is_not_the_data_set(world: Path, capsys, dataset: str, where: str,
                                                   reason: str) -> None:
    assert main(["inspect", dataset, str(world / where)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = err.strip().splitlines()
    assert line.startswith(f"emo-pipeline inspect: not a {dataset} folder: ")
    assert reason in line and str(world / where) in line


def test_inspect_vg_json_lists_the_damage_and_exits_0(world: Path, tmp_path: Path, capsys) -> None:
    records = vg_copy(world, tmp_path / "VG", _negative_width)
    assert main(["inspect", "vg", str(tmp_path / "VG"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == VG_RECORDS
    assert report["tables"]["objects"] == count(records, "objects.json", "objects") - 1
    (rejection,) = report["rejected"]
    assert (rejection["file"], rejection["line"], rejection["field"]) == ("objects.json", 1, "objects[1].w")


def test_synth_into_a_path_under_a_file(tmp_path: Path, capsys) -> None:
    (tmp_path / "a_file").write_text("not a folder")
    assert main(["synth", "--out", str(tmp_path / "a_file" / "world")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"emo-pipeline synth: cannot write the world to {tmp_path / 'a_file' / 'world'}: ")
    assert "Traceback" not in err
