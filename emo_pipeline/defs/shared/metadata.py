"""Asset metadata builders shared by the asset groups."""

import base64
from pathlib import Path

import dagster as dg
import pandas as pd


def table_metadata(frame: pd.DataFrame, path: str | Path, preview_rows: int = 8) -> dict:
    """Row count, column schema, file path (or URL) and a preview: what a user checks first in the UI."""
    columns = [dg.TableColumn(name=str(name), type=str(dtype)) for name, dtype in frame.dtypes.items()]
    preview = frame.head(preview_rows)
    return {
        "dagster/row_count": len(frame),
        "dagster/column_schema": dg.TableSchema(columns=columns),
        "path": dg.MetadataValue.path(str(path)),
        "preview": dg.MetadataValue.md(preview.to_markdown(index=False) if len(preview) else "(empty)"),
    }


def png_metadata(png: bytes, alt: str) -> dg.MetadataValue:
    """A figure shown inline on the asset page (markdown with a data URI)."""
    encoded = base64.b64encode(png).decode("ascii")
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{encoded})")


def rejected_metadata(rejected: pd.DataFrame, shown: int = 20) -> dict:
    return {
        "rejected": len(rejected),
        "rejected_sample": dg.MetadataValue.md(
            rejected.head(shown).to_markdown(index=False) if len(rejected) else "no rejected records"),
    }


def test_samples_metadata(name: str, predictions: pd.DataFrame, labels: pd.DataFrame, shown: int = 4) -> dict:
    """True beside predicted distributions for the first test images of a model's predictions table."""
    from emo_pipeline.core.emotions import PROB_COLUMNS
    from emo_pipeline.core.plots import distribution_bars_png

    test_part = predictions[predictions["split"] == "test"].head(shown)
    if not len(test_part):
        return {}
    keys = list(test_part["image_key"])
    true_rows = labels.set_index("image_key").loc[keys, list(PROB_COLUMNS)].to_numpy()
    figure = distribution_bars_png([str(k) for k in keys], true_rows, test_part[list(PROB_COLUMNS)].to_numpy(),
                                   f"{name}: test images")
    return {"test_samples": png_metadata(figure, "true vs predicted")}
