"""One Visual Genome JSON file into Parquet, streamed in bounded memory; damaged files salvaged.

Nothing is ever `json.load`-ed whole: DuckDB's JSON reader parses each file as a stream and the
result comes out as Arrow batches. A file goes through at most three readers, the first that succeeds
wins: typed (explicit column types, the fast path), lenient (every record as raw JSON, so one bad
value rejects only its own object), salvage (an incremental scanner copies every complete record
before the damage of an invalid or truncated file to newline-delimited JSON for the lenient reader).
A record repeating an earlier record's image_id is rejected here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from emo_pipeline.core.rejection import Rejection
from emo_pipeline.sources.visual_genome.schemas import MAX_OBJECT_BYTES, arrow_schema
from emo_pipeline.sources.visual_genome.sql import QUERIES, Fields, source_sql

_BATCH_ROWS = 200_000
_SALVAGE_CHUNK = 1 << 20


def _parquet_options(schema: pa.Schema) -> dict:
    """zstd without dictionary pages: measured 2.5x faster to write than the dictionary default on VG
    relationships, and no larger (zstd finds the repeated names itself). Integer columns are delta
    encoded: ids and boxes shrink before zstd sees them, which cuts a third of the writing time of the
    objects and relationships tables (docs/benchmarks.md, Visual Genome ingest)."""
    integers = {f.name: "DELTA_BINARY_PACKED" for f in schema if pa.types.is_integer(f.type)}
    return {"compression": "zstd", "use_dictionary": False, "column_encoding": integers}


@dataclass
class FileResult:
    """What reading one file gave: rows written, rejections, and a few facts about its records."""

    rows: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    records: int = 0  # records seen (objects.json: every record yields at least one row)
    records_with_list: int = 0  # ... of which carry their list key (`objects`)
    merged: bool = False  # some object carries merged_object_ids (v1.4)


def write_empty(table: str, out: Path) -> None:
    schema = arrow_schema(table)
    pq.write_table(schema.empty_table(), out, **_parquet_options(schema))


def read_file(con: duckdb.DuckDBPyConnection, table: str, path: Path, out: Path, work: Path) -> FileResult:
    """Write the valid rows of one file to `out` (Parquet) and return its rejections."""
    try:
        return _stream(con, table, Fields(typed=True), path, "array", out)
    except duckdb.InvalidInputException as error:
        first_error = error
    if _is_conversion_error(first_error):
        try:
            return _stream(con, table, Fields(typed=False), path, "array", out)
        except duckdb.InvalidInputException:
            pass  # not valid JSON either: salvage below
    lines = work / f"salvaged_{table}.ndjson"
    replaced: list[Rejection] = []
    damage = _salvage_json_array(path, lines, path.name, replaced)
    if damage is None and not replaced:  # the scanner read it all: DuckDB stumbled on something else, say so
        damage = Rejection(path.name, None, "(file)", f"read with the fallback parser: {_first_line(first_error)}")
    result = _stream(con, table, Fields(typed=False), lines, "newline_delimited", out, name=path.name)
    result.rejected.extend(replaced + ([damage] if damage else []))
    return result


def _is_conversion_error(error: Exception) -> bool:
    return "JSON transform error" in str(error)


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _stream(con: duckdb.DuckDBPyConnection, table: str, fields: Fields, path: Path, fmt: str, out: Path,
            name: str | None = None) -> FileResult:
    """Run the table's query over one file, writing kept rows to `out` batch by batch."""
    name = name or path.name
    query = QUERIES[table](fields, source_sql(fields, table, path, fmt))
    schema = arrow_schema(table)
    result = FileResult()
    claimed: dict[int, int] = {}  # image_id -> position of its first record (image_data.json checks in SQL)
    repeats: set[int] = set()  # positions of the records found repeating one, already rejected
    with pq.ParquetWriter(out, schema, **_parquet_options(schema)) as writer:
        for batch in _batches(con, query):
            result.records = max(result.records, pc.max(batch.column("pos")).as_py() or 0)
            if table != "images":
                batch = _drop_repeated_records(batch, claimed, repeats, name, result.rejected)
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


def _drop_repeated_records(batch: pa.RecordBatch, claimed: dict[int, int], repeats: set[int], name: str,
                           rejected: list[Rejection]) -> pa.RecordBatch:
    """Leave out the records that repeat an earlier record's image_id (one rejection each, naming the
    first); the first valid record of an image (some row kept, or an empty list) claims it. A record
    whose rows span batches is rejected once: `repeats` holds the positions already rejected."""
    problem = batch.column("problem")
    valid = pc.or_(pc.is_null(problem), pc.equal(pc.fill_null(problem, -1), 0))
    # One (position, image_id) per record in position order: a record's first valid row stands for it
    # (a valid row always carries its record's image_id). numpy's unique is a sort of the positions,
    # cheaper than grouping every row by both columns.
    positions = batch.column("pos").filter(valid).to_numpy(zero_copy_only=False)
    image_ids = batch.column("image_id").filter(valid).to_numpy(zero_copy_only=False)
    records, first_rows = np.unique(positions, return_index=True)
    repeated = []
    for pos, image_id in zip(records.tolist(), image_ids[first_rows].tolist()):
        first = claimed.setdefault(image_id, pos)
        if first != pos:
            repeated.append(pos)
            if pos not in repeats:
                repeats.add(pos)
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


def top_level_shape(path: Path) -> str | None:
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
                    if incomplete and len(buf) - i <= MAX_OBJECT_BYTES and more():
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
