"""Attack corpus R (T22-T30 of security.md) against the real runner subprocess.

Every case must end with its exact error code within the deadline (pytest-timeout turns a hang
into a failure); none may leak the canary. Limits are small (see conftest.LIMITS).
"""

from __future__ import annotations

import dataclasses
import io
import textwrap

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from enclave.runner import RunnerError, RunnerLimits, run_query
from enclave.runner import client as runner_client
from tests.runner.conftest import LIMITS, outcome, parquet_bytes

REJECTED = "E_QUERY_REJECTED"
RUNTIME = "E_QUERY_RUNTIME"
RESOURCE = "E_RESOURCE"
INPUT = "E_INPUT"

pytestmark = pytest.mark.timeout(60)


def q(body: str) -> str:
    return "def query(tables, params):\n" + textwrap.indent(textwrap.dedent(body).strip(), "    ")


# -- T22 infinite loops -----------------------------------------------------------------------
T22_WHILE_TRUE = q("while True:\n    pass")
T22_SQL_CROSS_JOIN = "SELECT sum(a.range * b.range) AS s FROM range(100000000) a, range(100000) b"
# -- T23 memory bombs -------------------------------------------------------------------------
T23_STRING = q("x = 'a' * 10**10\nreturn tables['people']")
T23_LIST = q("x = [0] * 10**9\nreturn tables['people']")
T23_BYTES = q("x = b'x' * 2**34\nreturn tables['people']")
T23_NESTED = q("x = [[0] * 10**4 for i in range(10**5)]\nreturn tables['people']")
T23_GROWING = q("x = ['y' * 1000]\nwhile True:\n    x = x + x")
T23_SQL = "SELECT string_agg(repeat('x', 1000), '') AS s FROM range(10000000)"
# -- T24 format-width bombs -------------------------------------------------------------------
T24_FSTRING = q('x = f"{1:>{10**9}}"\nreturn tables["people"]')
T24_PERCENT = q("x = '%*d' % (10**9, 1)\nreturn tables['people']")
# -- T25 big-int bombs ------------------------------------------------------------------------
T25_POWER_TOWER = q("x = 10**10**8\nreturn tables['people']")
T25_BIG_POW = q("x = 3 ** (10**9)\nreturn tables['people']")
T25_POW_BUILTIN = q("x = pow(3, 10**9)\nreturn tables['people']")
T25_STR_DIGITS = q("x = str(10**5000)\nreturn tables['people']")
# -- T26 parser and compiler bombs ------------------------------------------------------------
T26_PARENS = "x = " + "(" * 100_000 + ")" * 100_000
T26_LAMBDAS = "x = " + "lambda: " * 20_000 + "0"
T26_DEEP_BINOP = "x = 1" + " + 1" * 50_000
T26_MANY_NODES = "x = [" + "1," * 120_000 + "]"
T26_NESTED_LISTS = "x = " + "[" * 5_000 + "]" * 5_000
# -- T27 ReDoS --------------------------------------------------------------------------------
T27_RE = q("return re.match(r'(a+)+$', 'a' * 40 + 'b')")
T27_SQL_RE2 = "SELECT regexp_matches(repeat('a', 40) || 'b', '(a+)+$') AS m"
# -- T28 output bombs -------------------------------------------------------------------------
T28_SQL_ROWS = "SELECT range AS x FROM range(10000000)"
T28_SQL_HUGE_CELLS = "SELECT repeat('x', 100000000) AS s FROM range(20)"
T28_PY_BYTES = q("t = tables['people']\nreturn t.with_column('pad', 'x' * 200000)")
T28_PY_CELL = q("t = tables['people']\nreturn t.with_column('pad', 'x' * 10**8)")
# -- T29 stdout flood -------------------------------------------------------------------------
T29_PRINT = q("print('x' * 10**9)\nreturn tables['people']")

CORPUS: list[tuple[str, str, str, str]] = [
    ("T22-while-true", "python", T22_WHILE_TRUE, RESOURCE),
    ("T22-sql-cross-join", "sql", T22_SQL_CROSS_JOIN, RESOURCE),
    ("T23-string", "python", T23_STRING, RESOURCE),
    ("T23-list", "python", T23_LIST, RESOURCE),
    ("T23-bytes", "python", T23_BYTES, RESOURCE),
    ("T23-nested", "python", T23_NESTED, RESOURCE),
    ("T23-growing", "python", T23_GROWING, RESOURCE),
    ("T23-sql", "sql", T23_SQL, RESOURCE),
    ("T24-fstring", "python", T24_FSTRING, RESOURCE),
    ("T24-percent", "python", T24_PERCENT, RESOURCE),
    ("T25-power-tower", "python", T25_POWER_TOWER, RESOURCE),
    ("T25-big-pow", "python", T25_BIG_POW, RESOURCE),
    ("T25-pow-builtin", "python", T25_POW_BUILTIN, RUNTIME),
    ("T25-str-digits", "python", T25_STR_DIGITS, RUNTIME),
    ("T26-parens", "python", T26_PARENS, REJECTED),
    ("T26-lambdas", "python", T26_LAMBDAS, REJECTED),
    ("T26-deep-binop", "python", T26_DEEP_BINOP, REJECTED),
    ("T26-many-nodes", "python", T26_MANY_NODES, REJECTED),
    ("T26-nested-lists", "python", T26_NESTED_LISTS, REJECTED),
    ("T27-re", "python", T27_RE, RUNTIME),
    ("T27-sql-re2", "sql", T27_SQL_RE2, "OK"),
    ("T28-sql-rows", "sql", T28_SQL_ROWS, RESOURCE),
    ("T28-sql-huge-cells", "sql", T28_SQL_HUGE_CELLS, RESOURCE),
    ("T28-py-bytes", "python", T28_PY_BYTES, RESOURCE),
    ("T28-py-cell", "python", T28_PY_CELL, RESOURCE),
    ("T29-print", "python", T29_PRINT, REJECTED),
]


@pytest.mark.parametrize(
    ("kind", "code", "expected"), [pytest.param(k, c, e, id=i) for i, k, c, e in CORPUS]
)
def test_resource_attack(tables: dict[str, bytes], kind: str, code: str, expected: str) -> None:
    got, message = outcome(kind, code, tables)
    assert got == expected, message
    if code in MESSAGES:
        assert message == MESSAGES[code]


MESSAGES = {
    T22_WHILE_TRUE: "CPU time limit exceeded",
    T23_STRING: "memory limit exceeded",
    T28_SQL_ROWS: "output exceeds 100000 rows",
    T28_PY_BYTES: "output exceeds 8388608 bytes",
}


def test_t22_wall_clock_deadline_kills_the_process_group(tables: dict[str, bytes]) -> None:
    limits = dataclasses.replace(LIMITS, cpu_seconds=60, wall_seconds=1.5)
    got, message = outcome("python", T22_WHILE_TRUE, tables, limits=limits)
    assert (got, message) == (RESOURCE, "wall-clock deadline of 1.5 s exceeded")


def test_t26_huge_source_is_refused_before_spawning(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_spawn(*args: object, **kwargs: object) -> None:
        raise AssertionError("a runner was spawned")

    monkeypatch.setattr(runner_client.subprocess, "Popen", no_spawn)
    with pytest.raises(RunnerError) as info:
        run_query("python", "x = 1\n" * (50 * 1024 * 1024 // 6), {}, {}, LIMITS)
    assert info.value.code == REJECTED


# -- T30 input bombs --------------------------------------------------------------------------
def _input_outcome(data: bytes, **overrides: int) -> tuple[str, str]:
    limits = dataclasses.replace(LIMITS, **overrides)
    return outcome("sql", "SELECT count(*) AS n FROM t", {"t": data}, limits=limits)


def test_t30_too_many_rows() -> None:
    data = parquet_bytes(pa.table({"x": list(range(1000))}))
    assert _input_outcome(data, max_input_rows=500)[0] == INPUT


def test_t30_too_many_columns() -> None:
    data = parquet_bytes(pa.table({f"c{i}": [i] for i in range(100)}))
    assert _input_outcome(data, max_input_columns=50)[0] == INPUT


def test_t30_not_parquet() -> None:
    assert _input_outcome(b"not a parquet file at all")[0] == INPUT


def test_t30_truncated_parquet() -> None:
    data = parquet_bytes(pa.table({"x": list(range(1000))}))
    assert _input_outcome(data[: len(data) // 2])[0] == INPUT


def test_t30_duplicate_column_names() -> None:
    data = parquet_bytes(pa.table([pa.array([1]), pa.array([2])], names=["x", "x"]))
    assert _input_outcome(data)[0] == INPUT


def test_t30_dictionary_bomb_is_stopped_by_the_memory_limit() -> None:
    """A few KiB that decode to 800 MB: the footer looks harmless, RLIMIT_AS stops it."""
    indices = pa.array([0] * 2_000_000, pa.int32())
    bomb = pa.DictionaryArray.from_arrays(indices, pa.array(["x" * 400]))
    sink = io.BytesIO()
    # Without the stored Arrow schema the reader decodes to dense strings, as a party could.
    pq.write_table(pa.table({"s": bomb}), sink, store_schema=False)
    data = sink.getvalue()
    assert len(data) < 1 << 20
    assert _input_outcome(data) == (RESOURCE, "memory limit exceeded")


def test_t30_within_caps_passes(tables: dict[str, bytes]) -> None:
    limits = RunnerLimits(memory_bytes=LIMITS.memory_bytes, threads=1, max_input_rows=60)
    assert outcome("sql", "SELECT count(*) AS n FROM people", tables, limits=limits)[0] == "OK"
