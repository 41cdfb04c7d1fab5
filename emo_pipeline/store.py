"""The warehouse: Parquet files as the source of truth, a DuckDB catalog of views over them.

- Each table is one Parquet file `tables/<name>.parquet`, or a folder `tables/<name>/` of partition
  files, always written under a temporary name and renamed, so no reader ever sees half a file.
- `catalog.duckdb` holds one view per table. DuckDB allows one writing process at a time, so view
  refreshes take an exclusive file lock and keep the database open for milliseconds; readers open it
  read-only and retry briefly while a refresh holds it.
- `query` is the SQL surface for users: read-only, and statements other than queries are refused
  before they reach DuckDB.
"""

from __future__ import annotations

import contextlib
import fcntl
import re
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq

from emo_pipeline.atomic import atomic_output, write_parquet_atomic

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# Statement types a read-only user query may contain.
_READ_ONLY_TYPES = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
_LOCK_RETRY_SECONDS = 30.0


class ReadOnlyViolation(ValueError):
    """A statement given to the read-only SQL surface would change something."""


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"table name {name!r} must be lower-case letters, digits and underscores")
    return name


def _is_busy(exc: Exception) -> bool:
    """True for the errors that mean "another connection holds the file right now"."""
    message = str(exc).lower()
    # Another process holds the file lock; or, inside one process, a connection with the other
    # read-only setting is still open.
    return "lock" in message or "different configuration" in message


class Warehouse:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.tables_dir = self.root / "tables"
        self.catalog_path = self.root / "catalog.duckdb"

    # -- Parquet -------------------------------------------------------------------------------
    def table_path(self, name: str) -> Path:
        return self.tables_dir / f"{_check_name(name)}.parquet"

    def partition_path(self, name: str, partition: str) -> Path:
        if not re.match(r"^[A-Za-z0-9_.=-]+$", partition) or partition.startswith("."):
            raise ValueError(f"partition key {partition!r} is not a safe file name")
        return self.tables_dir / _check_name(name) / f"{partition}.parquet"

    def write_table(self, name: str, frame: pd.DataFrame, *, refresh: bool = True) -> Path:
        """Write a whole table atomically and (by default) refresh its view."""
        path = write_parquet_atomic(frame, self.table_path(name))
        if refresh:
            self.refresh_views()
        return path

    def write_partition(self, name: str, partition: str, frame: pd.DataFrame, *, refresh: bool = True) -> Path:
        path = write_parquet_atomic(frame, self.partition_path(name, partition))
        if refresh:
            self.refresh_views()
        return path

    def connect_scratch(self, memory_limit: str = "1GB") -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB with one view per table, for building tables with SQL.

        It never opens the catalog, so it needs no lock and cannot change what users query; DuckDB
        spills to a temporary folder beyond `memory_limit` (full-size Visual Genome joins).
        """
        con = duckdb.connect(":memory:", config={"memory_limit": memory_limit})
        for name, source in self.table_sources().items():
            literal = source.replace("'", "''")
            con.execute(f"CREATE VIEW \"{name}\" AS SELECT * FROM read_parquet('{literal}')")
        return con

    def write_query(self, name: str, con: duckdb.DuckDBPyConnection, sql: str, *, refresh: bool = True) -> Path:
        """Write the result of `sql` (run on `con`, e.g. from `connect_scratch`) as table `name`, atomically."""
        path = self.table_path(name)
        with atomic_output(path) as tmp:
            literal = str(tmp).replace("'", "''")
            con.execute(f"COPY ({sql}) TO '{literal}' (FORMAT parquet)")
        if refresh:
            self.refresh_views()
        return path

    def read_partition(self, name: str, partition: str) -> pd.DataFrame:
        return pd.read_parquet(self.partition_path(name, partition))

    def has_table(self, name: str) -> bool:
        return self.table_path(name).is_file() or bool(self._partition_files(name))

    def _table_files(self, name: str) -> list[Path]:
        """The Parquet file of a table, or its partition files; a clear error when it has none."""
        path = self.table_path(name)
        files = [path] if path.is_file() else self._partition_files(name)
        if not files:
            raise FileNotFoundError(f"table {name!r} has not been written yet (no {path})")
        return files

    def read_table(self, name: str, columns: list[str] | None = None) -> pd.DataFrame:
        """Read a table straight from Parquet (no catalog lock involved)."""
        files = self._table_files(name)
        if len(files) == 1:
            return pd.read_parquet(files[0], columns=columns)
        return pd.concat([pd.read_parquet(f, columns=columns) for f in files], ignore_index=True)

    def table_row_count(self, name: str) -> int:
        """Row count from the Parquet footers alone."""
        return sum(pq.ParquetFile(f).metadata.num_rows for f in self._table_files(name))

    def head(self, name: str, rows: int = 8) -> pd.DataFrame:
        """The first rows of a table without reading the whole file (tables can hold millions of rows)."""
        parquet = pq.ParquetFile(self._table_files(name)[0])
        batch = next(parquet.iter_batches(batch_size=rows), None)
        return (batch.to_pandas() if batch is not None else parquet.schema_arrow.empty_table().to_pandas()).head(rows)

    def _partition_files(self, name: str) -> list[Path]:
        folder = self.tables_dir / name
        return sorted(folder.glob("*.parquet")) if folder.is_dir() else []

    def table_sources(self) -> dict[str, str]:
        """View name -> the Parquet file or glob it reads."""
        sources: dict[str, str] = {}
        if not self.tables_dir.is_dir():
            return sources
        for entry in sorted(self.tables_dir.iterdir()):
            if entry.name.startswith("."):
                continue  # temporary files of writes in flight
            if entry.is_file() and entry.suffix == ".parquet" and _NAME.match(entry.stem):
                sources[entry.stem] = str(entry.resolve())
            elif entry.is_dir() and _NAME.match(entry.name) and any(entry.glob("*.parquet")):
                sources[entry.name] = str(entry.resolve() / "*.parquet")
        return sources

    # -- DuckDB catalog ------------------------------------------------------------------------
    @contextlib.contextmanager
    def _writer(self) -> Iterator[duckdb.DuckDBPyConnection]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "catalog.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one writer among this machine's processes
            con = self._connect_with_retry(read_only=False)
            try:
                yield con
            finally:
                con.close()

    def refresh_views(self) -> list[str]:
        """Point one view at each table's Parquet; drop views whose table is gone."""
        sources = self.table_sources()
        with self._writer() as con:
            existing = {row[0] for row in con.execute(
                "SELECT view_name FROM duckdb_views() WHERE NOT internal AND schema_name = 'main'").fetchall()}
            con.execute("BEGIN")
            for name in existing - sources.keys():
                con.execute(f'DROP VIEW "{name}"')
            for name, source in sources.items():
                literal = source.replace("'", "''")
                con.execute(f"CREATE OR REPLACE VIEW \"{name}\" AS SELECT * FROM read_parquet('{literal}')")
            con.execute("COMMIT")
        return sorted(sources)

    def _connect_with_retry(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + _LOCK_RETRY_SECONDS
        delay = 0.02
        while True:
            try:
                return duckdb.connect(str(self.catalog_path), read_only=read_only)
            except (duckdb.IOException, duckdb.ConnectionException) as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    def connect_read_only(self) -> duckdb.DuckDBPyConnection:
        if not self.catalog_path.is_file():
            raise FileNotFoundError(
                f"no catalog at {self.catalog_path}: materialize some assets first (e.g. `make demo`)")
        con = self._connect_with_retry(read_only=True)
        # INSTALL / LOAD are refused by `query`; a SELECT naming a URL or format must not do them
        # implicitly either (DuckDB would download an extension). Parquet, JSON and ICU are built in.
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("SET autoload_known_extensions = false")
        return con

    def query(self, sql: str) -> pd.DataFrame:
        """Run a user's read-only SQL against the catalog and return the last statement's result."""
        statements = duckdb.extract_statements(sql)
        if not statements:
            raise ReadOnlyViolation("no SQL statement given")
        for statement in statements:
            if statement.type not in _READ_ONLY_TYPES:
                kind = statement.type.name
                raise ReadOnlyViolation(
                    f"the SQL surface is read-only: {kind} statements are refused "
                    f"(only SELECT / WITH / EXPLAIN queries run here)")
        con = self.connect_read_only()
        try:
            result = None
            for statement in statements:
                result = con.execute(statement.query)
            return result.fetchdf()
        finally:
            con.close()
