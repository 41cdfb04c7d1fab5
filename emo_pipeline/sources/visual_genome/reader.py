"""Reading a Visual Genome folder: every table written side by side, the rejections gathered."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from emo_pipeline.core.atomic import atomic_output
from emo_pipeline.core.rejection import DatasetReport, NotADatasetError, Rejection, rejections_frame
from emo_pipeline.sources.visual_genome.aliases import read_aliases
from emo_pipeline.sources.visual_genome.schemas import (
    ATTRIBUTE_FILE,
    IMAGE_FILE,
    MAX_OBJECT_BYTES,
    OBJECT_ALIAS_FILE,
    OBJECT_FILE,
    RELATIONSHIP_ALIAS_FILE,
    RELATIONSHIP_FILE,
    VG_TABLES,
)
from emo_pipeline.sources.visual_genome.sql import sql_str
from emo_pipeline.sources.visual_genome.streaming import FileResult, read_file, top_level_shape, write_empty

T = TypeVar("T")


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
    thread, so the objects, relationships and attributes files are all read at once, each on a thread
    of its own, whatever `threads` is. `memory_limit` bounds DuckDB's buffers (it spills to a
    temporary folder beyond it).
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
            result = _ingest(con, root, tmp, work)
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
                value = con.execute(f"SELECT {aggregate} FROM read_json({sql_str(path)}, format='array', "
                                    f"columns={columns}, maximum_object_size={MAX_OBJECT_BYTES})").fetchone()[0]
            except duckdb.Error:
                value = None
            counts[table] = int(value or 0) if path.is_file() and value is not None else None
    finally:
        con.close()
    return counts


# --------------------------------------------------------------------------------------------------
# Orchestration


def _check_is_vg_folder(root: Path) -> None:
    if not root.is_dir():
        raise NotADatasetError(f"{root} is not a folder")
    for name in (IMAGE_FILE, OBJECT_FILE):
        path = root / name
        if not path.is_file():
            raise NotADatasetError(f"{root} has no {name}: not a Visual Genome folder")
        shape = top_level_shape(path)
        if shape is not None:
            raise NotADatasetError(f"{name} holds {shape}, not a list of records: not a Visual Genome file")


def _ingest(con: duckdb.DuckDBPyConnection, root: Path, tmp: Mapping[str, Path], work: Path) -> VisualGenomeIngest:
    alias_problems: list[Rejection] = []
    for table, name in (("object_alias", OBJECT_ALIAS_FILE), ("relationship_alias", RELATIONSHIP_ALIAS_FILE)):
        aliases, problems = read_aliases(root / name)
        alias_problems.extend(problems)
        rows = pa.table({"alias": pa.array(list(aliases), pa.string()),
                         "canonical": pa.array(list(aliases.values()), pa.string())})
        con.register(f"{table}_rows", rows)
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM {table}_rows")
        con.unregister(f"{table}_rows")

    # Images first: every other file is checked and clipped against them.
    results = {"images": read_file(con, "images", root / IMAGE_FILE, tmp["images"], work)}
    if results["images"].rows == 0:
        detail = "; ".join(str(r) for r in results["images"].rejected[:3])
        raise NotADatasetError(f"{IMAGE_FILE} holds no valid image record" + (f" ({detail})" if detail else ""))
    con.execute(f"CREATE TABLE dims AS SELECT image_id, width, height FROM read_parquet({sql_str(tmp['images'])})")

    has_attributes = (root / ATTRIBUTE_FILE).is_file()
    jobs: dict[str, Path] = {}
    for table, name in (("objects", OBJECT_FILE), ("relationships", RELATIONSHIP_FILE),
                        ("attributes", ATTRIBUTE_FILE)):
        path = root / name
        problem = None
        if not path.is_file():
            if table != "attributes":  # attributes.json is optional: its absence is no problem
                problem = "file missing: empty table written"
        elif (shape := top_level_shape(path)) is not None:
            problem = f"unknown top-level JSON shape: {shape}, not a list of records; empty table written"
        else:
            jobs[table] = path
            continue
        if table == "attributes":
            has_attributes = False
        write_empty(table, tmp[table])
        results[table] = FileResult(rejected=[Rejection(name, None, "(file)", problem)] if problem else [])

    results.update(read_side_by_side(con, jobs, lambda cursor, t, path: read_file(cursor, t, path, tmp[t], work)))

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


def read_side_by_side(con: duckdb.DuckDBPyConnection, jobs: Mapping[str, Path],
                      read: Callable[[duckdb.DuckDBPyConnection, str, Path], T]) -> dict[str, T]:
    """`read(cursor, table, path)` for every file at once, each on its own thread with a cursor of its own
    on `con`, the smaller files at a lower priority.

    DuckDB parses one JSON array on one thread, so the largest file alone sets the wall time. Read
    side by side at equal priority on two cores, the three files share the cores until the smallest
    ends, and the largest then finishes alone on one core while the other idles. At a lower priority
    the smaller files share one core while the largest keeps the other, then finish on both: all end
    close together (docs/benchmarks.md, Visual Genome ingest; a query that DuckDB runs on its own
    worker thread keeps the default priority). Two at a time was slower still: the third
    started late and ran alone at the end.
    """
    largest_first = sorted(jobs, key=lambda t: jobs[t].stat().st_size, reverse=True)
    lowered = _lowered_priority()
    # The largest goes first, so it runs on a fresh thread and never on one that a smaller file lowered
    # (a pool thread may be reused once its file is done).
    with ThreadPoolExecutor(max_workers=max(1, len(jobs))) as pool:
        # Cursors are made here, on the calling thread: a connection is not thread-safe.
        futures = {t: pool.submit(_at_priority, lowered if i > 0 else None, read, con.cursor(), t, jobs[t])
                   for i, t in enumerate(largest_first)}
        return {t: futures[t].result() for t in jobs}


# How much less priority (nice) the threads of the smaller files take; measured on two cores, 4 and 6
# gave the same wall time.
_SMALLER_FILE_NICE = 5


def _lowered_priority() -> int | None:
    """The calling thread's nice value plus `_SMALLER_FILE_NICE`; None where threads have no priority
    of their own (only Linux gives them one: elsewhere the call would renice a whole process)."""
    if not sys.platform.startswith("linux"):
        return None
    return min(19, os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) + _SMALLER_FILE_NICE)


def _at_priority(priority: int | None, read: Callable[[duckdb.DuckDBPyConnection, str, Path], T],
                 cursor: duckdb.DuckDBPyConnection, table: str, path: Path) -> T:
    if priority is not None:
        with contextlib.suppress(OSError):  # best effort: the reading is the same at any priority
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), priority)
    return read(cursor, table, path)


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
