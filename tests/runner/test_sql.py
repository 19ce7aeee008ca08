"""SQL bundles: the happy path, the statement policy, and the locked DuckDB configuration."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest

from enclave.runner import run_query
from enclave.runner.limits import RunnerLimits
from enclave.runner.sqlengine import open_connection
from tests.runner.conftest import CANARY, LIMITS, outcome, people_table

REJECTED = "E_QUERY_REJECTED"
RUNTIME = "E_QUERY_RUNTIME"

pytestmark = pytest.mark.timeout(60)

JOIN_SQL = """
SELECT p.id, p.age * 2 + o.total AS score
FROM people AS p JOIN orders AS o ON p.id = o.id
WHERE p.age >= 30 AND p.country IN ('FR', 'DE')
"""

SQL_CORPUS: list[tuple[str, str, str]] = [
    ("multiple-statements", "SELECT 1; SELECT 2", REJECTED),
    ("attach", "ATTACH '/tmp/x.db' AS x", REJECTED),
    ("copy", "COPY people TO '/tmp/out.csv'", REJECTED),
    ("copy-select", "COPY (SELECT * FROM people) TO '/tmp/out.parquet'", REJECTED),
    ("install", "INSTALL httpfs", REJECTED),
    ("load", "LOAD httpfs", REJECTED),
    ("pragma", "PRAGMA database_list", REJECTED),
    ("set", "SET enable_external_access = true", REJECTED),
    ("reset", "RESET lock_configuration", REJECTED),
    ("create", "CREATE TABLE x AS SELECT * FROM people", REJECTED),
    ("export", "EXPORT DATABASE '/tmp/db'", REJECTED),
    ("call", "CALL pragma_version()", REJECTED),
    ("explain", "EXPLAIN SELECT 1", REJECTED),
    # A dynamic PIVOT runs a query at bind time and names columns after cell values.
    ("dynamic-pivot", "SELECT * FROM (PIVOT people ON ssn USING count(*)) WHERE x_ = 1", REJECTED),
    ("read-csv", "SELECT * FROM read_csv('/etc/passwd')", REJECTED),
    ("read-csv-auto", "SELECT * FROM read_csv_auto('/etc/passwd')", REJECTED),
    ("read-text", "SELECT * FROM read_text('/etc/passwd')", REJECTED),
    ("read-blob", "SELECT * FROM read_blob('/etc/passwd')", REJECTED),
    ("read-parquet", "SELECT * FROM read_parquet('/tmp/*.parquet')", REJECTED),
    ("read-json", "SELECT * FROM read_json('/etc/hosts')", REJECTED),
    ("glob", "SELECT * FROM glob('/*')", REJECTED),
    ("scalar-in-subquery", "SELECT (SELECT count(*) FROM read_text('/etc/passwd')) AS n", REJECTED),
    ("file-literal", "SELECT * FROM '/etc/passwd'", REJECTED),
    ("file-literal-csv", "SELECT * FROM 'data.csv'", REJECTED),
    ("query-function", "SELECT * FROM query('SELECT 1')", REJECTED),
    ("getenv", "SELECT getenv('PATH') AS p", REJECTED),
    ("duckdb-settings", "SELECT * FROM duckdb_settings()", REJECTED),
    ("python-variable", "SELECT * FROM limits", REJECTED),
    ("python-variable-2", "SELECT * FROM tables", REJECTED),
    ("unknown-table", "SELECT * FROM nope", REJECTED),
    ("syntax", "SELEC 1", REJECTED),
    # Conversion errors quote the offending cell: only the type name may come back.
    ("conversion", "SELECT CAST(email AS INTEGER) AS x FROM people", RUNTIME),
    ("conversion-ssn", "SELECT CAST(ssn AS DATE) AS x FROM people", RUNTIME),
    ("error-function", "SELECT error(ssn) AS x FROM people", RUNTIME),
    ("cte-ok", "WITH a AS (SELECT id FROM people) SELECT count(*) AS n FROM a", "OK"),
]


@pytest.mark.parametrize(("sql", "expected"), [pytest.param(s, e, id=i) for i, s, e in SQL_CORPUS])
def test_sql_policy(tables: dict[str, bytes], sql: str, expected: str) -> None:
    got, message = outcome("sql", sql, tables)
    assert got == expected, message


def test_runtime_error_names_only_the_type(tables: dict[str, bytes]) -> None:
    assert outcome("sql", "SELECT CAST(ssn AS INTEGER) AS x FROM people", tables) == (
        RUNTIME, "ConversionException")


def test_sql_join_returns_the_right_rows(tables: dict[str, bytes]) -> None:
    result = run_query("sql", JOIN_SQL, tables, {}, LIMITS)
    assert result.column_names == ["id", "score"]
    assert sorted(result.to_pylist(), key=lambda r: (r["id"], r["score"])) == expected_join()


def test_sql_named_params(tables: dict[str, bytes]) -> None:
    sql = JOIN_SQL.replace("p.age >= 30", "p.age >= $min_age").replace(
        "p.country IN ('FR', 'DE')", "list_contains($countries, p.country)")
    params = {"min_age": 30, "countries": ["FR", "DE"], "unused": 1}
    result = run_query("sql", sql, tables, params, LIMITS)
    assert sorted(result.to_pylist(), key=lambda r: (r["id"], r["score"])) == expected_join()
    assert outcome("sql", sql, tables, {"min_age": 30}) == (
        REJECTED, "parameter $countries is not in the params")
    assert outcome("sql", "SELECT ? AS x", tables, {"x": 1})[0] == REJECTED


def expected_join() -> list[dict[str, object]]:
    from tests.runner.conftest import orders_table

    people = {r["id"]: r for r in people_table().to_pylist()}
    rows = []
    for order in orders_table().to_pylist():
        person = people.get(order["id"])
        if person and person["age"] >= 30 and person["country"] in ("FR", "DE"):
            rows.append({"id": order["id"], "score": person["age"] * 2 + order["total"]})
    assert rows, "the fixture must produce matches"
    return sorted(rows, key=lambda r: (r["id"], r["score"]))


def test_settings_are_locked_down(tables: dict[str, bytes]) -> None:
    sql = ("SELECT current_setting('enable_external_access') AS ext, "
           "current_setting('lock_configuration') AS locked, "
           "current_setting('python_enable_replacements') AS repl, "
           "current_setting('autoload_known_extensions') AS autoload, "
           "current_setting('autoinstall_known_extensions') AS autoinstall, "
           "current_setting('temp_directory') AS tmp")
    row = run_query("sql", sql, tables, {}, LIMITS).to_pylist()[0]
    assert row == {"ext": False, "locked": True, "repl": False, "autoload": False,
                   "autoinstall": False, "tmp": ""}


# -- the connection itself, without the statement policy in front of it -----------------------
@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    return open_connection({"people": people_table()},
                           RunnerLimits(memory_bytes=1 << 30, threads=1))


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM read_blob('/etc/passwd')",
    "SELECT * FROM '/etc/passwd'",
    "SELECT * FROM glob('/etc/*')",
    "ATTACH '/tmp/sealroom-attach.db' AS x",
    "COPY (SELECT 1) TO '/tmp/sealroom-copy.csv'",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
    "SET python_enable_replacements = true",
])
def test_external_access_is_off_in_duckdb_itself(con: duckdb.DuckDBPyConnection,
                                                  sql: str) -> None:
    with pytest.raises(duckdb.Error) as info:
        con.sql(sql).fetchall()
    assert "root:" not in str(info.value)


def test_registered_tables_are_readable(con: duckdb.DuckDBPyConnection) -> None:
    table = con.sql("SELECT count(*) AS n FROM people").to_arrow_table()
    assert table == pa.table({"n": pa.array([60], pa.int64())})


def test_runtime_error_text_would_have_leaked(con: duckdb.DuckDBPyConnection) -> None:
    """Why the runner drops DuckDB's messages: they quote cell values."""
    with pytest.raises(duckdb.Error) as info:
        con.sql("SELECT CAST(ssn AS INTEGER) FROM people").fetchall()
    assert CANARY in str(info.value) or "000-00-" in str(info.value)
