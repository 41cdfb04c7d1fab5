"""Visual Genome reader: the real annotation files into clean Parquet tables, in bounded memory.

Input: a folder holding the real downloads, unchanged (`image_data.json`, `objects.json`,
`relationships.json`, optionally `attributes.json` and the two alias files); output: one Parquet file
per table of `VG_TABLES`, each written atomically, and a `Rejection` for every record left out.

- `reader`: `ingest_visual_genome`, `read_visual_genome`, `inspect_visual_genome`,
  `count_source_records` and their result types.
- `streaming`: one JSON file through DuckDB into Parquet (typed, lenient, salvage of damaged or
  truncated files) and the duplicate image_id check.
- `sql`: the DuckDB queries that unnest, check, normalise and clip each table.
- `aliases`: the alias files (`object_alias.txt`, `relationship_alias.txt`).
- `schemas`: table names, file names, output schemas and the bounds the modules share.

The full rules: docs/data.md, section Visual Genome reader.
"""

from emo_pipeline.sources.visual_genome.reader import (
    VisualGenomeData,
    VisualGenomeIngest,
    count_source_records,
    ingest_visual_genome,
    inspect_visual_genome,
    read_visual_genome,
)
from emo_pipeline.sources.visual_genome.schemas import (
    ATTRIBUTE_FILE,
    IMAGE_FILE,
    OBJECT_ALIAS_FILE,
    OBJECT_FILE,
    RELATIONSHIP_ALIAS_FILE,
    RELATIONSHIP_FILE,
    SCHEMAS,
    VG_TABLES,
)

__all__ = [
    "ATTRIBUTE_FILE",
    "IMAGE_FILE",
    "OBJECT_ALIAS_FILE",
    "OBJECT_FILE",
    "RELATIONSHIP_ALIAS_FILE",
    "RELATIONSHIP_FILE",
    "SCHEMAS",
    "VG_TABLES",
    "VisualGenomeData",
    "VisualGenomeIngest",
    "count_source_records",
    "ingest_visual_genome",
    "inspect_visual_genome",
    "read_visual_genome",
]
