"""Benchmark: the plan path's query step (issue 13) next to plain DuckDB on the same Parquet.

    python bench/query.py [--sizes 1M,10M] [--slow] [--repeat 3] [--no-diagnostics]

The bundle is a plan bundle (``tests.kit.Room.plan_bundle``): ``crm`` (brand) inner-joined
with ``visits`` (publisher) on the person id, grouped by ``visits.segment`` (a public domain
of 8 values), a distinct-person count and a sum of ``crm.spend`` clamped to [0, 500], with DP
(epsilon 1). For each size, each in its own process (so every peak RSS is its own):

* **plain DuckDB**: ``SELECT segment, count(DISTINCT uid), sum(clamped spend) ... JOIN ...
  GROUP BY segment`` over the plaintext Parquet files: the baseline;
* **plan path**: the worker's query step over the decrypted inputs (the Parquet bytes in
  memory, as the supervisor holds them after decryption): ``enclave.planrun.run_plan`` (a fresh
  keyless runner; the compiled query with bounding, fixed-point clamping and aggregation fused
  in) then ``enclave.privacy.release_groups`` (suppression and DP noise);
* diagnostics (``--no-diagnostics`` skips them): in the plan path's process, the runner once
  more over the same inputs with ``SELECT 1`` (its spawn and the hand-over, with no query); in
  one more process, the same compiled plan SQL in plain DuckDB over the Parquet files (the
  query's own cost) and, for a worker that still pipes its inputs to the runner (before
  ``enclave/memfile.py``), the decoding of the Parquet bytes to Arrow (all columns, as that
  runner does) and the plan SQL over those Arrow tables.

The inputs are held as the worker holds them after decryption: in memory-backed files
(``enclave.memfile.MemFile``, read in place by the runner) when the worker has them, else as
read-only buffers streamed to the runner.

Sizes: ``1M`` is 1,000,000 brand x 500,000 publisher rows, ``10M`` 10M x 5M, ``100M`` (only
with ``--slow``) 100M x 50M; ``NxM`` gives the rows explicitly. Goal (issue 13): the plan path
<= 1.5x plain DuckDB at 1M and 10M. Absolute times on a shared 2-core VM are noisy: read the
ratios.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
_HERE = ROOT / "bench"
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(ROOT))

from bench._synth import tables  # noqa: E402

NAMED_SIZES = {
    "100k": (100_000, 50_000),
    "1M": (1_000_000, 500_000),
    "10M": (10_000_000, 5_000_000),
    "100M": (100_000_000, 50_000_000),
}
SLOW_SIZE = "100M"
GOAL = 1.5
SEGMENTS = [f"seg{i}" for i in range(8)]
EPSILON = "1"

PLAN: dict[str, Any] = {
    "inputs": ["crm", "visits"],
    "joins": [{"dataset": "visits", "kind": "inner"}],
    "where": None,
    "group_by": [{"name": "segment", "expr": {"col": ["visits", "segment"]},
                  "domain": SEGMENTS}],
    "measures": [
        {"name": "people", "agg": "count", "expr": None, "lower": "0", "upper": "0"},
        {"name": "spend", "agg": "sum", "expr": {"col": ["crm", "spend"]},
         "lower": "0", "upper": "500"},
    ],
    "max_contributions": 1,
}
"""The plan of the benchmark's bundle, over the datasets of ``tests.kit.Room``."""

PLAIN_SQL = ("SELECT v.segment, count(DISTINCT c.uid) AS people, "
             "sum(least(greatest(c.spend, 0), 500)) AS spend "
             "FROM crm c JOIN visits v ON c.uid = v.uid GROUP BY v.segment")
"""The same join and group-by written by hand, without the platform's work."""

DUCK_CHILD = """
import duckdb, json, resource, sys, time
started = time.perf_counter()
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
con.execute(f"CREATE VIEW crm AS SELECT * FROM read_parquet('{sys.argv[2]}')")
con.execute(f"CREATE VIEW visits AS SELECT * FROM read_parquet('{sys.argv[3]}')")
rows = con.execute(sys.argv[1]).fetchall()
print(json.dumps({"seconds": time.perf_counter() - started, "rows": len(rows),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

DIAG_CHILD = """
import duckdb, json, sys, time
from pathlib import Path
import pyarrow as pa
import pyarrow.parquet as pq
sql, brand, publisher = sys.argv[1:4]  # argv[4]: "1" for the Arrow hand-over part
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
con.execute(f"CREATE VIEW crm AS SELECT * FROM read_parquet('{brand}')")
con.execute(f"CREATE VIEW visits AS SELECT * FROM read_parquet('{publisher}')")
t0 = time.perf_counter()
con.execute(sql).fetchall()
t1 = time.perf_counter()
con.close()
if sys.argv[4] == "0":  # the runner reads the Parquet files in place: no Arrow hand-over
    print(json.dumps({"parquet": t1 - t0}))
    raise SystemExit(0)
data = {"crm": Path(brand).read_bytes(), "visits": Path(publisher).read_bytes()}
t1b = time.perf_counter()
# as enclave.runner.inputs.decode_parquet does: every column, from the bytes in memory
crm, visits = (pq.ParquetFile(pa.BufferReader(data[n])).read(use_threads=True)
               for n in ("crm", "visits"))
t2 = time.perf_counter()
con = duckdb.connect()
con.register("crm", crm)
con.register("visits", visits)
con.execute(sql).fetchall()
t3 = time.perf_counter()
print(json.dumps({"parquet": t1 - t0, "decode": t2 - t1b, "arrow": t3 - t2}))
"""

PLAN_CHILD = """
import json, resource, sys, time
from pathlib import Path
import enclave.__main__  # noqa: F401 - as in the worker: pandas is never loaded
from enclave.planrun import compile_for_worker, run_plan
from enclave.privacy import release_groups
from sdk.protocol.clock import utcnow
from sdk.protocol.plan import Plan
from sdk.protocol.policy import effective_min_group_size
from sdk.protocol.verify import verify_bundle
from tests.kit import Room
brand, publisher, nb, npub, root, plan_json, epsilon, diagnostics, mode = sys.argv[1:10]
room = Room(Path(root), min_group_size=50, epsilon_budget="100")
plan = Plan.from_dict(json.loads(plan_json))
envelope = room.plan_bundle(plan, dp={"epsilon": epsilon})
bundle = verify_bundle(envelope, room.manifest, room.manifest_digest, now=utcnow())
k_min = effective_min_group_size(room.manifest, bundle)
rss_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
paths = {"crm": Path(brand), "visits": Path(publisher)}
counts = {"crm": int(nb), "visits": int(npub)}
try:  # the inputs as the worker holds them after decryption (enclave.job.Job._decrypt)
    from enclave.memfile import MemFile
except ImportError:  # before the memfd hand-over: one read-only buffer per input
    MemFile = None
files = None
if MemFile is None:
    tables = {n: memoryview(p.read_bytes()).toreadonly() for n, p in paths.items()}
    extra = ()
else:
    files = {}
    for n, p in paths.items():
        files[n] = MemFile(p.stat().st_size)
        with open(p, "rb") as handle:
            offset = 0
            while chunk := handle.read(1 << 24):
                files[n][offset:offset + len(chunk)] = chunk
                offset += len(chunk)
    tables = {n: f.view() for n, f in files.items()}
    extra = (files,)
# the runner started ahead, as the worker starts it (with the process, or in a container
# waiting for its job): its engines are loaded when the inputs arrive
from enclave.resources import runner_limits
from enclave.runner.client import Runner
ahead = Runner(runner_limits(0), prewarm=True)
time.sleep(1.5)
ahead.begin(runner_limits(sum(len(t) for t in tables.values())).memory_bytes)
names = frozenset(paths)
options = {"bounded": {}, "bounded-repeat": {"match_stats": False},
           "first": {"one_row": names, "check_one_row": sorted(names)},
           "repeat": {"one_row": names, "match_stats": False}}[mode]
t0 = time.perf_counter()
groups = run_plan(bundle, room.manifest, tables, counts, *extra, runner=ahead, **options)
t1 = time.perf_counter()
ahead.close()
result = release_groups(groups, bundle.output, min_group_size=k_min,
                        contribution_bound=plan.contribution_bound)
t2 = time.perf_counter()
rss_runner = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
handover = None
if diagnostics == "1":  # the same runner over the same tables with a query that reads nothing
    from enclave.resources import runner_limits
    from enclave.runner import run_query
    limits = runner_limits(sum(len(t) for t in tables.values()))
    t3 = time.perf_counter()
    if files is None:
        run_query("sql", "SELECT 1 AS x", tables, {}, limits)
    else:
        run_query("plan", "SELECT 1 AS x", tables, {}, limits, files=files)
    handover = time.perf_counter() - t3
print(json.dumps({
    "run": t1 - t0, "release": t2 - t1, "handover": handover, "groups": groups.num_rows, "mode": mode,
    "memfd": files is not None,
    "released": result.table.num_rows, "sql": compile_for_worker(bundle, room.manifest).sql,
    "rss_supervisor_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "rss_runner_mb": rss_runner, "rss_provision_mb": rss_before}))
"""


def parse_sizes(text: str, slow: bool = False) -> list[tuple[str, int, int]]:
    """``1M,10M`` or ``1000000x500000``: (label, brand rows, publisher rows) each; ``slow``
    appends 100M x 50M."""
    out: list[tuple[str, int, int]] = []
    for item in [s.strip() for s in text.split(",") if s.strip()]:
        if item in NAMED_SIZES:
            nb, npub = NAMED_SIZES[item]
        else:
            nb, npub = (int(x) for x in item.lower().split("x"))
        out.append((f"{nb:,} x {npub:,}", nb, npub))
    if slow and not any((nb, npub) == NAMED_SIZES[SLOW_SIZE] for _, nb, npub in out):
        nb, npub = NAMED_SIZES[SLOW_SIZE]
        out.append((f"{nb:,} x {npub:,}", nb, npub))
    return out


def child(code: str, *args: str, timeout: float | None = None) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter from the repository root; it prints one JSON line."""
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          check=False, cwd=ROOT, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"child failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    doc: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return doc


def plain_duckdb(brand: Path, publisher: Path, sql: str = PLAIN_SQL) -> tuple[float, float]:
    """(seconds, peak RSS MB) of plain DuckDB running ``sql`` over the Parquet files, in its
    own process."""
    doc = child(DUCK_CHILD, sql, str(brand), str(publisher))
    return float(doc["seconds"]), float(doc["rss_mb"])


MODES = {
    "repeat": "plan path, repeat run (one row per person, checked before)",
    "first": "plan path, first run (one-row check + match rate)",
    "bounded": "plan path, bounded, first run (no one-row statement)",
    "bounded-repeat": "plan path, bounded, repeat run (match rate known)",
}
"""The query step's cases: inputs whose owners signed one row per person, checked by an
earlier run (the log says so) and the match rate known; the first run over them (the check,
then the plan with the match-rate pass); inputs without that statement (per-person bounding
before and after the join), on a first run over them (with the match-rate pass) and on a
repeat run (the log holds the match rate)."""


def plan_step(brand: Path, publisher: Path, nb: int, npub: int,
              diagnostics: bool = False, mode: str = "repeat") -> dict[str, Any]:
    """The plan path's query step (``run_plan`` + ``release_groups``, the runner started
    ahead as the worker starts it) in its own process, for ``mode`` of :data:`MODES`; with
    ``diagnostics``, then a fresh runner over the same tables with a query that reads nothing
    (spawn, hand-over and decoding alone)."""
    root = Path(tempfile.mkdtemp(prefix="sealroom-bench-"))
    try:
        return child(PLAN_CHILD, str(brand), str(publisher), str(nb), str(npub),
                     str(root / "room"), json.dumps(PLAN), EPSILON, "1" if diagnostics else "0",
                     mode)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1M,10M", help="1M, 10M, 100M or NxM, comma-separated")
    parser.add_argument("--slow", action="store_true", help="also 100M x 50M (very long; once)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds per size (best of; the slow size runs once)")
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"query-step cases, comma-separated: {', '.join(MODES)}")
    parser.add_argument("--no-diagnostics", action="store_true",
                        help="skip the diagnostics (always skipped at the slow size)")
    args = parser.parse_args()
    print("plan path query step (run_plan + release_groups over decrypted inputs) vs plain "
          "DuckDB join + group-by on the same Parquet; each in its own process")
    print(f"plan: crm JOIN visits (inner) on the id, GROUP BY segment (public domain of "
          f"{len(SEGMENTS)}), count + sum(spend clamped [0, 500]), DP epsilon {EPSILON}; "
          f"best of {args.repeat} interleaved rounds (a shared machine: contention only adds)")
    verdicts = []
    for label, nb, npub in parse_sizes(args.sizes, args.slow):
        brand, publisher = tables(nb, npub)
        slow = (nb, npub) == NAMED_SIZES[SLOW_SIZE]
        diagnose = not args.no_diagnostics and not slow
        duck: list[tuple[float, float]] = []
        modes = {m: MODES[m] for m in args.modes.split(",") if m in MODES}
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
        diags: list[dict[str, float]] = []
        for i in range(1 if slow else max(1, args.repeat)):
            duck.append(plain_duckdb(brand, publisher))
            for mode in modes:
                runs[mode].append(plan_step(brand, publisher, nb, npub,
                                            diagnose and mode == "bounded" and i == 0, mode))
        if diagnose and "bounded" in modes:
            diags.append(child(DIAG_CHILD, str(runs["bounded"][0]["sql"]), str(brand),
                               str(publisher), "0"))
        base = min(d[0] for d in duck)
        base_rss = max(d[1] for d in duck)
        first = next(iter(runs.values()))[0]
        print(f"# crm {label} rows (join: {first['groups']} candidate groups, "
              f"{first['released']} released)")
        print(f"  {'':<58} {'seconds':>8} {'x plain':>8} {'peak RSS':>18}")
        print(f"  {'plain DuckDB on Parquet':<58} {base:8.2f} {1:8.2f} {base_rss:11.0f} MB")
        totals: dict[str, float] = {}
        for mode, title in modes.items():
            done = runs[mode]
            total = min(float(r["run"]) + float(r["release"]) for r in done)
            totals[mode] = total
            print(f"  {title + ': run_plan + release':<58} {total:8.2f} {total / base:8.2f} "
                  f"{max(float(r['rss_runner_mb']) for r in done):11.0f} MB runner, "
                  f"{max(float(r['rss_supervisor_mb']) for r in done):.0f} MB supervisor")
            print(f"  {'  of which release_groups (DP)':<58} "
                  f"{min(float(r['release']) for r in done):8.2f}")
        if diags:
            value = min(d["parquet"] for d in diags)
            print(f"  {'diag: the bounded first-run plan SQL, DuckDB on Parquet':<58} {value:8.2f} "
                  f"{value / base:8.2f}")
            spawn = float(runs["bounded"][0]["handover"])
            print(f"  {'diag: a fresh runner with SELECT 1 (spawn + hand-over)':<58} "
                  f"{spawn:8.2f} {spawn / base:8.2f}   (the worker starts its runner ahead)")
        if len(duck) > 1:
            print(f"  every round, plain / {' / '.join(modes)} s: " + ", ".join(
                f"{d[0]:.2f} / " + " / ".join(
                    f"{float(runs[m][i]['run']) + float(runs[m][i]['release']):.2f}"
                    for m in modes) for i, d in enumerate(duck)))
        verdicts.append(f"{label}: " + ", ".join(
            f"{m} {t / base:.2f}x" + (f" ({'met' if t / base <= GOAL else 'NOT met'})"
                                      if m == "repeat" else "") for m, t in totals.items()))
    print(f"goal plan path <= {GOAL}x plain DuckDB: " + "; ".join(verdicts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
