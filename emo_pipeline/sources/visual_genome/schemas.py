"""What the Visual Genome modules share: table and file names, output schemas, parsing bounds."""

from __future__ import annotations

import pyarrow as pa

VG_TABLES = ("images", "objects", "relationships", "attributes", "rejected")

IMAGE_FILE = "image_data.json"
OBJECT_FILE = "objects.json"
RELATIONSHIP_FILE = "relationships.json"
ATTRIBUTE_FILE = "attributes.json"
OBJECT_ALIAS_FILE = "object_alias.txt"
RELATIONSHIP_ALIAS_FILE = "relationship_alias.txt"

# Output schemas: column name -> DuckDB type (BIGINT = int64, INTEGER = int32, VARCHAR[] = list<string>).
_BOX = [("x", "INTEGER"), ("y", "INTEGER"), ("w", "INTEGER"), ("h", "INTEGER")]
SCHEMAS: dict[str, list[tuple[str, str]]] = {
    "images": [
        ("image_id", "BIGINT"), ("width", "INTEGER"), ("height", "INTEGER"), ("url", "VARCHAR"),
        ("folder", "VARCHAR"), ("image_path", "VARCHAR"), ("coco_id", "BIGINT"), ("flickr_id", "BIGINT"),
    ],
    "objects": [
        ("image_id", "BIGINT"), ("object_id", "BIGINT"), ("name", "VARCHAR"), ("names", "VARCHAR[]"),
        ("synsets", "VARCHAR[]"), *_BOX, ("clipped", "BOOLEAN"),
    ],
    "relationships": [
        ("image_id", "BIGINT"), ("relationship_id", "BIGINT"), ("predicate", "VARCHAR"),
        ("synsets", "VARCHAR[]"),
        ("subject_id", "BIGINT"), ("subject_name", "VARCHAR"),
        *[(f"subject_{c}", t) for c, t in _BOX],
        ("object_id", "BIGINT"), ("object_name", "VARCHAR"),
        *[(f"object_{c}", t) for c, t in _BOX],
    ],
    "attributes": [("image_id", "BIGINT"), ("object_id", "BIGINT"), ("name", "VARCHAR"), ("attribute", "VARCHAR")],
}

# Whitespace as RE2 (DuckDB) and Python both read it, so aliases normalise exactly like names.
WS_CLASS = r"[ \t\n\r\f\v]"

# DuckDB refuses single JSON values larger than this (its default; its read buffers scale with it).
# VG records are kilobytes; the salvage scanner uses the same bound.
MAX_OBJECT_BYTES = 16 * 1024 * 1024


def arrow_schema(table: str) -> pa.Schema:
    types = {"BIGINT": pa.int64(), "INTEGER": pa.int32(), "VARCHAR": pa.string(),
             "VARCHAR[]": pa.list_(pa.string()), "BOOLEAN": pa.bool_()}
    return pa.schema([(column, types[duck]) for column, duck in SCHEMAS[table]])
