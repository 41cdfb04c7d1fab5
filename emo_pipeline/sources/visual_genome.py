"""Visual Genome reader: the real annotation files into clean Parquet tables, in bounded memory.

Input: a folder holding the real downloads, unchanged: `image_data.json`, `objects.json`,
`relationships.json`, optionally `attributes.json`, `object_alias.txt` and `relationship_alias.txt`.
Output: one Parquet file per table of `VG_TABLES` (images, objects, relationships, attributes and
the rejected records), each written atomically.

How the files are read
----------------------
The full-size JSON files are hundreds of MB, so nothing is ever `json.load`-ed whole. DuckDB's JSON
reader parses each file as a stream (`read_json(format='array')`, under a DuckDB memory limit), the
nested lists are unnested and checked in SQL, and the result streams out as Arrow batches: rejected
rows become `Rejection`s, the others go to the Parquet file. DuckDB parses one JSON array on one
thread, so objects, relationships and attributes are read side by side. Each file goes through at
most three readers, the first that succeeds wins:

1. typed: `read_json` with explicit `columns=` types (no sampling: keys such as `name` / `names`
   vary from record to record). The fast path, taken by every well-formed file.
2. lenient: if a value cannot be converted (text in a number field, a string where a list belongs,
   a record that is not an object), the file is read again with every record as raw JSON and each
   key is extracted and checked in SQL, so one bad value rejects only its own object.
3. salvage: if the file is not valid JSON at all (truncated, damaged), a small incremental scanner
   (`json.JSONDecoder.raw_decode` over buffered chunks) copies every complete record before the damage
   to a newline-delimited temporary file, which then goes through the lenient reader; one rejection
   names the record position where the file broke ("truncated JSON" / "invalid JSON"). Bytes that
   are not UTF-8 are read as U+FFFD: such a record is kept, and named with the JSON path of the
   first string holding them.

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
  reads as `person, person is`. Chains are followed to their end: the real files make `beside` a
  synonym of `near` on one line and the canonical name of `are beside` on another, so `are beside`
  maps to `near`, and no canonical name is itself an alias (mapping twice changes nothing). If a
  synonym appears under two canonical names, the first line wins and the later one is rejected.
- Boxes: `x, y, w, h` are clipped to the image, `[max(x, 0), min(x + w, width))` and likewise for y;
  `clipped` says whether the box changed. A box with a negative width/height, with zero width/height,
  or with nothing left inside the image after clipping is rejected with a reason naming which.
  Numbers given as JSON strings ("12") or with a fraction are accepted (rounded), as DuckDB's
  converter does; anything else in a number field is rejected. Attributes carry no box: theirs are
  not checked.
- Relationships: about a fifth of their subject/object ids are absent from objects.json, so the name
  and box carried inline in each relationship are used; ids are kept as given.
- Attributes: one row per object-attribute pair; `name` is the object's canonical name as above.
- Images: the folder (`VG_100K` or `VG_100K_2`) is known only from the url; `image_path` is
  `<folder>/<file name in the url>`, relative to the data set root. A later record repeating an
  image_id is rejected, in image_data.json and in the other files alike (the first valid record of an
  image is kept). Records of any file whose image_id is not a valid image of image_data.json are
  rejected, one rejection per record.
- Version: "1.4" when any object of objects.json carries `merged_object_ids` (added in v1.4),
  "1.2" otherwise.
- Not a data set: a missing folder, a missing image_data.json or objects.json, or either of them not
  holding a list of records of its kind raises `NotADatasetError`. relationships.json and
  attributes.json of an unknown shape give one rejection and an empty table.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from emo_pipeline.core.atomic import atomic_output
from emo_pipeline.core.rejection import DatasetReport, NotADatasetError, Rejection, rejections_frame

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

    `threads` is DuckDB's worker count (default: the CPU count). DuckDB parses one JSON array on one
    thread, so the objects, relationships and attributes files are read side by side, up to `threads`
    at once. `memory_limit` bounds DuckDB's buffers (it spills to a temporary folder beyond it).
    """
    root = Path(root)
    missing = [t for t in VG_TABLES if t not in outputs]
    if missing:
        raise ValueError(f"outputs lacks a path for: {', '.join(missing)}")
    _check_is_vg_folder(root)
    threads = max(1, threads or os.cpu_count() or 1)

    with tempfile.TemporaryDirectory(prefix="vg-ingest-") as work_name, contextlib.ExitStack() as stack:
        # Every table is written under a temporary name and renamed when all are done, so an error
        # (NotADatasetError included) leaves no table half-written or out of step with the others.
        tmp = {t: stack.enter_context(atomic_output(outputs[t])) for t in VG_TABLES}
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
            result = _ingest(con, root, tmp, work, threads)
        finally:
            con.close()
    result.paths = {t: Path(outputs[t]) for t in VG_TABLES}
    return result


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


def count_source_records(root: Path) -> dict[str, int | None]:
    """Records a data set's files hold, counted independently of the reader (for row-count checks).

    images: records of image_data.json; objects / relationships: entries of every record's list.
    None where a file is absent or is not valid JSON as a whole (its rejections tell what happened).
    """
    root = Path(root)
    con = duckdb.connect(config={"memory_limit": "1GB", "preserve_insertion_order": False})
    queries = {
        "images": (IMAGE_FILE, "count(*)", "{'image_id': 'JSON'}"),
        "objects": (OBJECT_FILE, "sum(json_array_length(objects))", "{'objects': 'JSON'}"),
        "relationships": (RELATIONSHIP_FILE, "sum(json_array_length(relationships))", "{'relationships': 'JSON'}"),
    }
    counts: dict[str, int | None] = {}
    try:
        for table, (name, aggregate, columns) in queries.items():
            path = root / name
            try:
                value = con.execute(f"SELECT {aggregate} FROM read_json({_sql_str(path)}, format='array', "
                                    f"columns={columns}, maximum_object_size={_MAX_OBJECT_BYTES})").fetchone()[0]
            except duckdb.Error:
                value = None
            counts[table] = int(value or 0) if path.is_file() and value is not None else None
    finally:
        con.close()
    return counts


# --------------------------------------------------------------------------------------------------
# Orchestration


@dataclass
class _FileResult:
    """What reading one file gave: rows written, rejections, and a few facts about its records."""

    rows: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    records: int = 0  # records seen (objects.json: every record yields at least one row)
    records_with_list: int = 0  # ... of which carry their list key (`objects`)
    merged: bool = False  # some object carries merged_object_ids (v1.4)


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


def _ingest(con: duckdb.DuckDBPyConnection, root: Path, tmp: Mapping[str, Path], work: Path,
            threads: int) -> VisualGenomeIngest:
    alias_problems: list[Rejection] = []
    for table, name in (("object_alias", OBJECT_ALIAS_FILE), ("relationship_alias", RELATIONSHIP_ALIAS_FILE)):
        aliases, problems = _read_aliases(root / name)
        alias_problems.extend(problems)
        rows = pa.table({"alias": pa.array(list(aliases), pa.string()),
                         "canonical": pa.array(list(aliases.values()), pa.string())})
        con.register(f"{table}_rows", rows)
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM {table}_rows")
        con.unregister(f"{table}_rows")

    # Images first: every other file is checked and clipped against them.
    results = {"images": _read_file(con, "images", root / IMAGE_FILE, tmp["images"], work)}
    if results["images"].rows == 0:
        detail = "; ".join(str(r) for r in results["images"].rejected[:3])
        raise NotADatasetError(f"{IMAGE_FILE} holds no valid image record" + (f" ({detail})" if detail else ""))
    con.execute(f"CREATE TABLE dims AS SELECT image_id, width, height FROM read_parquet({_sql_str(tmp['images'])})")

    has_attributes = (root / ATTRIBUTE_FILE).is_file()
    jobs: dict[str, Path] = {}
    for table, name in (("objects", OBJECT_FILE), ("relationships", RELATIONSHIP_FILE),
                        ("attributes", ATTRIBUTE_FILE)):
        path = root / name
        problem = None
        if not path.is_file():
            if table != "attributes":  # attributes.json is optional: its absence is no problem
                problem = "file missing: empty table written"
        elif (shape := _top_level_shape(path)) is not None:
            problem = f"unknown top-level JSON shape: {shape}, not a list of records; empty table written"
        else:
            jobs[table] = path
            continue
        if table == "attributes":
            has_attributes = False
        _write_empty(table, tmp[table])
        results[table] = _FileResult(rejected=[Rejection(name, None, "(file)", problem)] if problem else [])

    # DuckDB parses one JSON array on one thread: read the files side by side, each on its own cursor.
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(jobs)))) as pool:
        futures = {t: pool.submit(_read_file, con.cursor(), t, p, tmp[t], work) for t, p in jobs.items()}
        for table, future in futures.items():
            results[table] = future.result()

    objects = results["objects"]
    if objects.records and not objects.records_with_list:
        raise NotADatasetError(f"{OBJECT_FILE}: none of its {objects.records} records has an 'objects' list: "
                               "not a Visual Genome objects file")
    rejected = [r for t in ("images", "objects", "relationships", "attributes") for r in results[t].rejected]
    rejected += alias_problems
    rejections_frame(rejected).to_parquet(tmp["rejected"], index=False)

    counts = {t: results[t].rows for t in ("images", "objects", "relationships", "attributes")}
    counts["rejected"] = len(rejected)
    return VisualGenomeIngest(paths=dict(tmp), counts=counts, rejected=rejected, has_attributes=has_attributes,
                              version="1.4" if objects.merged else "1.2")


def _arrow_schema(table: str) -> pa.Schema:
    types = {"BIGINT": pa.int64(), "INTEGER": pa.int32(), "VARCHAR": pa.string(),
             "VARCHAR[]": pa.list_(pa.string()), "BOOLEAN": pa.bool_()}
    return pa.schema([(column, types[duck]) for column, duck in SCHEMAS[table]])


def _write_empty(table: str, out: Path) -> None:
    pq.write_table(_arrow_schema(table).empty_table(), out, **_PARQUET_OPTIONS)


def _read_frame(path: Path) -> pd.DataFrame:
    """A written table as a DataFrame: lists as Python lists, text as `string`, nullable ids as Int64."""
    table = pq.read_table(path)
    frame = table.to_pandas()
    for column in table.schema:
        if pa.types.is_list(column.type):
            frame[column.name] = pd.Series([None if v is None else list(v) for v in frame[column.name]],
                                           index=frame.index, dtype=object)
        elif pa.types.is_string(column.type):
            frame[column.name] = frame[column.name].astype("string")
        elif column.name in ("coco_id", "flickr_id"):
            frame[column.name] = frame[column.name].astype("Int64")
    return frame


# --------------------------------------------------------------------------------------------------
# Reading one JSON file: typed, lenient, salvage

_BATCH_ROWS = 200_000
# zstd without dictionary pages: measured 2.5x faster to write than the dictionary default on VG
# relationships, and no larger (zstd finds the repeated names itself).
_PARQUET_OPTIONS = {"compression": "zstd", "use_dictionary": False}


def _read_file(con: duckdb.DuckDBPyConnection, table: str, path: Path, out: Path, work: Path) -> _FileResult:
    """Write the valid rows of one file to `out` (Parquet) and return its rejections."""
    try:
        return _stream(con, table, _Fields(typed=True), path, "array", out)
    except duckdb.InvalidInputException as error:
        first_error = error
    if _is_conversion_error(first_error):
        try:
            return _stream(con, table, _Fields(typed=False), path, "array", out)
        except duckdb.InvalidInputException:
            pass  # not valid JSON either: salvage below
    lines = work / f"salvaged_{table}.ndjson"
    replaced: list[Rejection] = []
    damage = _salvage_json_array(path, lines, path.name, replaced)
    if damage is None and not replaced:  # the scanner read it all: DuckDB stumbled on something else, say so
        damage = Rejection(path.name, None, "(file)", f"read with the fallback parser: {_first_line(first_error)}")
    result = _stream(con, table, _Fields(typed=False), lines, "newline_delimited", out, name=path.name)
    result.rejected.extend(replaced + ([damage] if damage else []))
    return result


def _is_conversion_error(error: Exception) -> bool:
    return "JSON transform error" in str(error)


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _stream(con: duckdb.DuckDBPyConnection, table: str, fields: _Fields, path: Path, fmt: str, out: Path,
            name: str | None = None) -> _FileResult:
    """Run the table's query over one file, writing kept rows to `out` batch by batch."""
    name = name or path.name
    query = _QUERIES[table](fields, _source_sql(fields, table, path, fmt))
    schema = _arrow_schema(table)
    result = _FileResult()
    claimed: dict[int, int] = {}  # image_id -> position of its first record (image_data.json checks in SQL)
    with pq.ParquetWriter(out, schema, **_PARQUET_OPTIONS) as writer:
        for batch in _batches(con, query):
            result.records = max(result.records, pc.max(batch.column("pos")).as_py() or 0)
            if table != "images":
                batch = _drop_repeated_records(batch, claimed, name, result.rejected)
            good = pa.Table.from_batches([batch])
            if batch.column("problem").null_count < batch.num_rows:  # some rows to leave out
                keep = pc.is_null(batch.column("problem"))
                good = good.filter(keep)
                bad = batch.filter(pc.invert(keep)).select(["pos", "field", "reason"]).to_pydict()
                for pos, at, reason in zip(bad["pos"], bad["field"], bad["reason"]):
                    if reason is not None:  # problem 0 marks a record with an empty list: nothing wrong
                        result.rejected.append(Rejection(name, pos, at, reason))
            good = good.select(schema.names).cast(schema)
            writer.write_table(good)
            result.rows += good.num_rows
            first_rows = pc.and_(pc.equal(batch.column("idx"), 0), batch.column("list_present"))
            result.records_with_list += pc.sum(first_rows.cast(pa.int64())).as_py() or 0
            if table == "objects":
                result.merged = result.merged or bool(pc.any(batch.column("merged")).as_py())
    return result


def _drop_repeated_records(batch: pa.RecordBatch, claimed: dict[int, int], name: str,
                           rejected: list[Rejection]) -> pa.RecordBatch:
    """Leave out the records that repeat an earlier record's image_id (one rejection each, naming the
    first); the first valid record of an image (some row kept, or an empty list) claims it."""
    problem = batch.column("problem")
    valid = pc.or_(pc.is_null(problem), pc.equal(pc.fill_null(problem, -1), 0))
    records = (pa.table({"pos": batch.column("pos"), "image_id": batch.column("image_id")}).filter(valid)
               .group_by(["pos", "image_id"], use_threads=False).aggregate([]))
    repeated = []
    for pos, image_id in sorted(zip(records["pos"].to_pylist(), records["image_id"].to_pylist())):
        first = claimed.setdefault(image_id, pos)
        if first != pos:
            repeated.append(pos)
            rejected.append(Rejection(name, pos, "image_id",
                                      f"duplicate image_id {image_id} (first at record {first})"))
    if not repeated:
        return batch
    return batch.filter(pc.invert(pc.is_in(batch.column("pos"), pa.array(repeated, batch.column("pos").type))))


def _batches(con: duckdb.DuckDBPyConnection, query: str) -> Iterator[pa.RecordBatch]:
    """Stream a query's result; errors met mid-stream come through Arrow: give them DuckDB's type back."""
    reader = con.sql(query).to_arrow_reader(_BATCH_ROWS)
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except (OSError, pa.ArrowException) as error:
            if str(error).startswith("Invalid Input Error"):
                raise duckdb.InvalidInputException(str(error)) from error
            raise
        yield batch


def _top_level_shape(path: Path) -> str | None:
    """None when the file starts a JSON array, else a few words on what it holds instead."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
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


def _replaced_text(value: object, at: str = "") -> tuple[str, str] | None:
    """(JSON path, string) of the first string in `value` holding U+FFFD, the mark of bytes not UTF-8."""
    if isinstance(value, str):
        return (at or "(record)", value) if "\ufffd" in value else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _replaced_text(item, f"{at}[{key}]" if isinstance(key, int) else f"{at}.{key}" if at else key)
        if found:
            return found
    return None


def _salvage_json_array(path: Path, out: Path, name: str, replaced: list[Rejection]) -> Rejection | None:
    """Copy each complete record of a JSON array to one line of `out`; stop where the file is damaged.

    Memory holds one chunk plus the record being decoded. Returns the rejection describing the damage,
    or None when the whole array read cleanly. Records holding bytes that are not UTF-8 are kept, with
    U+FFFD in their place, and named in `replaced`.
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

        def skip_blanks() -> bool:
            """Advance to the next non-blank character; False at the end of the file."""
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

        if not skip_blanks() or buf[i] != "[":
            return Rejection(name, None, "(file)", "invalid JSON: not a JSON array")
        i += 1
        expect_value = True
        while True:
            if not skip_blanks():
                return broken("truncated JSON: the file ends before the array is closed")
            if buf[i] == "]" and (kept == 0 or not expect_value):
                i += 1
                if skip_blanks():
                    return Rejection(name, None, "(file)", "invalid JSON: extra data after the array")
                return None
            if not expect_value:
                if buf[i] != ",":
                    return broken(f"invalid JSON: expected ',' or ']' but found {buf[i]!r}")
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
            if buf.find("\ufffd", i, end) >= 0 and (found := _replaced_text(record)):
                replaced.append(Rejection(name, kept + 1, found[0], f"invalid UTF-8, read as U+FFFD: {found[1]!r}; "
                                                                     "the record is kept"))
            dst.write(json.dumps(record))
            dst.write("\n")
            kept += 1
            i = end
            expect_value = False


# --------------------------------------------------------------------------------------------------
# SQL building blocks
#
# Each table's query yields one row per list element with `pos` (record position), `idx` / `sub`
# (element indices), `problem` (NULL: keep the row; 0: stand-in row of a record with an empty list;
# n > 0: the n-th check failed), `field` and `reason` for rejected rows, `list_present`, and the
# output columns. A check is a triple of SQL (condition, field, reason); the first failing one wins.

Check = tuple[str, str, str]


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

    Both give the same columns: numbers as read (BIGINT, or text checked with TRY_CAST), strings,
    string lists, element lists, and the JSON type of a value ('OBJECT', 'ARRAY', ...; NULL when
    missing). The typed reader fails on a type mismatch, so there a present value has the right type.
    """

    def __init__(self, typed: bool) -> None:
        self.typed = typed

    def record(self) -> str:
        return "r" if self.typed else "r.rec"

    def record_type(self) -> str:
        return "'OBJECT'" if self.typed else "json_type(r.rec)"

    def child(self, parent: str, key: str) -> str:
        return f'{parent}."{key}"' if self.typed else f"({parent}->'{key}')"

    def scalar(self, parent: str, key: str) -> str:
        return f'{parent}."{key}"' if self.typed else f"({parent}->>'{key}')"

    def strings(self, parent: str, key: str) -> str:
        return self._list(parent, key, "VARCHAR")

    def elements(self, parent: str, key: str) -> str:
        return self._list(parent, key, "JSON")

    def _list(self, parent: str, key: str, item: str) -> str:
        if self.typed:
            return f'{parent}."{key}"'
        ref = f"({parent}->'{key}')"
        return f"CASE WHEN json_type({ref}) = 'ARRAY' THEN from_json({ref}, '[\"{item}\"]') END"

    def type_of(self, parent: str, key: str, expected: str) -> str:
        if self.typed:
            return f"CASE WHEN {parent}.\"{key}\" IS NULL THEN NULL ELSE '{expected}' END"
        return f"json_type({parent}->'{key}')"

    def value_type(self, expr: str, expected: str) -> str:
        if self.typed:
            return f"CASE WHEN {expr} IS NULL THEN 'NULL' ELSE '{expected}' END"
        return f"json_type({expr})"


def _source_sql(fields: _Fields, table: str, path: Path, fmt: str) -> str:
    """FROM clause yielding `r.pos` (1-based record position) and the record's keys."""
    common = f"format='{fmt}', maximum_object_size={_MAX_OBJECT_BYTES}"
    if fields.typed:
        spec = _RECORD_TYPES[table]
        columns = "{" + ", ".join(f"'{k}': '{_duck_type(v)}'" for k, v in spec.items()) + "}"
        names = ", ".join(f'"{k}"' for k in spec)
        return f"read_json({_sql_str(path)}, {common}, columns={columns}) WITH ORDINALITY AS r({names}, pos)"
    return (f"read_json({_sql_str(path)}, {common}, records=false, columns={{'rec': 'JSON'}}) "
            "WITH ORDINALITY AS r(rec, pos)")


def _problem_number(checks: list[Check], start: int = 1, before: str = "") -> str:
    """CASE giving `start + i` for the first failing check i (NULL if none); `before` adds leading WHENs."""
    whens = " ".join(f"WHEN {cond} THEN {start + i}" for i, (cond, _, _) in enumerate(checks))
    return f"CASE {before} {whens} END"


def _problem_text(checks: list[Check]) -> tuple[str, str]:
    """CASEs on `problem` giving the field and the reason of check number `problem`."""
    # The outer CASE keeps the long inner one off the (many) rows that have no problem.
    field = "CASE problem " + " ".join(f"WHEN {i} THEN {f}" for i, (_, f, _) in enumerate(checks, 1)) + " END"
    reason = "CASE problem " + " ".join(f"WHEN {i} THEN {r}" for i, (_, _, r) in enumerate(checks, 1)) + " END"
    return f"CASE WHEN problem > 0 THEN {field} END", f"CASE WHEN problem > 0 THEN {reason} END"


def _missing(type_expr: str) -> str:
    return f"({type_expr} IS NULL OR {type_expr} = 'NULL')"


def _number_checks(fields: _Fields, raw: str, field: str, cast: str = "BIGINT") -> list[Check]:
    checks = [(f"{raw} IS NULL", field, "'missing'")]
    if not fields.typed:  # the typed reader has already refused anything that is not a number
        checks.append((f"TRY_CAST({raw} AS DOUBLE) IS NULL", field, f"'not a number: ' || {raw}"))
    if not fields.typed or cast != "BIGINT":
        checks.append((f"TRY_CAST({raw} AS {cast}) IS NULL", field, f"'number out of range: ' || {raw}"))
    return checks


def _norm(expr: str) -> str:
    """Lower-case, strip, collapse whitespace runs to one space (as `_normalise` does in Python).

    The regular expression runs only on the rare strings that need it: it is the costly part.
    """
    needs_regexp = f"regexp_matches({expr}, '[\\t\\n\\r\\f\\v]|  |^ | $')"
    return (f"CASE WHEN {needs_regexp} THEN lower(trim(regexp_replace({expr}, '{_WS_CLASS}+', ' ', 'g'))) "
            f"ELSE lower({expr}) END")


def _norm_list(expr: str) -> str:
    return f"list_filter(list_transform({expr}, lambda n: {_norm('n')}), lambda n: n <> '')"


def _box_ints(p: str) -> str:
    return ", ".join(f"TRY_CAST({p}{c}_raw AS INTEGER)::BIGINT AS {p}{c}_int" for c in "xywh")


def _box_clip(p: str) -> str:
    """Clipped corners `{p}x0, {p}y0` (inclusive) and `{p}x1, {p}y1` (exclusive) inside the image."""
    return (f"greatest({p}x_int, 0) AS {p}x0, greatest({p}y_int, 0) AS {p}y0, "
            f"least({p}x_int + {p}w_int, img_w) AS {p}x1, least({p}y_int + {p}h_int, img_h) AS {p}y1")


def _box_checks(fields: _Fields, p: str, at: str) -> list[Check]:
    """Checks on the box `{p}x_raw`...; `at` is the SQL of the element's path, e.g. 'objects[3]'."""
    checks: list[Check] = []
    for c in "xywh":
        checks += _number_checks(fields, f"{p}{c}_raw", f"{at} || '.{c}'", "INTEGER")
    w, h = f"{p}w_int", f"{p}h_int"
    box = f"'x=' || {p}x_int || ' y=' || {p}y_int || ' w=' || {w} || ' h=' || {h}"
    checks += [
        (f"{w} < 0 OR {h} < 0", f"{at} || CASE WHEN {w} < 0 THEN '.w' ELSE '.h' END",
         f"'negative box size: ' || {box}"),
        (f"{w} = 0 OR {h} = 0", f"{at} || CASE WHEN {w} = 0 THEN '.w' ELSE '.h' END",
         f"'empty box (zero width or height): ' || {box}"),
        (f"{p}x1 <= {p}x0 OR {p}y1 <= {p}y0", at,
         f"'box entirely outside the ' || img_w || 'x' || img_h || ' image: ' || {box}"),
    ]
    return checks


def _box_out(p: str, out: str) -> str:
    return f"{p}x0 AS {out}x, {p}y0 AS {out}y, {p}x1 - {p}x0 AS {out}w, {p}y1 - {p}y0 AS {out}h"


def _record_checks(fields: _Fields, list_key: str) -> list[Check]:
    return [
        ("rec_type <> 'OBJECT'", "'(record)'", "'not a JSON object: ' || rec_type"),
        *_number_checks(fields, "image_id_raw", "'image_id'"),
        ("image_id IS NULL", "'image_id'", f"'image_id ' || image_id_raw || ' is not a valid image of {IMAGE_FILE}'"),
        (_missing("list_type"), f"'{list_key}'", "'missing'"),
        ("list_type <> 'ARRAY'", f"'{list_key}'", "'not a list: ' || list_type"),
    ]


def _record_stage(fields: _Fields, source: str, list_key: str) -> str:
    """CTEs `rec` (one row per record, with `rec_problem`) and `item` (one row per list element, `o`).

    A rejected record, or one with an empty list, yields one `item` row (element NULL, `stand_in`),
    so it is rejected once rather than once per element, and every record is seen.
    """
    rec = fields.record()
    return f"""
    src AS (
        SELECT r.pos AS pos, {fields.record_type()} AS rec_type, {fields.scalar(rec, 'image_id')} AS image_id_raw,
               {fields.type_of(rec, list_key, 'ARRAY')} AS list_type, {fields.elements(rec, list_key)} AS items
        FROM {source}
    ),
    rec AS (
        SELECT *, {_problem_number(_record_checks(fields, list_key))} AS rec_problem
        FROM (SELECT src.*, d.image_id, d.width AS img_w, d.height AS img_h,
                     NOT {_missing('list_type')} AS list_present
              FROM src LEFT JOIN dims d ON d.image_id = TRY_CAST(src.image_id_raw AS BIGINT))
    ),
    item AS (
        SELECT pos, rec_type, image_id_raw, list_type, image_id, img_w, img_h, list_present, rec_problem,
               stand_in, generate_subscripts(lst, 1) - 1 AS idx, unnest(lst) AS o
        FROM (SELECT *, rec_problem IS NOT NULL OR coalesce(len(items), 0) = 0 AS stand_in,
                     CASE WHEN rec_problem IS NULL AND len(items) > 0 THEN items ELSE [NULL] END AS lst
              FROM rec)
    )"""


def _item_problem(record_checks: list[Check], item_checks: list[Check]) -> str:
    """Problem number of an element: its record's, else 0 for a stand-in row, else its first failing check."""
    return _problem_number(item_checks, start=len(record_checks) + 1,
                           before="WHEN rec_problem IS NOT NULL THEN rec_problem WHEN stand_in THEN 0")


def _images_sql(fields: _Fields, source: str) -> str:
    rec = fields.record()
    raw = {k: fields.scalar(rec, k) for k in ("image_id", "width", "height", "url", "coco_id", "flickr_id")}
    checks = [
        ("rec_type <> 'OBJECT'", "'(record)'", "'not a JSON object: ' || rec_type"),
        *_number_checks(fields, "image_id_raw", "'image_id'"),
        ("dup > 1", "'image_id'", "'duplicate image_id ' || image_id || ' (first at record ' || first_pos || ')'"),
        *_number_checks(fields, "width_raw", "'width'", "INTEGER"),
        ("width <= 0", "'width'", "'not a positive size: ' || width_raw"),
        *_number_checks(fields, "height_raw", "'height'", "INTEGER"),
        ("height <= 0", "'height'", "'not a positive size: ' || height_raw"),
        ("url IS NULL", "'url'", "'missing'"),
        ("folder = ''", "'url'", "'names neither VG_100K/ nor VG_100K_2/: ' || url"),
        ("coco_id_raw IS NOT NULL AND coco_id IS NULL", "'coco_id'", "'not a number: ' || coco_id_raw"),
        ("flickr_id_raw IS NOT NULL AND flickr_id IS NULL", "'flickr_id'", "'not a number: ' || flickr_id_raw"),
    ]
    field, reason = _problem_text(checks)
    return f"""
    WITH src AS (
        SELECT r.pos AS pos, {fields.record_type()} AS rec_type,
               {raw['image_id']} AS image_id_raw, {raw['width']} AS width_raw, {raw['height']} AS height_raw,
               {raw['url']} AS url, {raw['coco_id']} AS coco_id_raw, {raw['flickr_id']} AS flickr_id_raw
        FROM {source}
    ),
    parsed AS (
        SELECT *, TRY_CAST(image_id_raw AS BIGINT) AS image_id,
               TRY_CAST(width_raw AS INTEGER) AS width, TRY_CAST(height_raw AS INTEGER) AS height,
               regexp_extract(url, '(VG_100K(_2)?)/[^/]+$', 1) AS folder,
               regexp_extract(url, '[^/]+$') AS file_name,
               TRY_CAST(coco_id_raw AS BIGINT) AS coco_id, TRY_CAST(flickr_id_raw AS BIGINT) AS flickr_id
        FROM src
    ),
    numbered AS (
        SELECT *, {_problem_number(checks)} AS problem
        FROM (SELECT *, CASE WHEN image_id IS NULL THEN 1
                             ELSE row_number() OVER (PARTITION BY image_id ORDER BY pos) END AS dup,
                        min(pos) OVER (PARTITION BY image_id) AS first_pos
              FROM parsed)
    )
    SELECT pos, 0 AS idx, 0 AS sub, problem, {field} AS field, {reason} AS reason, TRUE AS list_present,
           image_id, width, height, url, folder, folder || '/' || file_name AS image_path, coco_id, flickr_id
    FROM numbered ORDER BY pos"""


def _name_checks(at: str, prefix: str = "", empty: str = "len(names) = 0") -> list[Check]:
    """Checks on `{prefix}names_raw` / `{prefix}name_raw`; `empty` tests the normalised result."""
    p = prefix
    return [
        (f"{p}names_raw IS NULL AND {p}names_type IS NOT NULL AND {p}names_type <> 'NULL'", f"{at} || '.names'",
         f"'not a list: ' || {p}names_type"),
        (f"{p}names_raw IS NULL AND {p}name_raw IS NULL", f"{at} || '.names'", "'missing (neither names nor name)'"),
        (empty, f"{at} || '.names'", "'empty names'"),
    ]


def _first_name_sql(p: str = "") -> str:
    """`{p}name1`: the first entry of `names` (or the string `name`), normalised."""
    return f"{_norm(f'coalesce({p}names_raw[1], {p}name_raw)')} AS {p}name1"


def _names_sql(p: str = "") -> str:
    """`{p}names`: all names (`names`, else [`name`]), normalised, blanks dropped; needs `{p}name1`.

    Nearly every object has exactly one name: that case skips the per-element lambda.
    """
    one = f"CASE WHEN {p}name1 = '' THEN [] ELSE [{p}name1] END"
    return (f"CASE WHEN {p}names_raw IS NULL AND {p}name_raw IS NULL THEN NULL "
            f"WHEN {p}names_raw IS NULL OR len({p}names_raw) = 1 THEN {one} "
            f"ELSE {_norm_list(f'{p}names_raw')} END AS {p}names")


def _entity_name_sql(p: str) -> str:
    """`{p}name`: the first non-blank of `name` / `names`, normalised (relationships keep no list)."""
    return (f"coalesce(nullif({_norm(f'{p}name_raw')}, ''), nullif({_norm(f'{p}names_raw[1]')}, ''), "
            f"{_norm_list(f'{p}names_raw')}[1]) AS {p}name")


def _objects_sql(fields: _Fields, source: str) -> str:
    f = fields
    at = "'objects[' || idx || ']'"
    record_checks = _record_checks(f, "objects")
    item_checks = [
        ("item_type <> 'OBJECT'", at, "'not a JSON object: ' || item_type"),
        *_number_checks(f, "object_id_raw", f"{at} || '.object_id'"),
        *_box_checks(f, "", at),
        *_name_checks(at),
    ]
    field, reason = _problem_text(record_checks + item_checks)
    return f"""
    WITH {_record_stage(f, source, 'objects')},
    flat AS (
        SELECT pos, idx, rec_type, image_id_raw, list_type, image_id, img_w, img_h, list_present,
               rec_problem, stand_in,
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
    named AS (SELECT *, {_first_name_sql()}, {_box_ints('')} FROM flat),
    normed AS (SELECT *, {_names_sql()}, {_box_clip('')} FROM named),
    numbered AS (SELECT *, {_item_problem(record_checks, item_checks)} AS problem FROM normed)
    SELECT pos, idx, 0 AS sub, problem, {field} AS field, {reason} AS reason, list_present, merged,
           image_id, TRY_CAST(object_id_raw AS BIGINT) AS object_id,
           coalesce(alias.canonical, names[1]) AS name, names, coalesce(synsets, []) AS synsets,
           {_box_out('', '')},
           (x0 <> x_int OR y0 <> y_int OR x1 <> x_int + w_int OR y1 <> y_int + h_int) AS clipped
    FROM numbered LEFT JOIN object_alias alias ON alias.alias = names[1]"""


def _entity_sql(fields: _Fields, side: str) -> str:
    """Raw columns of a relationship's subject/object: `{side}_type`, `{side}_x_raw`, `{side}_name_raw`..."""
    f, e = fields, fields.child("o", side)
    return ", ".join([
        f"{f.type_of('o', side, 'OBJECT')} AS {side}_type",
        f"{f.scalar(e, 'object_id')} AS {side}_id_raw",
        *(f"{f.scalar(e, c)} AS {side}_{c}_raw" for c in "xywh"),
        f"{f.scalar(e, 'name')} AS {side}_name_raw",
        f"{f.strings(e, 'names')} AS {side}_names_raw",
        f"{f.type_of(e, 'names', 'ARRAY')} AS {side}_names_type",
    ])


def _entity_checks(fields: _Fields, side: str, at: str) -> list[Check]:
    here = f"{at} || '.{side}'"
    return [
        (_missing(f"{side}_type"), here, "'missing'"),
        (f"{side}_type <> 'OBJECT'", here, f"'not a JSON object: ' || {side}_type"),
        *_number_checks(fields, f"{side}_id_raw", f"{here} || '.object_id'"),
        *_name_checks(here, f"{side}_", empty=f"{side}_name IS NULL"),
        *_box_checks(fields, f"{side}_", here),
    ]


def _relationships_sql(fields: _Fields, source: str) -> str:
    f = fields
    at = "'relationships[' || idx || ']'"
    record_checks = _record_checks(f, "relationships")
    item_checks = [
        ("item_type <> 'OBJECT'", at, "'not a JSON object: ' || item_type"),
        *_number_checks(f, "relationship_id_raw", f"{at} || '.relationship_id'"),
        ("predicate_raw IS NULL", f"{at} || '.predicate'", "'missing'"),
        ("predicate_norm = ''", f"{at} || '.predicate'", "'empty predicate'"),
        *_entity_checks(f, "subject", at),
        *_entity_checks(f, "object", at),
    ]
    field, reason = _problem_text(record_checks + item_checks)
    return f"""
    WITH {_record_stage(f, source, 'relationships')},
    flat AS (
        SELECT pos, idx, rec_type, image_id_raw, list_type, image_id, img_w, img_h, list_present,
               rec_problem, stand_in,
               {f.value_type('o', 'OBJECT')} AS item_type,
               {f.scalar('o', 'relationship_id')} AS relationship_id_raw,
               {f.scalar('o', 'predicate')} AS predicate_raw,
               {f.strings('o', 'synsets')} AS synsets,
               {_entity_sql(f, 'subject')}, {_entity_sql(f, 'object')}
        FROM item
    ),
    normed AS (
        SELECT *, {_norm('predicate_raw')} AS predicate_norm, {_entity_name_sql('subject_')},
               {_entity_name_sql('object_')},
               {_box_ints('subject_')}, {_box_ints('object_')}
        FROM flat
    ),
    clipped AS (SELECT *, {_box_clip('subject_')}, {_box_clip('object_')} FROM normed),
    numbered AS (SELECT *, {_item_problem(record_checks, item_checks)} AS problem FROM clipped)
    SELECT pos, idx, 0 AS sub, problem, {field} AS field, {reason} AS reason, list_present,
           image_id, TRY_CAST(relationship_id_raw AS BIGINT) AS relationship_id,
           coalesce(pa.canonical, predicate_norm) AS predicate, coalesce(synsets, []) AS synsets,
           TRY_CAST(subject_id_raw AS BIGINT) AS subject_id,
           coalesce(sa.canonical, subject_name) AS subject_name, {_box_out('subject_', 'subject_')},
           TRY_CAST(object_id_raw AS BIGINT) AS object_id,
           coalesce(oa.canonical, object_name) AS object_name, {_box_out('object_', 'object_')}
    FROM numbered
    LEFT JOIN relationship_alias pa ON pa.alias = predicate_norm
    LEFT JOIN object_alias sa ON sa.alias = subject_name
    LEFT JOIN object_alias oa ON oa.alias = object_name"""


def _attributes_sql(fields: _Fields, source: str) -> str:
    f = fields
    at = "'attributes[' || idx || ']'"
    record_checks = _record_checks(f, "attributes")
    object_checks = [
        ("item_type <> 'OBJECT'", at, "'not a JSON object: ' || item_type"),
        *_number_checks(f, "object_id_raw", f"{at} || '.object_id'"),
        *_name_checks(at),
        ("attributes_raw IS NULL AND attributes_type IS NOT NULL AND attributes_type <> 'NULL'",
         f"{at} || '.attributes'", "'not a list: ' || attributes_type"),
    ]
    empty_attribute = [("attribute IS NULL OR attribute = ''", f"{at} || '.attributes[' || sub || ']'",
                        "'empty attribute'")]
    checks = record_checks + object_checks + empty_attribute
    field, reason = _problem_text(checks)
    return f"""
    WITH {_record_stage(f, source, 'attributes')},
    flat AS (
        SELECT pos, idx, rec_type, image_id_raw, list_type, image_id, list_present, rec_problem, stand_in,
               {f.value_type('o', 'OBJECT')} AS item_type,
               {f.scalar('o', 'object_id')} AS object_id_raw,
               {f.strings('o', 'names')} AS names_raw, {f.type_of('o', 'names', 'ARRAY')} AS names_type,
               {f.scalar('o', 'name')} AS name_raw,
               {f.strings('o', 'attributes')} AS attributes_raw,
               {f.type_of('o', 'attributes', 'ARRAY')} AS attributes_type
        FROM item
    ),
    checked AS (
        SELECT *, {_item_problem(record_checks, object_checks)} AS object_problem
        FROM (SELECT *, {_names_sql()} FROM (SELECT *, {_first_name_sql()} FROM flat))
    ),
    pairs AS (
        -- an object without attributes gives no row; a rejected object gives one row carrying its problem
        SELECT * EXCLUDE (lst, attributes_raw), generate_subscripts(lst, 1) - 1 AS sub, unnest(lst) AS attribute_raw
        FROM (SELECT *, CASE WHEN object_problem IS NOT NULL THEN [NULL]
                             ELSE coalesce(attributes_raw, []) END AS lst
              FROM checked)
    ),
    numbered AS (
        SELECT *, coalesce(object_problem, {_problem_number(empty_attribute, start=len(checks))}) AS problem
        FROM (SELECT *, {_norm('attribute_raw')} AS attribute FROM pairs)
    )
    SELECT pos, idx, sub, problem, {field} AS field, {reason} AS reason, list_present,
           image_id, TRY_CAST(object_id_raw AS BIGINT) AS object_id,
           coalesce(alias.canonical, names[1]) AS name, attribute
    FROM numbered LEFT JOIN object_alias alias ON alias.alias = names[1]"""


_QUERIES = {
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
    return _follow_chains(aliases, first_line, path.name, problems), problems


def _follow_chains(aliases: dict[str, str], first_line: dict[str, int], name: str,
                   problems: list[Rejection]) -> dict[str, str]:
    """Map each synonym to the end of its chain (a -> b, b -> c gives a -> c); a cycle stops early."""
    resolved: dict[str, str] = {}
    for synonym in aliases:
        path = [synonym]
        target = aliases[synonym]
        while target in aliases and target not in path:
            path.append(target)
            target = aliases[target]
        if target in path:  # a cycle: keep the last name before it repeats
            problems.append(Rejection(name, first_line[synonym], synonym,
                                      "alias cycle: " + " -> ".join([*path, target])))
            target = path[-1] if path[-1] != synonym else aliases[synonym]
        resolved[synonym] = target
    return resolved
