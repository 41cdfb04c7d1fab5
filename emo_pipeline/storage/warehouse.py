"""The warehouse: Parquet files as the source of truth, a DuckDB catalog of views over them.

- Each table is one Parquet file `<tables>/<name>.parquet`, or a folder `<tables>/<name>/` of
  partition files. `<tables>` is `<root>/tables` by default, or any fsspec URL (`s3://bucket/emo`,
  `gs://...`, `memory://...`): the Parquet files then live in that object store.
- Every file is written under a temporary name and then published whole (a local rename, or one
  upload: an object-store PUT is atomic), so no reader ever sees half a file.
- `catalog.duckdb` always lives on local disk under `root`: it holds one view per table. Remote
  filesystems are registered with each DuckDB connection, so the views read the object store through
  fsspec. DuckDB allows one writing process at a time, so view refreshes take an exclusive file lock
  and keep the database open for milliseconds; readers open it read-only and retry briefly while a
  refresh holds it.
- `query` is the SQL surface for users: read-only, and statements other than queries are refused
  before they reach DuckDB.
"""

from __future__ import annotations

import contextlib
import fcntl
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import duckdb
import fsspec
import pandas as pd
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from emo_pipeline.core.atomic import atomic_output

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# Statement types a read-only user query may contain.
_READ_ONLY_TYPES = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
_LOCK_RETRY_SECONDS = 30.0
_READ_ONLY_SETUP = threading.Lock()  # see `Warehouse.connect_read_only`
# Object stores whose single upload replaces an object atomically; on other remote filesystems a
# file is uploaded under a temporary name and moved into place.
_ATOMIC_PUT = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory"}


class ReadOnlyViolation(ValueError):
    """A statement given to the read-only SQL surface would change something."""


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"table name {name!r} must be lower-case letters, digits and underscores")
    return name


def _check_partition(partition: str) -> str:
    if not re.match(r"^[A-Za-z0-9_.=-]+$", partition) or partition.startswith("."):
        raise ValueError(f"partition key {partition!r} is not a safe file name")
    return partition


def _is_busy(exc: Exception) -> bool:
    """True for the errors that mean "another connection holds the file right now"."""
    message = str(exc).lower()
    # Another process holds the file lock; or, inside one process, a connection with the other
    # read-only setting is still open.
    return "lock" in message or "different configuration" in message


class Warehouse:
    """Tables under `tables` (a local folder or an fsspec URL; default `<root>/tables`), views in
    `<root>/catalog.duckdb`. A store's endpoint and credentials come from its own settings (fsspec's
    configuration, or for S3 the AWS_* variables)."""

    def __init__(self, root: str | Path, tables: str | Path | None = None):
        self.root = Path(root)
        self.catalog_path = self.root / "catalog.duckdb"
        fs, base = fsspec.core.url_to_fs(str(tables) if tables else str(self.root / "tables"))
        # Local tables keep plain paths and renames; `fs` is set only for a remote store.
        self.fs = None if isinstance(fs, LocalFileSystem) else fs
        self.tables_dir = Path(base) if self.fs is None else None
        self._base = base.rstrip("/")

    @property
    def tables_location(self) -> str:
        """Where the Parquet files are: a local folder or a URL."""
        return str(self.tables_dir) if self.fs is None else self.fs.unstrip_protocol(self._base)

    # -- locations -----------------------------------------------------------------------------
    def _key(self, name: str, partition: str | None = None) -> str:
        """A table's file relative to the tables location."""
        if partition is None:
            return f"{_check_name(name)}.parquet"
        return f"{_check_name(name)}/{_check_partition(partition)}.parquet"

    def _location(self, key: str) -> str:
        """`key` as a local path or a URL with its protocol (what DuckDB and metadata show)."""
        return str(self.tables_dir / key) if self.fs is None else self.fs.unstrip_protocol(f"{self._base}/{key}")

    def table_uri(self, name: str) -> str:
        return self._location(self._key(name))

    def partition_uri(self, name: str, partition: str) -> str:
        return self._location(self._key(name, partition))

    def table_path(self, name: str) -> Path:
        """The local file of a table (local warehouses only)."""
        return self._local(self._key(name))

    def partition_path(self, name: str, partition: str) -> Path:
        return self._local(self._key(name, partition))

    def _local(self, key: str) -> Path:
        if self.fs is not None:
            raise ValueError(f"the tables live at {self.tables_location}, not on local disk: use table_uri")
        return self.tables_dir / key

    def _exists(self, key: str) -> bool:
        if self.fs is None:
            return (self.tables_dir / key).is_file()
        # fsspec caches listings per process; other processes write tables, so ask the store itself.
        self.fs.invalidate_cache()
        return self.fs.isfile(f"{self._base}/{key}")

    # -- writing -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _output(self, key: str) -> Iterator[Path]:
        """A local temporary file to write; published as `key` when the block ends without error."""
        if self.fs is None:
            with atomic_output(self.tables_dir / key) as tmp:
                yield tmp
            return
        with tempfile.TemporaryDirectory(prefix="emo-table-") as folder:
            tmp = Path(folder) / Path(key).name
            yield tmp
            target = f"{self._base}/{key}"
            protocols = {self.fs.protocol} if isinstance(self.fs.protocol, str) else set(self.fs.protocol)
            if protocols & _ATOMIC_PUT:
                self.fs.put_file(str(tmp), target)
            else:
                folder = target.rsplit("/", 1)[0]
                self.fs.makedirs(folder, exist_ok=True)
                staged = f"{folder}/.{Path(key).name}.{uuid.uuid4().hex}.tmp"
                self.fs.put_file(str(tmp), staged)
                self.fs.mv(staged, target)

    @contextlib.contextmanager
    def table_outputs(self, names: Iterable[str]) -> Iterator[dict[str, Path]]:
        """Local files to write whole tables to (for writers that make Parquet themselves); each is
        published as its table when the block ends without error, and none is when it raises."""
        with contextlib.ExitStack() as stack:
            yield {name: stack.enter_context(self._output(self._key(name))) for name in names}

    def write_table(self, name: str, frame: pd.DataFrame, *, refresh: bool = True) -> str:
        """Write a whole table atomically and (by default) refresh its view; returns its location."""
        with self._output(self._key(name)) as tmp:
            frame.to_parquet(tmp, index=False)
        if refresh:
            self.refresh_views()
        return self.table_uri(name)

    def write_partition(self, name: str, partition: str, frame: pd.DataFrame, *, refresh: bool = True) -> str:
        with self._output(self._key(name, partition)) as tmp:
            frame.to_parquet(tmp, index=False)
        if refresh:
            self.refresh_views()
        return self.partition_uri(name, partition)

    def _register(self, con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
        """Let `con` read the remote store's URLs through fsspec."""
        if self.fs is not None:
            con.register_filesystem(self.fs)
        return con

    def connect_scratch(self, memory_limit: str = "1GB") -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB with one view per table, for building tables with SQL.

        It never opens the catalog, so it needs no lock and cannot change what users query; DuckDB
        spills to a temporary folder beyond `memory_limit` (full-size Visual Genome joins).
        """
        con = self._register(duckdb.connect(":memory:", config={"memory_limit": memory_limit}))
        for name, source in self.table_sources().items():
            self.create_view(con, name, source)
        return con

    @staticmethod
    def create_view(con: duckdb.DuckDBPyConnection, name: str, source: str, *, replace: bool = False) -> None:
        """View `name` over the Parquet file or glob `source`."""
        literal = source.replace("'", "''")
        create = "CREATE OR REPLACE VIEW" if replace else "CREATE VIEW"
        con.execute(f"{create} \"{_check_name(name)}\" AS SELECT * FROM read_parquet('{literal}')")

    def write_query(self, name: str, con: duckdb.DuckDBPyConnection, sql: str, *, refresh: bool = True) -> str:
        """Write the result of `sql` (run on `con`, e.g. from `connect_scratch`) as table `name`, atomically."""
        with self._output(self._key(name)) as tmp:
            literal = str(tmp).replace("'", "''")
            con.execute(f"COPY ({sql}) TO '{literal}' (FORMAT parquet)")
        if refresh:
            self.refresh_views()
        return self.table_uri(name)

    # -- reading -------------------------------------------------------------------------------
    def read_partition(self, name: str, partition: str) -> pd.DataFrame:
        return self._read(self._key(name, partition))

    def has_partition(self, name: str, partition: str) -> bool:
        return self._exists(self._key(name, partition))

    def has_table(self, name: str) -> bool:
        return self._exists(self._key(name)) or bool(self._partition_keys(name))

    def _table_keys(self, name: str) -> list[str]:
        """The Parquet file of a table, or its partition files; a clear error when it has none."""
        key = self._key(name)
        keys = [key] if self._exists(key) else self._partition_keys(name)
        if not keys:
            raise FileNotFoundError(f"table {name!r} has not been written yet (no {self._location(key)})")
        return keys

    def _partition_keys(self, name: str) -> list[str]:
        if self.fs is None:
            folder = self.tables_dir / name
            return sorted(f"{name}/{p.name}" for p in folder.glob("*.parquet")) if folder.is_dir() else []
        self.fs.invalidate_cache()  # as in `_exists`
        return sorted(f"{name}/{p.rsplit('/', 1)[-1]}" for p in self.fs.glob(f"{self._base}/{name}/*.parquet"))

    def _read(self, key: str, columns: list[str] | None = None) -> pd.DataFrame:
        if self.fs is None:
            return pd.read_parquet(self.tables_dir / key, columns=columns)
        return pd.read_parquet(f"{self._base}/{key}", columns=columns, filesystem=self.fs)

    @contextlib.contextmanager
    def _parquet_file(self, key: str) -> Iterator[pq.ParquetFile]:
        if self.fs is None:
            yield pq.ParquetFile(self.tables_dir / key)
            return
        with self.fs.open(f"{self._base}/{key}", "rb") as handle:
            yield pq.ParquetFile(handle)

    def read_table(self, name: str, columns: list[str] | None = None) -> pd.DataFrame:
        """Read a table straight from Parquet (no catalog lock involved)."""
        keys = self._table_keys(name)
        if len(keys) == 1:
            return self._read(keys[0], columns)
        return pd.concat([self._read(key, columns) for key in keys], ignore_index=True)

    def table_row_count(self, name: str) -> int:
        """Row count from the Parquet footers alone."""
        total = 0
        for key in self._table_keys(name):
            with self._parquet_file(key) as parquet:
                total += parquet.metadata.num_rows
        return total

    def head(self, name: str, rows: int = 8) -> pd.DataFrame:
        """The first rows of a table without reading the whole file (tables can hold millions of rows)."""
        with self._parquet_file(self._table_keys(name)[0]) as parquet:
            batch = next(parquet.iter_batches(batch_size=rows), None)
            empty = parquet.schema_arrow.empty_table()
        return (batch.to_pandas() if batch is not None else empty.to_pandas()).head(rows)

    def table_sources(self) -> dict[str, str]:
        """View name -> the Parquet file or glob it reads."""
        if self.fs is None:
            entries = ([(p.name, p.is_dir()) for p in self.tables_dir.iterdir()]
                       if self.tables_dir.is_dir() else [])
        else:
            self.fs.invalidate_cache()  # as in `_exists`
            try:
                listed = self.fs.ls(self._base, detail=True)
            except FileNotFoundError:
                listed = []  # an object store has no empty folders: nothing written yet
            except Exception as exc:  # each store raises its own types (botocore's are not OSErrors)
                raise OSError(f"cannot list the tables at {self.tables_location}: {type(exc).__name__}: {exc}") from exc
            entries = [(e["name"].rstrip("/").rsplit("/", 1)[-1], e["type"] == "directory") for e in listed]
        sources: dict[str, str] = {}
        for entry, is_dir in sorted(entries):
            if entry.startswith("."):
                continue  # temporary files of writes in flight
            stem = entry.removesuffix(".parquet")
            if not is_dir and entry.endswith(".parquet") and _NAME.match(stem):
                sources[stem] = self._source(entry)
            elif is_dir and _NAME.match(entry) and self._partition_keys(entry):
                sources[entry] = self._source(entry) + "/*.parquet"
        return sources

    def _source(self, key: str) -> str:
        return str((self.tables_dir / key).resolve()) if self.fs is None else self._location(key)

    # -- DuckDB catalog ------------------------------------------------------------------------
    @contextlib.contextmanager
    def _writer(self) -> Iterator[duckdb.DuckDBPyConnection]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "catalog.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one writer among this machine's processes
            con = self._register(self._connect_with_retry(read_only=False))
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
                self.create_view(con, name, source, replace=True)
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
                f"no catalog at {self.catalog_path}: materialize some assets first (e.g. `make demo`), "
                f"or rebuild it from tables written elsewhere (`emo-pipeline sql --refresh`)")
        con = self._register(self._connect_with_retry(read_only=True))
        # INSTALL / LOAD are refused by `query`; a SELECT naming a URL or format must not do them
        # implicitly either (DuckDB would download an extension). Parquet, JSON and ICU are built in.
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("SET autoload_known_extensions = false")
        # Queries may read the tables and nothing else (no `read_csv('/etc/passwd')`); once external
        # access is off, this connection cannot turn it back on.
        allowed = (self.tables_location if self.fs is not None else str(self.tables_dir.resolve())).rstrip("/") + "/"
        # Read-only connections to one file within a process share one database, and these settings are
        # the database's: a connection opened while another is still open finds them already made. The
        # lock keeps two threads from both finding them unmade.
        with _READ_ONLY_SETUP:
            if con.execute("SELECT current_setting('enable_external_access')").fetchone()[0]:
                con.execute(f"SET allowed_directories = ['{allowed.replace(chr(39), chr(39) * 2)}']")
                con.execute("SET enable_external_access = false")
            elif allowed not in con.execute("SELECT current_setting('allowed_directories')").fetchone()[0]:
                con.close()
                raise RuntimeError(f"{self.catalog_path} is open in this process for tables elsewhere than "
                                   f"{allowed}: close that connection first")
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
