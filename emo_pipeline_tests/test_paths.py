"""Paths from data files: kept inside the data root as written, links inside the root followed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from emo_pipeline.core.paths import OutsideRoot, link_problem, path_under


@pytest.mark.parametrize(
    ("written", "parts"),
    [
        ("anger/1.jpg", ("anger", "1.jpg")),
        ("anger\\1.jpg", ("anger", "1.jpg")),          # Windows separators in a list file
        ("./anger//1.jpg", ("anger", "1.jpg")),
        ("joy/../anger/1.jpg", ("anger", "1.jpg")),    # '..' that stays inside is normalised away
    ],
)
def test_a_relative_path_is_joined_lexically(tmp_path: Path, written: str, parts: tuple[str, ...]):
    assert path_under(tmp_path, written) == tmp_path.joinpath(*parts)


@pytest.mark.parametrize(
    ("written", "reason"),
    [
        ("../x.jpg", "its '..' climbs above the root"),
        ("anger/../../x.jpg", "its '..' climbs above the root"),
        ("/etc/passwd", "absolute path"),
        ("C:\\data\\1.jpg", "absolute path"),
        ("", "empty path"),
        ("anger/..", "names the root itself, not a file under it"),
    ],
)
def test_a_path_that_leaves_the_root_is_refused(tmp_path: Path, written: str, reason: str):
    with pytest.raises(OutsideRoot) as error:
        path_under(tmp_path, written)
    assert str(error.value) == reason


def test_a_link_inside_the_root_is_not_judged_by_where_it_points(tmp_path: Path):
    """The decision is lexical: a folder linked to another disk is as good as a folder."""
    disk = tmp_path / "disk" / "anger"
    disk.mkdir(parents=True)
    (disk / "1.jpg").write_bytes(b"jpeg")
    root = tmp_path / "root"
    root.mkdir()
    (root / "anger").symlink_to(disk)
    path = path_under(root, "anger/1.jpg")
    assert path == root / "anger" / "1.jpg" and path.read_bytes() == b"jpeg"
    assert link_problem(root, path) is None


def test_link_problem_names_the_dangling_link_and_its_target(tmp_path: Path):
    root = tmp_path / "root"
    root.mkdir()
    gone = tmp_path / "unplugged" / "fear"
    (root / "fear").symlink_to(gone)
    assert link_problem(root, root / "fear" / "2.jpg") == f"fear is a symbolic link to {gone}, which does not exist"

    (root / "joy").symlink_to(os.path.join("..", "elsewhere", "joy"))  # relative: also the place it means
    assert link_problem(root, root / "joy" / "1.jpg") == (
        f"joy is a symbolic link to ../elsewhere/joy ({tmp_path / 'elsewhere' / 'joy'}), which does not exist")

    (root / "a").symlink_to(root / "b")
    (root / "b").symlink_to(root / "a")
    assert link_problem(root, root / "a" / "1.jpg") == f"a is a symbolic link to {root / 'b'}, a loop of links"


def test_link_problem_is_none_when_no_link_is_to_blame(tmp_path: Path):
    (tmp_path / "anger").mkdir()
    assert link_problem(tmp_path, tmp_path / "anger" / "missing.jpg") is None
    assert link_problem(tmp_path, tmp_path / "sadness" / "1.jpg") is None
