"""Short digests of tables and files: has the data a model was trained on changed?"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd


def frame_fingerprint(frame: pd.DataFrame) -> str:
    """A short digest of a table's values (row order included)."""
    return hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
