"""Rejected records and dataset reports, shared by every reader.

A reader never stops at a bad record: it keeps every valid one and returns a `Rejection` for each bad
one, naming the file, the line (text files) or 1-based record position (JSON arrays), the field and
the reason.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import pandas as pd

REJECTION_COLUMNS = ("file", "line", "field", "reason")


@dataclass(frozen=True)
class Rejection:
    file: str
    line: int | None
    field: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.field}: {self.reason}"


class NotADatasetError(ValueError):
    """The folder is not the data set at all (as opposed to a data set with some bad records)."""


@dataclass
class DatasetReport:
    """What `emo-pipeline inspect` prints: valid images, rejected records, rows per table."""

    dataset: str
    rows: int
    rejected: list[Rejection]
    tables: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "dataset": self.dataset,
            "rows": self.rows,
            "rejected": [asdict(r) for r in self.rejected],
            "tables": dict(self.tables),
        }


def rejections_frame(rejected: list[Rejection]) -> pd.DataFrame:
    """The rejected-records table written beside each source's clean tables."""
    frame = pd.DataFrame([asdict(r) for r in rejected], columns=list(REJECTION_COLUMNS))
    return frame.astype({"file": "string", "line": "Int64", "field": "string", "reason": "string"})
