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
