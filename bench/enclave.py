"""Benchmark: one enclave job over brand × publisher tables, step by step, next to the same
join + aggregation in plain DuckDB and plain pandas on the plaintext Parquet, in the same run.

    python bench/enclave.py [--brand 1000000] [--publisher 500000] [--template]

Prints the time of each step of the job (verify, decrypt, run = hand-over to the keyless runner
+ query, privacy, seal, sign), the ratios to the baselines, and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

# this file's name shadows the ``enclave`` package: run from the repository root instead
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from bench import _synth  # noqa: E402

SQL = """SELECT b.uid, p.segment, p.exposed, b.converted, b.spend
FROM crm b JOIN visits p USING (uid)"""
AGG_SQL = """SELECT p.segment, p.exposed, count(DISTINCT b.uid) AS units,
       sum(b.converted) AS conversions, sum(least(greatest(b.spend, 0), 500)) AS spend
FROM read_parquet('{brand}') b JOIN read_parquet('{publisher}') p USING (uid)
GROUP BY ALL"""
OUTPUT = {
    "mode": "aggregate",
    "privacy_unit": "uid",
    "group_by": [
        {"column": "segment", "domain": [f"seg{i}" for i in range(8)]},
        {"column": "exposed", "domain": ["0", "1"]},
    ],
    "measures": [
        {"name": "conversions", "column": "converted", "agg": "sum", "lower": "0", "upper": "1"},
        {"name": "spend", "column": "spend", "agg": "sum", "lower": "0", "upper": "500"},
    ],
    "dp": {"epsilon": "1.0"},
}


def plain_duckdb(brand: Path, publisher: Path) -> float:
    import duckdb

    start = time.perf_counter()
    con = duckdb.connect()
    con.execute(AGG_SQL.format(brand=brand, publisher=publisher)).fetchall()
    con.close()
    return time.perf_counter() - start


def plain_pandas(brand: Path, publisher: Path) -> float:
    import pandas as pd

    start = time.perf_counter()
    b = pd.read_parquet(brand)
    p = pd.read_parquet(publisher)
    j = b.merge(p, on="uid")
    j["spend"] = j["spend"].clip(0, 500)
    j.groupby(["segment", "exposed"]).agg(
        units=("uid", "nunique"), conversions=("converted", "sum"), spend=("spend", "sum")
    )
    return time.perf_counter() - start


def enclave_job(brand: Path, publisher: Path, n_brand: int, n_pub: int) -> tuple[float, dict[str, int], str]:
    from sdk.protocol.dsse import Envelope
    from tests.kit import Room

    root = Path(tempfile.mkdtemp(prefix="sealroom-bench-"))
    try:
        room = Room(root / "room", min_group_size=50, epsilon_budget="100")
        room.upload_file(room.alice, "crm", brand, n_brand)
        room.upload_file(room.bob, "visits", publisher, n_pub)
        bundle = room.bundle(SQL, OUTPUT)
        job = room.job_dir(bundle, room.approvals(bundle))
        start = time.perf_counter()
        doc = room.run(job)
        elapsed = time.perf_counter() - start
        receipt = json.loads(Envelope.from_dict(doc["receipt"]).payload)
        return elapsed, receipt["timings_ms"], f"{doc['status']} {doc['error_code'] or ''}".strip()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--brand", type=int, default=1_000_000)
    parser.add_argument("--publisher", type=int, default=500_000)
    args = parser.parse_args()
    brand, publisher = _synth.tables(args.brand, args.publisher)
    print(f"# enclave job: brand {args.brand:,} rows x publisher {args.publisher:,} rows")
    duck = plain_duckdb(brand, publisher)
    pandas_s = plain_pandas(brand, publisher)
    job_s, timings, status = enclave_job(brand, publisher, args.brand, args.publisher)
    own, children = _synth.peak_rss_mb()
    print(f"plain DuckDB on Parquet   {duck:7.2f} s")
    print(f"plain pandas              {pandas_s:7.2f} s")
    print(f"enclave job ({status})  {job_s:7.2f} s")
    for step in ("verify", "decrypt", "run", "privacy", "seal", "sign"):
        print(f"  {step:<8} {timings.get(step, 0) / 1000:7.2f} s")
    print(f"ratio job / DuckDB        {job_s / duck:7.2f}")
    print(f"ratio job / pandas        {job_s / pandas_s:7.2f}")
    print(f"peak RSS: supervisor+baselines {own:.0f} MB, runner {children:.0f} MB")


if __name__ == "__main__":
    main()
