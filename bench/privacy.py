"""Benchmark: the platform's privacy layer next to a plain exact DuckDB group-by, same run.

    python bench/privacy.py [--sizes 1000000 10000000] [--repeat 3]

For each size, builds (in DuckDB, in memory) a row-level contribution table as the runner would
return it: uid (SHA-256 hex), segment (20 values), exposed (0/1), spend (0..1000); 1% of the
units have two rows, so contribution bounding has real work to do. Then, each in a forked child
process that shares the data (so its peak RSS = data + that step):

- ``plain``: SELECT segment, exposed, count(*), sum(spend) GROUP BY (no privacy at all);
- ``plain_distinct``: count(DISTINCT uid) and clamped spend (closer to what privacy needs);
- ``exact``: ``apply_output_spec`` without DP (bounding, clamping, fixed point, k = 50);
- ``dp``: ``apply_output_spec`` with DP (epsilon 1, public domains, OpenDP discrete Laplace).

Prints the best of ``--repeat`` wall times, the ratio to ``plain`` and peak RSS.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

# bench/enclave.py shadows the ``enclave`` package when this directory is on sys.path
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import duckdb  # noqa: E402
import pyarrow as pa  # noqa: E402

from enclave.privacy import aggregate as _aggregate  # noqa: E402
from enclave.privacy import apply_output_spec  # noqa: E402
from sdk.protocol.spec import OutputSpec  # noqa: E402

SEGMENTS = [f"seg{i}" for i in range(20)]
SPEC = {
    "mode": "aggregate",
    "privacy_unit": "uid",
    "group_by": [
        {"column": "segment", "domain": SEGMENTS},
        {"column": "exposed", "domain": ["0", "1"]},
    ],
    "measures": [{"name": "spend", "column": "spend", "agg": "sum", "lower": "0", "upper": "500"}],
    "max_contributions": 1,
}
PLAIN = "SELECT segment, exposed, count(*), sum(spend) FROM t GROUP BY ALL"
PLAIN_DISTINCT = (
    "SELECT segment, exposed, count(DISTINCT uid), sum(least(greatest(spend, 0), 500)) "
    "FROM t GROUP BY ALL"
)

_TABLE: pa.Table | None = None


def make_table(n: int) -> pa.Table:
    """The row-level contribution table (deterministic)."""
    con = duckdb.connect()
    table = con.sql(
        f"""SELECT sha256('u' || (CASE WHEN i % 100 = 0 THEN i + 1 ELSE i END)::VARCHAR) AS uid,
                   'seg' || (hash(i * 5) % 20)::VARCHAR AS segment,
                   (hash(i * 3) % 2)::BIGINT AS exposed,
                   (hash(i * 13) % 100000) / 100.0 AS spend
            FROM range({n}) r(i)"""
    ).to_arrow_table()
    con.close()
    return table


def _duckdb(sql: str) -> Callable[[pa.Table], object]:
    def run(table: pa.Table) -> object:
        con = duckdb.connect()
        con.register("t", table)
        rows = con.sql(sql).fetchall()
        con.close()
        return rows

    return run


def _privacy(dp: bool) -> Callable[[pa.Table], object]:
    data = dict(SPEC)
    if dp:
        data["dp"] = {"epsilon": "1"}
    spec = OutputSpec.from_dict(data)
    return lambda table: apply_output_spec(table, spec, min_group_size=50)


METHODS: dict[str, Callable[[pa.Table], object]] = {
    "plain": _duckdb(PLAIN),
    "plain_distinct": _duckdb(PLAIN_DISTINCT),
    "exact": _privacy(dp=False),
    "dp": _privacy(dp=True),
}


_EXACT_SECONDS: list[float] = []


def _timed_exact(*args: object, **kwargs: object) -> object:
    start = time.perf_counter()
    try:
        return _ORIGINAL_EXACT(*args, **kwargs)
    finally:
        _EXACT_SECONDS.append(time.perf_counter() - start)


_ORIGINAL_EXACT = _aggregate.exact_aggregate
_aggregate.exact_aggregate = _timed_exact  # type: ignore[assignment]


def _child(name: str, repeat: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    assert _TABLE is not None
    times, exact = [], []
    for _ in range(repeat):
        _EXACT_SECONDS.clear()
        start = time.perf_counter()
        METHODS[name](_TABLE)
        times.append(time.perf_counter() - start)
        exact.append(sum(_EXACT_SECONDS))
    best = min(range(repeat), key=lambda i: times[i])
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.put((times[best], times[0], rss, exact[best]))


def measure(name: str, repeat: int) -> tuple[float, float, float, float]:
    """(best seconds, first-run seconds, peak RSS MB, of which exact aggregation) of one
    method in a forked child."""
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(name, repeat, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result  # type: ignore[no-any-return]


def main() -> None:
    global _TABLE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"duckdb {duckdb.__version__}, pyarrow {pa.__version__}, best of {args.repeat}")
    for n in args.sizes:
        start = time.perf_counter()
        _TABLE = make_table(n)
        data_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"\n{n:,} rows (generated in {time.perf_counter() - start:.1f} s; "
            f"process peak RSS with data {data_rss:.0f} MB)"
        )
        base = None
        for name in METHODS:
            best, first, rss, exact = measure(name, args.repeat)
            base = base or best
            split = f"  (exact agg {exact:.3f} s, rest {best - exact:.3f} s)" if exact else ""
            print(
                f"  {name:<15} best {best:7.3f} s  first {first:7.3f} s  "
                f"x{best / base:5.2f} of plain  peak RSS {rss:6.0f} MB{split}"
            )
        _TABLE = None


if __name__ == "__main__":
    main()
