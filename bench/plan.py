"""The plan path's fused query vs plain DuckDB running the same join and group-by (issue 13).

    python bench/plan.py [--sizes 1000000x500000,10000000x5000000] [--repeat 3]

For each size, on the same Parquet files (bench/_synth.py): plain DuckDB's
``SELECT segment, count(DISTINCT uid), sum(spend) ... JOIN ... GROUP BY segment`` is the
baseline; the plan compiled by ``sdk.protocol.plan.compile_duckdb`` adds the platform's work
(per-person bounding after the join, clamping, TRY around row expressions). Each query runs in a
fresh interpreter (median wall time of ``--repeat`` runs); the ratio and the child's peak RSS
are printed. The plan is not yet wired into the worker: this measures the query the worker will
run, without decryption or release.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._synth import tables  # noqa: E402
from sdk.protocol.plan import DatasetColumns, Plan, compile_duckdb  # noqa: E402

CHILD = """
import duckdb, json, resource, sys, time
con = duckdb.connect(config={"enable_external_access": True})
con.execute("SET threads TO 2")
con.execute("SET enable_progress_bar = false")
con.execute(f"CREATE VIEW brand AS SELECT * FROM read_parquet('{sys.argv[2]}')")
con.execute(f"CREATE VIEW publisher AS SELECT * FROM read_parquet('{sys.argv[3]}')")
started = time.perf_counter()
rows = con.execute(sys.argv[1]).fetchall()
print(json.dumps({"seconds": time.perf_counter() - started, "rows": len(rows),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

PLAIN = ("SELECT p.segment, count(DISTINCT b.uid) AS people, sum(b.spend) AS spend "
         "FROM brand b JOIN publisher p ON b.uid = p.uid GROUP BY p.segment")

DATASETS = {
    "brand": DatasetColumns("uid", "sha256", {"spend": "measure", "converted": "dimension"}),
    "publisher": DatasetColumns("uid", "sha256", {"segment": "dimension",
                                                  "exposed": "dimension"}),
}
PLAN = Plan.from_dict({
    "inputs": ["brand", "publisher"], "joins": [{"dataset": "publisher", "kind": "inner"}],
    "where": None,
    "group_by": [{"name": "segment", "expr": {"col": ["publisher", "segment"]}, "domain": None}],
    "measures": [{"name": "people", "agg": "count", "expr": None, "lower": "0", "upper": "0"},
                 {"name": "spend", "agg": "sum", "expr": {"col": ["brand", "spend"]},
                  "lower": "0", "upper": "500"}],
    "max_contributions": 1,
})


def run(sql: str, brand: Path, publisher: Path, repeat: int) -> tuple[float, float]:
    seconds, rss = [], 0.0
    for _ in range(repeat):
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", CHILD, sql, str(brand), str(publisher)],
                             capture_output=True, text=True, check=True)
        info = json.loads(out.stdout.strip().splitlines()[-1])
        seconds.append(info["seconds"] if info["seconds"] else time.perf_counter() - started)
        rss = max(rss, info["rss_mb"])
    return statistics.median(seconds), rss


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000000x500000,10000000x5000000")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    compiled = compile_duckdb(PLAN, DATASETS, salt="bench").sql
    print("plan path (compiled plan query) vs plain DuckDB join + group-by, same Parquet")
    print(f"{'size':>22} {'plain s':>8} {'plan s':>8} {'ratio':>6} {'plain MB':>9} {'plan MB':>8}")
    for size in args.sizes.split(","):
        nb, npub = (int(x) for x in size.split("x"))
        brand, publisher = tables(nb, npub)
        base, base_rss = run(PLAIN, brand, publisher, args.repeat)
        plan, plan_rss = run(compiled, brand, publisher, args.repeat)
        print(f"{size:>22} {base:8.2f} {plan:8.2f} {plan / base:6.2f} {base_rss:9.0f} "
              f"{plan_rss:8.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
