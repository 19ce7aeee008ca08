"""Plan runs: the runner reads each input in place from an inherited in-memory file, and its
DuckDB may read those files and nothing else, with its configuration locked."""

from __future__ import annotations

import io

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from enclave.memfile import MemFile
from enclave.runner import RunnerError, run_query
from enclave.runner.limits import RunnerLimits
from enclave.runner.sqlengine import GIB, JOIN_HEADROOM, buffer_bytes, open_connection


def parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def memfile(data: bytes) -> MemFile:
    f = MemFile(len(data))
    f[0:len(data)] = data
    return f


def test_a_plan_run_reads_its_inputs_in_place() -> None:
    data = parquet(pa.table({"id": ["a", "b", "b"], "v": [1, 2, 3]}))
    f = memfile(data)
    out = run_query("plan", 'SELECT id, sum(v) AS s FROM "t" GROUP BY id ORDER BY id',
                    {"t": f.view()}, {}, RunnerLimits(memory_bytes=2 << 30), files={"t": f})
    assert out.to_pylist() == [{"id": "a", "s": 1}, {"id": "b", "s": 5}]


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_parquet('/proc/self/fd/0')",
    "SELECT * FROM glob('/*')",
])
def test_the_plan_engine_reads_nothing_else(sql: str) -> None:
    f = memfile(parquet(pa.table({"id": ["a"]})))
    with pytest.raises(RunnerError) as err:
        run_query("plan", sql, {"t": f.view()}, {}, RunnerLimits(memory_bytes=2 << 30),
                  files={"t": f})
    assert err.value.code in ("E_QUERY_RUNTIME", "E_QUERY_REJECTED")


def test_the_allowed_paths_cannot_be_widened() -> None:
    con = open_connection({}, RunnerLimits(memory_bytes=2 << 30), readable=["/nonexistent"])
    with pytest.raises(duckdb.Error):
        con.execute("SET allowed_paths = ['/etc/passwd']")
    with pytest.raises(duckdb.Error):
        con.execute("SET enable_external_access = true")
    with pytest.raises(duckdb.PermissionException):
        con.sql("SELECT * FROM read_csv('/etc/passwd')").fetchall()


def test_only_a_plan_run_may_spill() -> None:
    """With spill bytes configured, a plan's DuckDB gets a temp directory; custom SQL gets
    none and its runner's file-size limit goes back to 0."""
    data = parquet(pa.table({"id": [str(i) for i in range(1000)]}))
    f = memfile(data)
    limits = RunnerLimits(memory_bytes=2 << 30, spill_bytes=1 << 30)
    out = run_query("plan", "SELECT current_setting('temp_directory') AS d, "
                    "current_setting('max_temp_directory_size') AS m",
                    {"t": f.view()}, {}, limits, files={"t": f})
    row = out.to_pylist()[0]
    assert row["d"].endswith("/spill") and row["m"] != "0 bytes"
    custom = run_query("sql", "SELECT current_setting('temp_directory') AS d",
                       {"t": data}, {}, limits)
    assert custom.to_pylist()[0]["d"] == ""


def test_only_a_large_join_only_runner_buffers_more_than_half() -> None:
    """DuckDB's memory limit: half the runner's address space, and for a plan grouping by no
    person up to three quarters, never leaving less than the headroom beside it."""
    for memory in (1 * GIB, 4 * GIB, 12 * GIB, 64 * GIB):
        assert buffer_bytes(memory) == memory // 2
        joins = buffer_bytes(memory, joins_only=True)
        assert memory // 2 <= joins <= memory * 3 // 4
        assert joins == memory // 2 or memory - joins >= JOIN_HEADROOM
    assert buffer_bytes(4 * GIB, joins_only=True) == 2 * GIB
    assert buffer_bytes(12 * GIB, joins_only=True) == 9 * GIB
    con = open_connection({}, RunnerLimits(memory_bytes=12 * GIB), readable=["/nonexistent"],
                          joins_only=True)
    assert con.execute("SELECT current_setting('memory_limit')").fetchone() is not None
