"""Benchmark: the keyless runner (spawn + hand-over + query + result) on a 1M x 500k join.

    python bench/runner.py [--left 1000000] [--right 500000] [--repeat 3] [--threads 2]

Tables (cached in bench/.data/): ``a`` (id = 64-char hex, x int64, note str) and ``b`` (id,
y double, segment str); 40% of b's ids are in a. The query joins on id, derives
``z = x * 2 + y`` and filters ``y > 0.1`` (about 180k rows out). It runs

- through ``run_query`` for the SQL and the Python kind (each measured in a separate process so
  that the runner children's peak RSS, RUSAGE_CHILDREN, is per kind);
- in this process as plain DuckDB and plain pandas on the same Parquet bytes, and as the
  Python facade in process (what the runner does, minus the process and the hand-over).

Prints the best of ``--repeat`` wall times, ratios and peak RSS.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

# bench/enclave.py shadows the ``enclave`` package when this directory is on sys.path
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

DATA = _HERE / ".data"
SQL = """SELECT a.id, a.x, b.y, a.x * 2 + b.y AS z
FROM a JOIN b USING (id) WHERE b.y > 0.1"""
PY = """
def query(tables, params):
    j = tables["a"].join(tables["b"], on="id")
    j = j.with_column("z", j["x"] * 2 + j["y"])
    return j.filter(j["y"] > params["min_y"]).select("id", "x", "y", "z")
"""
HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def hex_ids(rng: np.random.Generator, n: int) -> pa.Array:
    """``n`` random 64-character lowercase hex strings, built without Python loops."""
    raw = np.frombuffer(rng.bytes(n * 32), dtype=np.uint8)
    chars = np.empty(n * 64, dtype=np.uint8)
    chars[0::2] = HEX[raw >> 4]
    chars[1::2] = HEX[raw & 15]
    offsets = np.arange(0, (n + 1) * 64, 64, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars))


def make_tables(n_left: int, n_right: int, overlap: float = 0.4) -> tuple[Path, Path]:
    """Write (once) and return the Parquet files of ``a`` and ``b``."""
    DATA.mkdir(exist_ok=True)
    left = DATA / f"runner-a-{n_left}.parquet"
    right = DATA / f"runner-b-{n_left}-{n_right}.parquet"
    if left.exists() and right.exists():
        return left, right
    rng = np.random.default_rng(20261129)
    a_ids = hex_ids(rng, n_left)
    shared = int(n_right * overlap)
    picked = pa.array(rng.choice(n_left, shared, replace=False))
    b_ids = pa.concat_arrays([a_ids.take(picked), hex_ids(rng, n_right - shared)])
    segments = pa.array([f"seg{i}" for i in range(8)])
    pq.write_table(pa.table({
        "id": a_ids,
        "x": rng.integers(0, 1000, n_left),
        "note": pa.DictionaryArray.from_arrays(
            pa.array(rng.integers(0, 8, n_left).astype(np.int32)), segments).cast(pa.string()),
    }), left)
    pq.write_table(pa.table({
        "id": b_ids,
        "y": rng.random(n_right),
        "segment": segments.take(pa.array(rng.integers(0, 8, n_right))),
    }), right)
    return left, right


def best(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def plain_duckdb(a: bytes, b: bytes, threads: int) -> int:
    import duckdb

    con = duckdb.connect(config={"threads": threads})
    con.register("a", pq.read_table(pa.BufferReader(a)))
    con.register("b", pq.read_table(pa.BufferReader(b)))
    rows = con.sql(SQL).to_arrow_table().num_rows
    con.close()
    return rows


def plain_pandas(a: bytes, b: bytes) -> int:
    import pandas as pd

    da = pd.read_parquet(io.BytesIO(a))
    db = pd.read_parquet(io.BytesIO(b))
    j = da.merge(db, on="id")
    j["z"] = j["x"] * 2 + j["y"]
    return len(j[j["y"] > 0.1][["id", "x", "y", "z"]])


def facade_in_process(a: bytes, b: bytes) -> int:
    from enclave.runner.facade import unwrap_table, wrap_tables
    from enclave.runner.policy import compile_query
    from enclave.runner.pysandbox import run

    tables = {"a": pq.read_table(pa.BufferReader(a)), "b": pq.read_table(pa.BufferReader(b))}
    result = run(compile_query(PY), wrap_tables(tables), {"min_y": 0.1})
    return int(unwrap_table(result).num_rows)


def worker(kind: str, a: bytes, b: bytes, repeat: int, threads: int) -> None:
    """Measure run_query for one kind; print one JSON line (times and children's peak RSS)."""
    from enclave.runner import RunnerLimits, run_query

    limits = RunnerLimits(threads=threads)
    spawn, _ = best(lambda: run_query("sql", "SELECT 1 AS x", {}, {}, limits), repeat)
    handover, _ = best(lambda: run_query(
        "sql", "SELECT count(*) AS n FROM a, (SELECT count(*) FROM b)", {"a": a, "b": b}, {},
        limits), repeat)
    code = SQL if kind == "sql" else PY
    total, result = best(lambda: run_query(kind, code, {"a": a, "b": b}, {"min_y": 0.1},
                                           limits), repeat)
    assert isinstance(result, pa.Table)
    print(json.dumps({
        "spawn": spawn, "handover": handover, "total": total, "rows": result.num_rows,
        "out_mb": result.nbytes / 1e6,
        "child_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--left", type=int, default=1_000_000)
    parser.add_argument("--right", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", choices=["sql", "python"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    left, right = make_tables(args.left, args.right)
    a, b = left.read_bytes(), right.read_bytes()
    if args.worker:
        worker(args.worker, a, b, args.repeat, args.threads)
        return
    print(f"# runner: a {args.left:,} rows x b {args.right:,} rows, 64-hex ids, 40% overlap; "
          f"Parquet {len(a) / 1e6:.0f} + {len(b) / 1e6:.0f} MB; threads {args.threads}; "
          f"best of {args.repeat}")
    runs = {}
    for kind in ("sql", "python"):
        out = subprocess.run(
            [sys.executable, __file__, "--worker", kind, "--left", str(args.left), "--right",
             str(args.right), "--repeat", str(args.repeat), "--threads", str(args.threads)],
            check=True, capture_output=True, text=True,
        ).stdout
        runs[kind] = json.loads(out.strip().splitlines()[-1])
    duck, duck_rows = best(lambda: plain_duckdb(a, b, args.threads), args.repeat)
    pandas_s, pandas_rows = best(lambda: plain_pandas(a, b), args.repeat)
    facade_s, facade_rows = best(lambda: facade_in_process(a, b), args.repeat)
    assert duck_rows == pandas_rows == facade_rows == runs["sql"]["rows"] == runs["python"]["rows"]
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"result: {duck_rows:,} rows, {runs['sql']['out_mb']:.0f} MB of Arrow")
    print(f"runner spawn, no data (SQL)        {runs['sql']['spawn']:6.2f} s")
    print(f"runner hand-over + decode (SQL)    {runs['sql']['handover']:6.2f} s")
    print(f"run_query SQL                      {runs['sql']['total']:6.2f} s   "
          f"child peak RSS {runs['sql']['child_rss_mb']:5.0f} MB")
    print(f"run_query Python                   {runs['python']['total']:6.2f} s   "
          f"child peak RSS {runs['python']['child_rss_mb']:5.0f} MB")
    print(f"plain DuckDB, in process           {duck:6.2f} s")
    print(f"plain pandas, in process           {pandas_s:6.2f} s")
    print(f"Python facade, in process          {facade_s:6.2f} s")
    print(f"ratio run_query SQL / DuckDB       {runs['sql']['total'] / duck:6.2f}")
    print(f"ratio run_query Python / pandas    {runs['python']['total'] / pandas_s:6.2f}")
    print(f"ratio run_query Python / facade    {runs['python']['total'] / facade_s:6.2f}")
    print(f"peak RSS of this process (baselines) {own:.0f} MB")


if __name__ == "__main__":
    main()
