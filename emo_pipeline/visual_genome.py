"""Visual Genome reader: the real annotation files into clean Parquet tables, in bounded memory.

Input: a folder holding the real downloads, unchanged: `image_data.json`, `objects.json`,
`relationships.json`, optionally `attributes.json`, `object_alias.txt` and `relationship_alias.txt`.
Output: one Parquet file per table of `VG_TABLES` (images, objects, relationships, attributes and
the rejected records), each written atomically.

How the files are read
----------------------
The full-size JSON files are hundreds of MB, so nothing is ever `json.load`-ed whole. DuckDB's JSON
reader parses each file as a stream (`read_json(format='array')`), the nested lists are unnested in
SQL and the result goes straight to Parquet (`COPY ... TO`), under a DuckDB memory limit. Each file
goes through at most three readers, the first that succeeds wins:

1. typed: `read_json` with explicit `columns=` types (no sampling: keys such as `name` / `names`
   vary from record to record). The fast path, taken by every well-formed file.
2. lenient: if a value cannot be converted (text in a number field, a string where a list belongs,
   a record that is not an object), the file is read again with every record as raw JSON and each
   key is extracted and checked in SQL, so one bad value rejects only its own object.
3. salvage: if the file is not valid JSON at all (truncated, damaged), a small incremental scanner
   (`json.JSONDecoder.raw_decode` over buffered chunks) copies every complete record before the damage
   to a newline-delimited temporary file, which then goes through the lenient reader; one rejection
   names the record position where the file broke ("truncated JSON" / "invalid JSON").

Every problem with a single record becomes a `Rejection(file, line, field, reason)`: `line` is the
1-based position of the record in the file's top-level array (the line number for alias files),
`field` is a JSON-path-like name such as `objects[3].x` (list indices 0-based, as in JSON paths).
All other records still load.

Decisions
---------
- Names: the canonical object name is the first non-empty entry of `names` (or the string `name`,
  which relationship subjects/objects carry in some records), lower-cased, stripped and with runs of
  whitespace collapsed to one space, then mapped through `object_alias.txt`. `names` keeps every
  entry, normalised the same way (empty entries dropped), not alias-mapped. Predicates and attributes
  are normalised the same way; predicates are mapped through `relationship_alias.txt`.
- Aliases: each line of an alias file is one synonym group, comma-separated; the first entry is the
  canonical name and the others map to it. Entries are normalised like names, so `person ,person  is`
  reads as `person, person is`. The mapping is applied once, not transitively: the real files contain
  chains (`next to` is a synonym of `near` on one line and the canonical name on another) and
  following them would merge groups the files keep apart. If a synonym appears under two canonical
  names, the first line wins and the later one is rejected.
- Boxes: `x, y, w, h` are clipped to the image, `[max(x, 0), min(x + w, width))` and likewise for y;
  `clipped` says whether the box changed. A box with a negative width/height, with zero width/height,
  or with nothing left inside the image after clipping is rejected with a reason naming which.
  Numbers given as JSON strings ("12") or with a fraction are accepted (rounded), as DuckDB's
  converter does; anything else in a number field is rejected.
- Relationships: about a fifth of their subject/object ids are absent from objects.json, so the name
  and box carried inline in each relationship are used; ids are kept as given.
- Attributes: one row per object-attribute pair; `name` is the object's canonical name as above.
- Images: the folder (`VG_100K` or `VG_100K_2`) is known only from the url; `image_path` is
  `<folder>/<file name in the url>`, relative to the data set root. A later record repeating an
  image_id is rejected. Records of any file whose image_id is not a valid image of image_data.json are
  rejected, one rejection per record.
- Version: "1.4" when any object of objects.json carries `merged_object_ids` (added in v1.4),
  "1.2" otherwise.
- Not a data set: a missing folder, a missing image_data.json or objects.json, or either of them not
  holding a list of records of its kind raises `NotADatasetError`. relationships.json and
  attributes.json of an unknown shape give one rejection and an empty table.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from emo_pipeline.atomic import atomic_output
from emo_pipeline.rejection import DatasetReport, NotADatasetError, Rejection, rejections_frame

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
_WS_CLASS = r"[ \t\n\r\f\v]"
_WS_RE = re.compile(_WS_CLASS + "+")

# The three annotation files read after image_data.json: table -> (file, top-level list key).
_ANNOTATION_FILES = {
    "objects": (OBJECT_FILE, "objects"),
    "relationships": (RELATIONSHIP_FILE, "relationships"),
    "attributes": (ATTRIBUTE_FILE, "attributes"),
}

# Typed-reader declarations (step 1 above). Leaves the tables do not need are not declared, so DuckDB
# skips them; `merged_object_ids` is read as text because only its presence matters (version).
_ENTITY_TYPE = {"object_id": "BIGINT", "x": "BIGINT", "y": "BIGINT", "w": "BIGINT", "h": "BIGINT",
                "name": "VARCHAR", "names": "VARCHAR[]"}
_RECORD_TYPES: dict[str, dict] = {
    "images": {"image_id": "BIGINT", "width": "BIGINT", "height": "BIGINT", "url": "VARCHAR",
               "coco_id": "BIGINT", "flickr_id": "BIGINT"},
    "objects": {"image_id": "BIGINT", "objects": [{
        "object_id": "BIGINT", "x": "BIGINT", "y": "BIGINT", "w": "BIGINT", "h": "BIGINT",
        "name": "VARCHAR", "names": "VARCHAR[]", "synsets": "VARCHAR[]", "merged_object_ids": "VARCHAR"}]},
    "relationships": {"image_id": "BIGINT", "relationships": [{
        "relationship_id": "BIGINT", "predicate": "VARCHAR", "synsets": "VARCHAR[]",
        "subject": _ENTITY_TYPE, "object": _ENTITY_TYPE}]},
    "attributes": {"image_id": "BIGINT", "attributes": [{
        "object_id": "BIGINT", "name": "VARCHAR", "names": "VARCHAR[]", "attributes": "VARCHAR[]"}]},
}

# DuckDB refuses single JSON values larger than this (its default; its read buffers scale with it).
# VG records are kilobytes; the salvage scanner uses the same bound.
_MAX_OBJECT_BYTES = 16 * 1024 * 1024
_SALVAGE_CHUNK = 1 << 20


@dataclass
class VisualGenomeIngest:
    """What `ingest_visual_genome` wrote."""

    paths: dict[str, Path]
    counts: dict[str, int]
    rejected: list[Rejection]
    has_attributes: bool
    version: str


@dataclass
class VisualGenomeData:
    """The same tables as pandas DataFrames, for small data, tests and the CLI."""

    images: pd.DataFrame
    objects: pd.DataFrame
    relationships: pd.DataFrame
    attributes: pd.DataFrame
    rejected: list[Rejection]
    version: str
    has_attributes: bool


# --------------------------------------------------------------------------------------------------
# Public API


def ingest_visual_genome(
    root: Path,
    outputs: Mapping[str, Path],
    *,
    threads: int | None = None,
    memory_limit: str = "1GB",
) -> VisualGenomeIngest:
    """Read the VG annotation files under `root` and write each table of `VG_TABLES` to `outputs[table]`.

    `threads` is DuckDB's worker count (default: the CPU count). One JSON array is parsed on one thread,
    so the objects, relationships and attributes files are read side by side, up to `threads` at once.
    `memory_limit` bounds DuckDB's buffers (spilling to a temporary folder beyond it).
    """
    root = Path(root)
    missing = [t for t in VG_TABLES if t not in outputs]
    if missing:
        raise ValueError(f"outputs lacks a path for: {', '.join(missing)}")
    _check_is_vg_folder(root)
    threads = max(1, threads or os.cpu_count() or 1)

    with tempfile.TemporaryDirectory(prefix="vg-ingest-") as work_name:
        work = Path(work_name)
        con = duckdb.connect(config={
            "threads": threads,
            "memory_limit": memory_limit,
            "temp_directory": str(work / "spill"),
            "preserve_insertion_order": True,
            # read_json estimates a few dozen rows for any file, so the optimizer would build its hash
            # tables on the JSON side (the whole file in memory). Every join here is written
            # `big LEFT JOIN small`: keep that order, which builds on the small side.
            "disabled_optimizers": "join_order,build_side_probe_side",
        })
        try:
            return _ingest(con, root, outputs, work, threads)
        finally:
            con.close()


def read_visual_genome(root: Path) -> VisualGenomeData:
    """Same reading as `ingest_visual_genome`, returned as DataFrames (for data that fits in memory)."""
    with tempfile.TemporaryDirectory(prefix="vg-read-") as out_name:
        outputs = {t: Path(out_name) / f"{t}.parquet" for t in VG_TABLES}
        result = ingest_visual_genome(Path(root), outputs)
        frames = {t: _read_frame(outputs[t]) for t in ("images", "objects", "relationships", "attributes")}
    return VisualGenomeData(
        images=frames["images"],
        objects=frames["objects"],
        relationships=frames["relationships"],
        attributes=frames["attributes"],
        rejected=result.rejected,
        version=result.version,
        has_attributes=result.has_attributes,
    )


def inspect_visual_genome(root: Path) -> DatasetReport:
    """Valid images, rejected records and table sizes; ingests into a temporary folder (any size)."""
    with tempfile.TemporaryDirectory(prefix="vg-inspect-") as out_name:
        outputs = {t: Path(out_name) / f"{t}.parquet" for t in VG_TABLES}
        result = ingest_visual_genome(Path(root), outputs)
    tables = {t: result.counts[t] for t in ("images", "objects", "relationships", "attributes")}
    return DatasetReport(dataset="vg", rows=result.counts["images"], rejected=result.rejected, tables=tables)


# --------------------------------------------------------------------------------------------------
# Orchestration


def _check_is_vg_folder(root: Path) -> None:
    if not root.is_dir():
        raise NotADatasetError(f"{root} is not a folder")
    for name in (IMAGE_FILE, OBJECT_FILE):
        path = root / name
        if not path.is_file():
            raise NotADatasetError(f"{root} has no {name}: not a Visual Genome folder")
        shape = _top_level_shape(path)
        if shape is not None:
            raise NotADatasetError(f"{name} holds {shape}, not a list of records: not a Visual Genome file")


def _ingest(con: duckdb.DuckDBPyConnection, root: Path, outputs: Mapping[str, Path], work: Path,
            threads: int) -> VisualGenomeIngest:
    rejected: list[Rejection] = []

    # Aliases first: they are small and every name below goes through them.
    for table, name in (("object_alias", OBJECT_ALIAS_FILE), ("relationship_alias", RELATIONSHIP_ALIAS_FILE)):
        aliases, problems = _read_aliases(root / name)
        rejected.extend(problems)
        con.register(f"{table}_rows", pa.table({"alias": list(aliases), "canonical": list(aliases.values())},
                                                schema=pa.schema([("alias", pa.string()), ("canonical", pa.string())])))
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM {table}_rows")
        con.unregister(f"{table}_rows")

    # Images next: the other files are checked and clipped against them.
    staged: dict[str, Path] = {}
    staged["images"], image_problems = _stage_file(con, "images", root / IMAGE_FILE, work)
    rejected_by_file: dict[str, list[Rejection]] = {"images": image_problems}
    con.execute(f"CREATE TABLE dims AS SELECT image_id, width, height FROM read_parquet({_sql_str(staged['images'])}) "
                "WHERE reason IS NULL")
    valid_images = con.execute("SELECT count(*) FROM dims").fetchone()[0]
    if valid_images == 0:
        detail = "; ".join(str(r) for r in image_problems[:3])
        raise NotADatasetError(f"{IMAGE_FILE} holds no valid image record" + (f" ({detail})" if detail else ""))

    has_attributes = (root / ATTRIBUTE_FILE).is_file()
    jobs = {}
    for table, (name, _) in _ANNOTATION_FILES.items():
        path = root / name
        if table == "attributes" and not has_attributes:
            continue  # optional file: an empty table of the same schema is written below
        if not path.is_file():
            rejected_by_file[table] = [Rejection(name, None, "(file)", "file missing: empty table written")]
            continue
        shape = _top_level_shape(path)
        if shape is not None:
            rejected_by_file[table] = [Rejection(name, None, "(file)",
                                                 f"unknown top-level JSON shape: {shape}, not a list of records")]
            if table == "attributes":
                has_attributes = False
            continue
        jobs[table] = path

    # One JSON array is parsed on one thread: read the files side by side, each on its own cursor.
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(jobs) or 1))) as pool:
        futures = {t: pool.submit(_stage_file, con.cursor(), t, p, work) for t, p in jobs.items()}
        for table, future in futures.items():
            staged[table], rejected_by_file[table] = future.result()

    if "objects" in staged:
        _check_has_records_of_kind(con, staged["objects"], OBJECT_FILE, "objects")
    version = "1.2"
    if "objects" in staged:
        merged = con.execute(f"SELECT bool_or(merged) FROM read_parquet({_sql_str(staged['objects'])})").fetchone()[0]
        version = "1.4" if merged else "1.2"

    # Everything parsed: now write the outputs (so a NotADatasetError above leaves none half-done).
    paths: dict[str, Path] = {}
    counts: dict[str, int] = {}
    for table in ("images", "objects", "relationships", "attributes"):
        paths[table] = Path(outputs[table])
        counts[table] = _write_table(con, table, staged.get(table), paths[table])
        rejected.extend(rejected_by_file.get(table, []))
    paths["rejected"] = Path(outputs["rejected"])
    with atomic_output(paths["rejected"]) as tmp:
        rejections_frame(rejected).to_parquet(tmp, index=False)
    counts["rejected"] = len(rejected)
    return VisualGenomeIngest(paths=paths, counts=counts, rejected=rejected,
                              has_attributes=has_attributes, version=version)


def _check_has_records_of_kind(con: duckdb.DuckDBPyConnection, staged: Path, name: str, key: str) -> None:
    """A list whose records all lack the `key` list is some other file under the expected name."""
    records, shaped = con.execute(
        f"SELECT count(DISTINCT pos), count(DISTINCT pos) FILTER (WHERE list_present) "
        f"FROM read_parquet({_sql_str(staged)})").fetchone()
    if records and not shaped:
        raise NotADatasetError(f"{name}: none of its {records} records has an '{key}' list: "
                               "not a Visual Genome file")


def _write_table(con: duckdb.DuckDBPyConnection, table: str, staged: Path | None, out: Path) -> int:
    columns = ", ".join(f"CAST({c} AS {t}) AS {c}" for c, t in SCHEMAS[table])
    if staged is None:
        nulls = ", ".join(f"CAST(NULL AS {t}) AS {c}" for c, t in SCHEMAS[table])
        query = f"SELECT {nulls} LIMIT 0"
    else:
        query = f"SELECT {columns} FROM read_parquet({_sql_str(staged)}) WHERE reason IS NULL AND is_row"
    with atomic_output(out) as tmp:
        con.execute(f"COPY ({query}) TO {_sql_str(tmp)} (FORMAT parquet)")
    return pq.ParquetFile(out).metadata.num_rows


def _read_frame(path: Path) -> pd.DataFrame:
    """A written table as a DataFrame: lists as Python lists, text as `string`, nullable ids as Int64."""
    table = pq.read_table(path)
    frame = table.to_pandas()
    for column in table.schema:
        if pa.types.is_list(column.type):
            frame[column.name] = [None if v is None else list(v) for v in frame[column.name]]
        elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            frame[column.name] = frame[column.name].astype("string")
        elif pa.types.is_int64(column.type) and column.name in ("coco_id", "flickr_id"):
            frame[column.name] = frame[column.name].astype("Int64")
    return frame


# --------------------------------------------------------------------------------------------------
# Reading one JSON file: typed, lenient, salvage


def _stage_file(con: duckdb.DuckDBPyConnection, table: str, path: Path, work: Path) -> tuple[Path, list[Rejection]]:
    """Parse one file into a staging Parquet (every row, with `field`/`reason` set on rejected ones)."""
    staged = work / f"staged_{table}.parquet"
    problems: list[Rejection] = []
    try:
        _run_stage(con, table, path, staged, _Fields(typed=True), "array")
    except duckdb.InvalidInputException as typed_error:
        needs_salvage = not _is_conversion_error(typed_error)
        if not needs_salvage:
            try:
                _run_stage(con, table, path, staged, _Fields(typed=False), "array")
            except duckdb.InvalidInputException:
                needs_salvage = True
        if needs_salvage:
            lines = work / f"salvaged_{table}.ndjson"
            damage = _salvage_json_array(path, lines, path.name)
            if damage is None:  # the scanner read it all: DuckDB choked on something else
                damage = Rejection(path.name, None, "(file)", f"read with the fallback parser: {_first_line(typed_error)}")
            problems.append(damage)
            _run_stage(con, table, lines, staged, _Fields(typed=False), "newline_delimited")
    problems = _fetch_rejections(con, staged, path.name) + problems
    return staged, problems


def _is_conversion_error(error: Exception) -> bool:
    return "JSON transform error" in str(error)


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _run_stage(con: duckdb.DuckDBPyConnection, table: str, path: Path, staged: Path, fields: _Fields, fmt: str) -> None:
    source = _source_sql(fields, table, path, fmt)
    query = _STAGE_BUILDERS[table](fields, source)
    con.execute(f"COPY ({query}) TO {_sql_str(staged)} (FORMAT parquet)")


def _fetch_rejections(con: duckdb.DuckDBPyConnection, staged: Path, name: str) -> list[Rejection]:
    rows = con.execute(f"SELECT pos, field, reason FROM read_parquet({_sql_str(staged)}) "
                       "WHERE reason IS NOT NULL ORDER BY pos, idx, sub").fetchall()
    return [Rejection(name, int(pos), field, reason) for pos, field, reason in rows]


def _top_level_shape(path: Path) -> str | None:
    """None when the file starts a JSON array, else a few words on what it holds instead."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if not text:
        return "nothing (empty file)"
    first = text[:1]
    if first == b"[":
        return None
    kinds = {b"{": "a JSON object", b'"': "a JSON string", b"t": "a JSON boolean", b"f": "a JSON boolean",
             b"n": "JSON null"}
    if first in kinds:
        return kinds[first]
    if first in b"-0123456789":
        return "a JSON number"
    return "text that is not JSON"


def _salvage_json_array(path: Path, out: Path, name: str) -> Rejection | None:
    """Copy each complete record of a JSON array to one line of `out`; stop where the file is damaged.

    Memory holds one chunk plus the record being decoded. Returns the rejection describing the damage,
    or None when the whole array read cleanly.
    """
    decoder = json.JSONDecoder()
    kept = 0
    with open(path, encoding="utf-8", errors="replace") as src, open(out, "w", encoding="utf-8") as dst:
        buf, i, eof = "", 0, False

        def more() -> bool:
            nonlocal buf, i, eof
            chunk = src.read(_SALVAGE_CHUNK)
            if not chunk:
                eof = True
                return False
            buf = buf[i:] + chunk
            i = 0
            return True

        def skip_ws() -> bool:
            """Advance to the next non-blank character; False at end of file."""
            nonlocal i
            while True:
                while i < len(buf) and buf[i] in " \t\r\n\ufeff":
                    i += 1
                if i < len(buf):
                    return True
                if not more():
                    return False

        def broken(reason: str) -> Rejection:
            return Rejection(name, kept + 1, "(record)", f"{reason}; the {kept} records before it were kept")

        if not skip_ws() or buf[i] != "[":
            return Rejection(name, None, "(file)", "invalid JSON: not a JSON array")
        i += 1
        expect_value = True
        while True:
            if not skip_ws():
                return broken("truncated JSON: the file ends before the array is closed")
            if buf[i] == "]" and (kept == 0 or not expect_value):
                i += 1
                if skip_ws():
                    return Rejection(name, None, "(file)", "invalid JSON: extra data after the array")
                return None
            if not expect_value:
                if buf[i] != ",":
                    return broken(f"invalid JSON: expected ',' or ']' at character {buf[i]!r}")
                i += 1
                expect_value = True
                continue
            while True:
                try:
                    record, end = decoder.raw_decode(buf, i)
                    break
                except json.JSONDecodeError as error:
                    # Near the end of the buffer the record may just be incomplete: read on (bounded).
                    incomplete = error.pos >= len(buf) - 8 or error.msg.startswith("Unterminated string")
                    if incomplete and len(buf) - i <= _MAX_OBJECT_BYTES and more():
                        continue
                    if incomplete and eof:
                        return broken("truncated JSON: the file ends inside this record")
                    return broken(f"invalid JSON: {error.msg}")
            dst.write(json.dumps(record))
            dst.write("\n")
            kept += 1
            i = end
            expect_value = False


# --------------------------------------------------------------------------------------------------
# SQL building blocks


def _sql_str(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _duck_type(spec: object) -> str:
    if isinstance(spec, str):
        return spec
    if isinstance(spec, list):
        return _duck_type(spec[0]) + "[]"
    return "STRUCT(" + ", ".join(f'"{k}" {_duck_type(v)}' for k, v in spec.items()) + ")"


class _Fields:
    """SQL that reads one key of a JSON object, for the typed (fast) or the lenient (raw JSON) reader.

    Both readers give the same columns: numbers as read (BIGINT or text, checked with TRY_CAST later),
    strings, string lists, and the JSON type of a value ('OBJECT', 'ARRAY', ...; NULL when missing).
    """

    def __init__(self, typed: bool) -> None:
        self.typed = typed

    def child(self, parent: str, key: str) -> str:
        return f'{parent}."{key}"' if self.typed else f"({parent}->'{key}')"

    def scalar(self, parent: str, key: str) -> str:
        return f'{parent}."{key}"' if self.typed else f"({parent}->>'{key}')"

    def strings(self, parent: str, key: str) -> str:
        if self.typed:
            return f'{parent}."{key}"'
        ref = f"({parent}->'{key}')"
        return f"CASE WHEN json_type({ref}) = 'ARRAY' THEN from_json({ref}, '[\"VARCHAR\"]') END"

    def items(self, parent: str, key: str) -> str:
        if self.typed:
            return f'{parent}."{key}"'
        ref = f"({parent}->'{key}')"
        return f"CASE WHEN json_type({ref}) = 'ARRAY' THEN from_json({ref}, '[\"JSON\"]') END"

    def type_of(self, parent: str, key: str, expected: str) -> str:
        """JSON type of parent[key]: the typed reader only knows present (it would have failed otherwise)."""
        if self.typed:
            return f"CASE WHEN {parent}.\"{key}\" IS NULL THEN NULL ELSE '{expected}' END"
        return f"json_type({parent}->'{key}')"

    def value_type(self, expr: str, expected: str) -> str:
        if self.typed:
            return f"CASE WHEN {expr} IS NULL THEN 'NULL' ELSE '{expected}' END"
        return f"json_type({expr})"


def _source_sql(fields: _Fields, table: str, path: Path, fmt: str) -> str:
    """FROM clause yielding `r.pos` (1-based record position) and the record, as `rec` columns."""
    common = f"format='{fmt}', maximum_object_size={_MAX_OBJECT_BYTES}"
    if fields.typed:
        spec = _RECORD_TYPES[table]
        columns = "{" + ", ".join(f"'{k}': '{_duck_type(v)}'" for k, v in spec.items()) + "}"
        names = ", ".join(f'"{k}"' for k in spec)
        return f"read_json({_sql_str(path)}, {common}, columns={columns}) WITH ORDINALITY AS r({names}, pos)"
    return (f"read_json({_sql_str(path)}, {common}, records=false, columns={{'rec': 'JSON'}}) "
            "WITH ORDINALITY AS r(rec, pos)")


def _record(fields: _Fields) -> str:
    return "r" if fields.typed else "r.rec"


def _first_problem(checks: list[tuple[str, str, str]]) -> tuple[str, str]:
    """Two CASE expressions giving the field and the reason of the first failing check (NULL if none)."""
    field = "CASE " + " ".join(f"WHEN {c} THEN {f}" for c, f, _ in checks) + " END"
    reason = "CASE " + " ".join(f"WHEN {c} THEN {r}" for c, _, r in checks) + " END"
    return field, reason


def _missing(type_expr: str) -> str:
    return f"({type_expr} IS NULL OR {type_expr} = 'NULL')"


def _number_checks(raw: str, field: str, cast: str = "BIGINT") -> list[tuple[str, str, str]]:
    return [
        (f"{raw} IS NULL", field, "'missing'"),
        (f"TRY_CAST({raw} AS DOUBLE) IS NULL", field, f"'not a number: ' || {raw}"),
        (f"TRY_CAST({raw} AS {cast}) IS NULL", field, f"'number out of range: ' || {raw}"),
    ]


def _norm(expr: str) -> str:
    """Lower-case, strip, collapse whitespace runs to one space (as `_normalise` does in Python)."""
    return f"lower(trim(regexp_replace({expr}, '{_WS_CLASS}+', ' ', 'g')))"


def _norm_list(expr: str) -> str:
    return f"list_filter(list_transform({expr}, lambda n: {_norm('n')}), lambda n: n <> '')"


def _box_columns(p: str) -> str:
    """Clip columns for box `{p}x_raw`... against `img_w`/`img_h`: `{p}x0, {p}y0, {p}x1, {p}y1` (BIGINT)."""
    x, y, w, h = (f"TRY_CAST({p}{c}_raw AS INTEGER)::BIGINT" for c in "xywh")
    return (f"greatest({x}, 0) AS {p}x0, greatest({y}, 0) AS {p}y0, "
            f"least({x} + {w}, img_w) AS {p}x1, least({y} + {h}, img_h) AS {p}y1")


def _box_checks(p: str, field: str) -> list[tuple[str, str, str]]:
    """Checks on box `{p}x_raw`...; `field` is the SQL of the path prefix, e.g. 'objects[3]'."""
    checks: list[tuple[str, str, str]] = []
    for c in "xywh":
        checks += _number_checks(f"{p}{c}_raw", f"{field} || '.{c}'", "INTEGER")
    w, h = f"TRY_CAST({p}w_raw AS INTEGER)", f"TRY_CAST({p}h_raw AS INTEGER)"
    desc = (f"'x=' || {p}x_raw || ' y=' || {p}y_raw || ' w=' || {p}w_raw || ' h=' || {p}h_raw")
    checks += [
        (f"{w} < 0 OR {h} < 0", f"{field} || '.' || CASE WHEN {w} < 0 THEN 'w' ELSE 'h' END",
         f"'negative box size: ' || {desc}"),
        (f"{w} = 0 OR {h} = 0", f"{field} || '.' || CASE WHEN {w} = 0 THEN 'w' ELSE 'h' END",
         f"'empty box (zero width or height): ' || {desc}"),
        (f"{p}x1 <= {p}x0 OR {p}y1 <= {p}y0", field,
         f"'box entirely outside the ' || img_w || 'x' || img_h || ' image: ' || {desc}"),
    ]
    return checks


def _clipped_box(p: str, out: str) -> str:
    return (f"{p}x0 AS {out}x, {p}y0 AS {out}y, {p}x1 - {p}x0 AS {out}w, {p}y1 - {p}y0 AS {out}h")


def _record_stage(fields: _Fields, source: str, list_key: str) -> str:
    """CTEs `rec` (one row per record, record-level checks) and `item` (one row per list element).

    A record that fails a record-level check yields one `item` row (element NULL) carrying the reason,
    so it is rejected once, not once per element.
    """
    rec = _record(fields)
    image_id = fields.scalar(rec, "image_id")
    list_type = fields.type_of(rec, list_key, "ARRAY")
    rec_type = "'OBJECT'" if fields.typed else f"json_type({rec})"
    checks = [
        ("rec_type <> 'OBJECT'", "'(record)'", "'not a JSON object: ' || rec_type"),
        *_number_checks("image_id_raw", "'image_id'"),
        ("d.image_id IS NULL", "'image_id'",
         f"'image_id ' || image_id_raw || ' is not a valid image of {IMAGE_FILE}'"),
        (_missing("list_type"), f"'{list_key}'", "'missing'"),
        ("list_type <> 'ARRAY'", f"'{list_key}'", "'not a list: ' || list_type"),
    ]
    field, reason = _first_problem(checks)
    return f"""
    src AS (
        SELECT r.pos AS pos, {rec_type} AS rec_type, {image_id} AS image_id_raw,
               {list_type} AS list_type, {fields.items(rec, list_key)} AS items
        FROM {source}
    ),
    rec AS (
        SELECT src.pos, src.image_id_raw, d.image_id, d.width AS img_w, d.height AS img_h,
               NOT {_missing('list_type')} AS list_present, src.items,
               {field} AS rec_field, {reason} AS rec_reason
        FROM src LEFT JOIN dims d ON d.image_id = TRY_CAST(src.image_id_raw AS BIGINT)
    ),
    item AS (
        SELECT pos, image_id, img_w, img_h, list_present, rec_field, rec_reason,
               generate_subscripts(lst, 1) - 1 AS idx, unnest(lst) AS o
        FROM (SELECT *, CASE WHEN rec_reason IS NULL THEN items ELSE [NULL] END AS lst FROM rec)
    )"""


def _images_sql(fields: _Fields, source: str) -> str:
    rec = _record(fields)
    rec_type = "'OBJECT'" if fields.typed else f"json_type({rec})"
    raw = {k: fields.scalar(rec, k) for k in ("image_id", "width", "height", "url", "coco_id", "flickr_id")}
    checks = [
        ("rec_type <> 'OBJECT'", "'(record)'", "'not a JSON object: ' || rec_type"),
        *_number_checks("image_id_raw", "'image_id'"),
        ("dup > 1", "'image_id'", "'duplicate image_id ' || image_id || ' (first at record ' || first_pos || ')'"),
        *_number_checks("width_raw", "'width'", "INTEGER"),
        ("width <= 0", "'width'", "'not a positive size: ' || width_raw"),
        *_number_checks("height_raw", "'height'", "INTEGER"),
        ("height <= 0", "'height'", "'not a positive size: ' || height_raw"),
        ("url IS NULL", "'url'", "'missing'"),
        ("folder = ''", "'url'", "'names neither VG_100K/ nor VG_100K_2/: ' || url"),
        ("coco_id_raw IS NOT NULL AND TRY_CAST(coco_id_raw AS BIGINT) IS NULL", "'coco_id'",
         "'not a number: ' || coco_id_raw"),
        ("flickr_id_raw IS NOT NULL AND TRY_CAST(flickr_id_raw AS BIGINT) IS NULL", "'flickr_id'",
         "'not a number: ' || flickr_id_raw"),
    ]
    field, reason = _first_problem(checks)
    return f"""
    WITH src AS (
        SELECT r.pos AS pos, {rec_type} AS rec_type,
               {raw['image_id']} AS image_id_raw, {raw['width']} AS width_raw, {raw['height']} AS height_raw,
               {raw['url']} AS url, {raw['coco_id']} AS coco_id_raw, {raw['flickr_id']} AS flickr_id_raw
        FROM {source}
    ),
    typed AS (
        SELECT *, TRY_CAST(image_id_raw AS BIGINT) AS image_id,
               TRY_CAST(width_raw AS INTEGER) AS width, TRY_CAST(height_raw AS INTEGER) AS height,
               regexp_extract(url, '(VG_100K(_2)?)/[^/]+$', 1) AS folder,
               regexp_extract(url, '[^/]+$') AS file_name,
               TRY_CAST(coco_id_raw AS BIGINT) AS coco_id, TRY_CAST(flickr_id_raw AS BIGINT) AS flickr_id
        FROM src
    ),
    numbered AS (
        SELECT *, CASE WHEN image_id IS NULL THEN 1
                       ELSE row_number() OVER (PARTITION BY image_id ORDER BY pos) END AS dup,
                  min(pos) OVER (PARTITION BY image_id) AS first_pos
        FROM typed
    )
    SELECT pos, 0 AS idx, 0 AS sub, TRUE AS is_row, TRUE AS list_present, {field} AS field, {reason} AS reason,
           image_id, width, height, url, folder, folder || '/' || file_name AS image_path, coco_id, flickr_id
    FROM numbered ORDER BY pos"""


def _objects_sql(fields: _Fields, source: str) -> str:
    f = fields
    at = "'objects[' || idx || ']'"
    checks = [
        ("rec_reason IS NOT NULL", "rec_field", "rec_reason"),
        ("item_type <> 'OBJECT'", at, "'not a JSON object: ' || item_type"),
        *_number_checks("object_id_raw", f"{at} || '.object_id'"),
        *_box_checks("", at),
        ("names_raw IS NULL AND names_type IS NOT NULL AND names_type <> 'NULL'", f"{at} || '.names'",
         "'not a list: ' || names_type"),
        ("names_raw IS NULL AND name_raw IS NULL", f"{at} || '.names'", "'missing'"),
        ("len(names) = 0", f"{at} || '.names'", "'empty names'"),
    ]
    field, reason = _first_problem(checks)
    return f"""
    WITH {_record_stage(f, source, 'objects')},
    flat AS (
        SELECT pos, idx, image_id, img_w, img_h, list_present, rec_field, rec_reason,
               {f.value_type('o', 'OBJECT')} AS item_type,
               {f.scalar('o', 'object_id')} AS object_id_raw,
               {f.scalar('o', 'x')} AS x_raw, {f.scalar('o', 'y')} AS y_raw,
               {f.scalar('o', 'w')} AS w_raw, {f.scalar('o', 'h')} AS h_raw,
               {f.strings('o', 'names')} AS names_raw, {f.type_of('o', 'names', 'ARRAY')} AS names_type,
               {f.scalar('o', 'name')} AS name_raw,
               {f.strings('o', 'synsets')} AS synsets,
               {f.type_of('o', 'merged_object_ids', 'ARRAY')} IS NOT NULL AS merged
        FROM item
    ),
    normed AS (
        SELECT *, {_norm_list('coalesce(names_raw, [name_raw])')} AS names, {_box_columns('')}
        FROM flat
    )
    SELECT pos, idx, 0 AS sub, rec_reason IS NULL AS is_row, list_present, merged,
           {field} AS field, {reason} AS reason,
           image_id, TRY_CAST(object_id_raw AS BIGINT) AS object_id,
           coalesce(alias.canonical, names[1]) AS name, names, coalesce(synsets, []) AS synsets,
           {_clipped_box('', '')},
           (x0 <> TRY_CAST(x_raw AS BIGINT) OR y0 <> TRY_CAST(y_raw AS BIGINT)
            OR x1 <> TRY_CAST(x_raw AS BIGINT) + TRY_CAST(w_raw AS BIGINT)
            OR y1 <> TRY_CAST(y_raw AS BIGINT) + TRY_CAST(h_raw AS BIGINT)) AS clipped
    FROM normed LEFT JOIN object_alias alias ON alias.alias = names[1]"""


def _entity(fields: _Fields, side: str) -> str:
    """Flat raw columns of a relationship's subject/object: `{side}_x_raw`, `{side}_name_raw`, ..."""
    f, e = fields, fields.child("o", side)
    return (f"{f.type_of('o', side, 'OBJECT')} AS {side}_type, "
            f"{f.scalar(e, 'object_id')} AS {side}_id_raw, "
            + ", ".join(f"{f.scalar(e, c)} AS {side}_{c}_raw" for c in "xywh") + ", "
            f"{f.scalar(e, 'name')} AS {side}_name_raw, {f.strings(e, 'names')} AS {side}_names_raw, "
            f"{f.type_of(e, 'names', 'ARRAY')} AS {side}_names_type")


def _entity_checks(side: str, at: str) -> list[tuple[str, str, str]]:
    here = f"{at} || '.{side}'"
    return [
        (_missing(f"{side}_type"), here, "'missing'"),
        (f"{side}_type <> 'OBJECT'", here, f"'not a JSON object: ' || {side}_type"),
        *_number_checks(f"{side}_id_raw", f"{here} || '.object_id'"),
        (f"{side}_name_raw IS NULL AND {side}_names_raw IS NULL", f"{here} || '.name'",
         "'missing (neither name nor names)'"),
        (f"{side}_norm_name IS NULL", f"{here} || '.name'", "'empty name'"),
        *_box_checks(f"{side}_", here),
    ]


def _relationships_sql(fields: _Fields, source: str) -> str:
    f = fields
    at = "'relationships[' || idx || ']'"
    checks = [
        ("rec_reason IS NOT NULL", "rec_field", "rec_reason"),
        ("item_type <> 'OBJECT'", at, "'not a JSON object: ' || item_type"),
        *_number_checks("relationship_id_raw", f"{at} || '.relationship_id'"),
        ("predicate_raw IS NULL", f"{at} || '.predicate'", "'missing'"),
        ("norm_predicate = ''", f"{at} || '.predicate'", "'empty predicate'"),
        *_entity_checks("subject", at),
        *_entity_checks("object", at),
    ]
    field, reason = _first_problem(checks)
    sides = ("subject", "object")
    # `name` (a string) when it is there and not blank, else the first non-blank entry of `names`.
    entity_names = ", ".join(
        f"coalesce(nullif({_norm(f'{s}_name_raw')}, ''), {_norm_list(f'{s}_names_raw')}[1]) AS {s}_norm_name"
        for s in sides)
    return f"""
    WITH {_record_stage(f, source, 'relationships')},
    flat AS (
        SELECT pos, idx, image_id, img_w, img_h, list_present, rec_field, rec_reason,
               {f.value_type('o', 'OBJECT')} AS item_type,
               {f.scalar('o', 'relationship_id')} AS relationship_id_raw,
               {f.scalar('o', 'predicate')} AS predicate_raw,
               {f.strings('o', 'synsets')} AS synsets,
               {_entity(f, 'subject')}, {_entity(f, 'object')}
        FROM item
    ),
    normed AS (
        SELECT *, {_norm('predicate_raw')} AS norm_predicate, {entity_names},
               {_box_columns('subject_')}, {_box_columns('object_')}
        FROM flat
    )
    SELECT pos, idx, 0 AS sub, rec_reason IS NULL AS is_row, list_present,
           {field} AS field, {reason} AS reason,
           image_id, TRY_CAST(relationship_id_raw AS BIGINT) AS relationship_id,
           coalesce(pa.canonical, norm_predicate) AS predicate, coalesce(synsets, []) AS synsets,
           TRY_CAST(subject_id_raw AS BIGINT) AS subject_id,
           coalesce(sa.canonical, subject_norm_name) AS subject_name, {_clipped_box('subject_', 'subject_')},
           TRY_CAST(object_id_raw AS BIGINT) AS object_id,
           coalesce(oa.canonical, object_norm_name) AS object_name, {_clipped_box('object_', 'object_')}
    FROM normed
    LEFT JOIN relationship_alias pa ON pa.alias = norm_predicate
    LEFT JOIN object_alias sa ON sa.alias = subject_norm_name
    LEFT JOIN object_alias oa ON oa.alias = object_norm_name"""


def _attributes_sql(fields: _Fields, source: str) -> str:
    f = fields
    at = "'attributes[' || idx || ']'"
    object_checks = [
        ("rec_reason IS NOT NULL", "rec_field", "rec_reason"),
        ("item_type <> 'OBJECT'", at, "'not a JSON object: ' || item_type"),
        *_number_checks("object_id_raw", f"{at} || '.object_id'"),
        ("names_raw IS NULL AND names_type IS NOT NULL AND names_type <> 'NULL'", f"{at} || '.names'",
         "'not a list: ' || names_type"),
        ("names_raw IS NULL AND name_raw IS NULL", f"{at} || '.names'", "'missing'"),
        ("len(names) = 0", f"{at} || '.names'", "'empty names'"),
        ("attributes_raw IS NULL AND attributes_type IS NOT NULL AND attributes_type <> 'NULL'",
         f"{at} || '.attributes'", "'not a list: ' || attributes_type"),
    ]
    obj_field, obj_reason = _first_problem(object_checks)
    return f"""
    WITH {_record_stage(f, source, 'attributes')},
    flat AS (
        SELECT pos, idx, image_id, list_present, rec_field, rec_reason,
               {f.value_type('o', 'OBJECT')} AS item_type,
               {f.scalar('o', 'object_id')} AS object_id_raw,
               {f.strings('o', 'names')} AS names_raw, {f.type_of('o', 'names', 'ARRAY')} AS names_type,
               {f.scalar('o', 'name')} AS name_raw,
               {f.strings('o', 'attributes')} AS attributes_raw,
               {f.type_of('o', 'attributes', 'ARRAY')} AS attributes_type
        FROM item
    ),
    checked AS (
        SELECT *, {obj_field} AS obj_field, {obj_reason} AS obj_reason
        FROM (SELECT *, {_norm_list('coalesce(names_raw, [name_raw])')} AS names FROM flat)
    ),
    pairs AS (
        -- objects without attributes give no row; a rejected object gives one row carrying its reason
        SELECT *, generate_subscripts(alst, 1) - 1 AS aidx, unnest(alst) AS attribute_raw
        FROM (SELECT *, CASE WHEN obj_reason IS NULL THEN coalesce(attributes_raw, []) ELSE [NULL] END AS alst
              FROM checked)
    )
    SELECT pos, idx, aidx AS sub, obj_reason IS NULL AS is_row, list_present,
           coalesce(obj_field, CASE WHEN {_norm('attribute_raw')} = '' OR attribute_raw IS NULL
                                    THEN {at} || '.attributes[' || aidx || ']' END) AS field,
           coalesce(obj_reason, CASE WHEN {_norm('attribute_raw')} = '' OR attribute_raw IS NULL
                                     THEN 'empty attribute' END) AS reason,
           image_id, TRY_CAST(object_id_raw AS BIGINT) AS object_id,
           coalesce(alias.canonical, names[1]) AS name, {_norm('attribute_raw')} AS attribute
    FROM pairs LEFT JOIN object_alias alias ON alias.alias = names[1]"""


_STAGE_BUILDERS = {
    "images": _images_sql,
    "objects": _objects_sql,
    "relationships": _relationships_sql,
    "attributes": _attributes_sql,
}


# --------------------------------------------------------------------------------------------------
# Alias files


def _normalise(text: str) -> str:
    """Python twin of the SQL `_norm`: lower-case, strip, collapse whitespace."""
    return _WS_RE.sub(" ", text).strip(" ").lower()


def _read_aliases(path: Path) -> tuple[dict[str, str], list[Rejection]]:
    """synonym -> canonical name, from one synonym group per line (first entry canonical)."""
    aliases: dict[str, str] = {}
    first_line: dict[str, int] = {}
    problems: list[Rejection] = []
    if not path.is_file():
        return aliases, problems
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                problems.append(Rejection(path.name, number, "(line)", "not UTF-8 text"))
                continue
            entries = [e for e in (_normalise(part) for part in line.split(",")) if e]
            if len(entries) < 2:
                continue  # blank line or a group of one: nothing to map
            canonical = entries[0]
            for synonym in entries[1:]:
                if synonym == canonical:
                    continue
                known = aliases.get(synonym)
                if known is None:
                    aliases[synonym] = canonical
                    first_line[synonym] = number
                elif known != canonical:
                    problems.append(Rejection(
                        path.name, number, synonym,
                        f"already an alias of '{known}' (line {first_line[synonym]}); kept that"))
    return aliases, problems
