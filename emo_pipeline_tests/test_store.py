"""The warehouse: atomic Parquet writes, DuckDB views, and the read-only SQL surface."""

from __future__ import annotations

import threading
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from emo_pipeline.core.atomic import atomic_output
from emo_pipeline.storage.warehouse import ReadOnlyViolation, Warehouse


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    store = Warehouse(tmp_path / "wh")
    store.write_table("scores", pd.DataFrame({"emotion": ["joy", "fear", "joy"], "score": [0.5, 0.25, 0.75]}))
    return store


def test_views_answer_sql(warehouse: Warehouse):
    result = warehouse.query("SELECT emotion, sum(score) AS total FROM scores GROUP BY 1 ORDER BY 1")
    assert result.to_dict("records") == [{"emotion": "fear", "total": 0.25}, {"emotion": "joy", "total": 1.25}]


def test_partitioned_table_is_one_view(warehouse: Warehouse):
    for shard in range(3):
        warehouse.write_partition("shards", f"shard-{shard}", pd.DataFrame({"shard": [shard] * (shard + 1)}))
    assert warehouse.query("SELECT count(*) AS n FROM shards")["n"][0] == 6
    assert warehouse.table_row_count("shards") == 6
    assert len(warehouse.read_table("shards")) == 6


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("INSERT INTO scores VALUES ('x', 1)", "INSERT"),
        ("DROP VIEW scores", "DROP"),
        ("CREATE TABLE t AS SELECT 1", "CREATE"),
        ("COPY (SELECT 1) TO '{tmp}/out.csv'", "COPY"),
        ("ATTACH '{tmp}/other.duckdb' AS other", "ATTACH"),
        ("INSTALL httpfs", "LOAD"),
        ("SELECT 1; DELETE FROM scores", "DELETE"),
    ],
)
def test_sql_surface_refuses_writes_and_changes_nothing(warehouse: Warehouse, tmp_path: Path, sql: str, kind: str):
    before = (warehouse.catalog_path.read_bytes(), sorted(p.name for p in tmp_path.rglob("*")))
    with pytest.raises(ReadOnlyViolation, match=f"read-only: {kind} statements are refused"):
        warehouse.query(sql.format(tmp=tmp_path))
    assert (warehouse.catalog_path.read_bytes(), sorted(p.name for p in tmp_path.rglob("*"))) == before


@pytest.mark.parametrize("source", ["read_csv('{outside}')", "read_text('{outside}')",
                                    "read_parquet('{tables}/../elsewhere.parquet')", "glob('{tables}/../*')"])
def test_sql_surface_reads_nothing_outside_the_tables(warehouse: Warehouse, tmp_path: Path, source: str):
    outside = tmp_path / "secret.csv"
    outside.write_text("token\nhunter2\n")
    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "wh" / "elsewhere.parquet")
    sql = "SELECT * FROM " + source.format(outside=outside, tables=warehouse.tables_dir)
    with pytest.raises(duckdb.PermissionException, match="disabled by configuration"):
        warehouse.query(sql)
    assert warehouse.query("SELECT count(*) AS n FROM scores")["n"][0] == 3
    con = warehouse.connect_read_only()  # SET is refused by `query`; a Python reader cannot undo it either
    try:
        with pytest.raises(duckdb.Error, match="Cannot enable external access"):
            con.execute("SET enable_external_access = true")
    finally:
        con.close()


def test_readers_open_at_once_in_one_process_share_the_restriction(warehouse: Warehouse, tmp_path: Path):
    """Read-only connections to one file in one process share DuckDB's settings: the second one opened
    while the first is still open answers too, and is as restricted."""
    first = warehouse.connect_read_only()
    try:
        second = warehouse.connect_read_only()
        try:
            assert second.execute("SELECT count(*) FROM scores").fetchone()[0] == 3
            with pytest.raises(duckdb.PermissionException, match="disabled by configuration"):
                second.execute(f"SELECT * FROM read_text('{tmp_path / 'wh' / 'catalog.lock'}')")
            assert warehouse.query("SELECT count(*) AS n FROM scores")["n"][0] == 3
        finally:
            second.close()
        assert first.execute("SELECT count(*) FROM scores").fetchone()[0] == 3
    finally:
        first.close()


def test_readers_in_many_threads_all_answer(warehouse: Warehouse):
    """Threads opening read-only connections at the same moment (a reader loop beside a query)."""
    errors: list[BaseException] = []
    counts: list[int] = []
    start = threading.Barrier(8)

    def read() -> None:
        start.wait()
        for _ in range(10):
            try:
                counts.append(int(warehouse.query("SELECT count(*) AS n FROM scores")["n"][0]))
            except BaseException as exc:  # noqa: BLE001 - any failure is the finding
                errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert counts == [3] * 80


def test_catalog_is_opened_read_only_by_readers(warehouse: Warehouse):
    con = warehouse.connect_read_only()
    try:
        with pytest.raises(duckdb.Error, match="read-only"):
            con.execute("CREATE VIEW sneaky AS SELECT 1")
    finally:
        con.close()


def test_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path: Path):
    target = tmp_path / "table.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(target)
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_bytes(b"half a file")
        raise RuntimeError("crash in the middle of a write")
    assert pd.read_parquet(target)["a"].tolist() == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.parquet"]


def test_readers_keep_answering_while_tables_are_rewritten(warehouse: Warehouse):
    """A reader in a loop never sees a lock error or a half-written table during refreshes."""
    errors: list[BaseException] = []
    seen: set[int] = set()
    stop = threading.Event()

    def read_loop():
        while not stop.is_set():
            try:
                seen.add(int(warehouse.query("SELECT count(*) AS n FROM grow")["n"][0]))
            except BaseException as exc:  # noqa: BLE001 - any failure is the finding
                errors.append(exc)
                return

    warehouse.write_table("grow", pd.DataFrame({"i": range(10)}))
    reader = threading.Thread(target=read_loop)
    reader.start()
    try:
        for size in range(11, 40):
            warehouse.write_table("grow", pd.DataFrame({"i": range(size)}))
    finally:
        stop.set()
        reader.join()
    assert errors == []
    assert seen and seen <= set(range(10, 40))


def test_views_of_removed_tables_are_dropped(warehouse: Warehouse):
    warehouse.write_table("temporary", pd.DataFrame({"a": [1]}))
    warehouse.table_path("temporary").unlink()
    assert warehouse.refresh_views() == ["scores"]
    with pytest.raises(duckdb.CatalogException):
        warehouse.query("SELECT * FROM temporary")
