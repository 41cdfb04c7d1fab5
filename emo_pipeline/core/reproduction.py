"""The paper's reported numbers beside this project's: the rows of the `paper_comparison` table.

`paper_reported.csv` (beside this module) holds every number the paper reports, one row each: an `id`,
the section and figure it comes from, the paper's own words (`paper_says`), and what it measures in
this project's terms: data set (emotion6, emotionroi, a, b), model, metric (as in
`emo_pipeline.core.metrics`, plus `accuracy`, `images` and `loss`) and split. A number with no
counterpart here (another paper's model, a value before tuning) keeps its row with an empty `ours`.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

REPORTED_FILE = Path(__file__).with_name("paper_reported.csv")
COLUMNS = ("id", "section", "figure", "dataset", "model", "metric", "split", "value", "paper_says")
DATASETS = ("emotion6", "emotionroi", "a", "b")
SPLITS = ("train", "val", "test")
RECIPES = ("paper", "improved")
# Metrics where larger is better; for every other metric a smaller value is better.
HIGHER_IS_BETTER = ("accuracy", "bhattacharyya", "cosine", "intersection", "top1")


class ReportedError(ValueError):
    """A row of the reported-numbers file that cannot be read (names file, line and field)."""


def read_reported(path: Path = REPORTED_FILE) -> pd.DataFrame:
    """The paper's numbers, checked: every column present, ids unique, values numbers, names known."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ReportedError(f"{path}:1: missing column(s) {', '.join(missing)}")
        rows, seen = [], set()
        for line, row in enumerate(reader, start=2):
            where = f"{path}:{line}: field"
            if row["id"] in seen or not row["id"]:
                raise ReportedError(f"{where} 'id': {row['id']!r} is empty or used twice")
            seen.add(row["id"])
            try:
                value = float(row["value"])
            except ValueError:
                raise ReportedError(f"{where} 'value': {row['value']!r} is not a number") from None
            if row["dataset"] not in DATASETS:
                raise ReportedError(f"{where} 'dataset': {row['dataset']!r} is not one of {', '.join(DATASETS)}")
            if row["split"] not in SPLITS:
                raise ReportedError(f"{where} 'split': {row['split']!r} is not one of {', '.join(SPLITS)}")
            rows.append({**row, "value": value})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def comparison_table(reported: pd.DataFrame, ours: Mapping[tuple[str, str], float],
                     notes: Mapping[str, str]) -> pd.DataFrame:
    """One row per reported number: the paper's value, ours under each recipe, the difference and a note.

    `ours` maps (row id, recipe) to our value; a method without recipes (the SVM, the object models)
    gives the same value for both. `difference` is ours under the `paper` recipe minus the paper's
    value, or ours under `improved` when only that ran; `better` says whether ours is better than
    the paper's value by the metric's own direction.
    """
    records = []
    for row in reported.itertuples(index=False):
        paper_recipe = ours.get((row.id, "paper"), math.nan)
        improved = ours.get((row.id, "improved"), math.nan)
        closest = paper_recipe if not math.isnan(paper_recipe) else improved
        difference = closest - row.value
        better = (None if math.isnan(difference) or row.metric == "images"
                  else bool(difference > 0) == (row.metric in HIGHER_IS_BETTER))
        records.append({
            "id": row.id, "section": row.section, "figure": row.figure, "dataset": row.dataset, "model": row.model,
            "metric": row.metric, "split": row.split, "paper": row.value, "ours_paper": paper_recipe,
            "ours_improved": improved, "difference": difference, "ours_better": better,
            "note": notes.get(row.id, ""), "paper_says": row.paper_says,
        })
    return pd.DataFrame(records)
