"""Shared fixtures: the real data sets beside the checkout, a fresh EMO_HOME per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from emo_pipeline.home import PROJECT_ROOT


def shared_datasets() -> Path:
    return Path(os.environ.get("EMO_SHARED_DATASETS", PROJECT_ROOT.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def real_emotion6() -> Path:
    path = shared_datasets() / "Emotion6"
    if not (path / "ground_truth.txt").is_file():
        pytest.skip(f"the real Emotion6 is not at {path} (set EMO_SHARED_DATASETS to the datasets folder)")
    return path


@pytest.fixture(scope="session")
def real_vg_sample() -> Path:
    path = shared_datasets() / "visual_genome_sample"
    if not (path / "objects.json").is_file():
        pytest.skip(f"the real Visual Genome sample is not at {path} (set EMO_SHARED_DATASETS)")
    return path


@pytest.fixture(autouse=True, scope="session")
def _isolated_home(tmp_path_factory: pytest.TempPathFactory):
    """Tests never touch the user's EMO_HOME."""
    home = tmp_path_factory.mktemp("emo_home")
    previous = os.environ.get("EMO_HOME")
    os.environ["EMO_HOME"] = str(home)
    yield home
    if previous is None:
        os.environ.pop("EMO_HOME", None)
    else:
        os.environ["EMO_HOME"] = previous
