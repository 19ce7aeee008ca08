"""Benchmark: the full enclave job with the incrementality template (verify, unseal, join,
aggregate with DP, seal, sign), next to the same join + aggregation in plain DuckDB on the
plaintext Parquet and in plain pandas, in the same run.

    python bench/query.py [--sizes 1000000x500000,10000000x5000000]

Goal (issue 4): the enclave job ≤ 2× plain DuckDB and faster than plain pandas.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from bench import _synth  # noqa: E402

DUCK_SQL = """WITH e AS (SELECT uid, max(exposed) AS exposed FROM read_parquet('{publisher}') GROUP BY 1),
c AS (SELECT uid, max(converted) AS converted FROM read_parquet('{brand}') GROUP BY 1)
SELECT e.exposed, count(*) AS users, sum(c.converted) AS conversions
FROM e JOIN c USING (uid) GROUP BY 1"""

PANDAS = """
import pandas as pd, sys
b = pd.read_parquet(sys.argv[1], columns=["uid", "converted"])
p = pd.read_parquet(sys.argv[2], columns=["uid", "exposed"])
e = p.groupby("uid", as_index=False)["exposed"].max()
c = b.groupby("uid", as_index=False)["converted"].max()
j = e.merge(c, on="uid")
j.groupby("exposed").agg(users=("uid", "size"), conversions=("converted", "sum"))
"""

DUCK = """
import duckdb, sys
duckdb.connect().execute(sys.argv[1]).fetchall()
"""


def timed_child(code: str, *args: str) -> tuple[float, float]:
    """Run a baseline in its own process: (seconds, peak RSS MB)."""
    wrapper = (
        "import time, resource, sys\nstart = time.perf_counter()\n"
        + code
        + "\nprint(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    out = subprocess.run(
        [sys.executable, "-c", wrapper, *args], capture_output=True, text=True, check=True
    )
    seconds, rss = out.stdout.split()[-2:]
    return float(seconds), float(rss)


JOB = """
import json, sys, time, resource
from pathlib import Path
from tests.kit import Room
from sdk.protocol.templates import build
from sdk.protocol.dsse import Envelope
brand, publisher, nb, npub, root = sys.argv[1:6]
room = Room(Path(root), min_group_size=50, epsilon_budget="100")
room.upload_file(room.alice, "crm", Path(brand), int(nb))
room.upload_file(room.bob, "visits", Path(publisher), int(npub))
params = {"exposure": "visits", "exposure_id": "uid", "conversions": "crm",
          "conversion_id": "uid", "epsilon": "1"}
t = build("incrementality", params)
bundle = room.bundle(t.code, t.output.to_dict(), kind="template", template="incrementality", params=params)
job = room.job_dir(bundle, room.approvals(bundle))
start = time.perf_counter()
doc = room.run(job)
elapsed = time.perf_counter() - start
receipt = json.loads(Envelope.from_dict(doc["receipt"]).payload)
print(json.dumps({"seconds": elapsed, "status": doc["status"], "error": doc["error_code"],
    "timings": receipt["timings_ms"],
    "rss_supervisor": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "rss_runner": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def enclave_job(brand: Path, publisher: Path, nb: int, npub: int) -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix="sealroom-bench-"))
    try:
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                JOB,
                str(brand),
                str(publisher),
                str(nb),
                str(npub),
                str(root / "room"),
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=_HERE.parent,
        )
        result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000000x500000,10000000x5000000")
    args = parser.parse_args()
    for size in args.sizes.split(","):
        nb, npub = (int(x) for x in size.split("x"))
        brand, publisher = _synth.tables(nb, npub)
        duck_s, duck_rss = timed_child(DUCK, DUCK_SQL.format(brand=brand, publisher=publisher))
        pandas_s, pandas_rss = timed_child(PANDAS, str(brand), str(publisher))
        job = enclave_job(brand, publisher, nb, npub)
        job_s = float(job["seconds"])  # type: ignore[arg-type]
        print(f"# incrementality, brand {nb:,} x publisher {npub:,}")
        print(f"plain DuckDB on Parquet  {duck_s:7.2f} s  peak RSS {duck_rss:7.0f} MB")
        print(f"plain pandas             {pandas_s:7.2f} s  peak RSS {pandas_rss:7.0f} MB")
        print(
            f"enclave job ({job['status']})  {job_s:7.2f} s  peak RSS supervisor {job['rss_supervisor']:.0f} MB, runner {job['rss_runner']:.0f} MB"
        )
        timings = job["timings"]
        assert isinstance(timings, dict)
        for step in ("verify", "decrypt", "run", "privacy", "seal", "sign"):
            print(f"  {step:<8} {timings.get(step, 0) / 1000:7.2f} s")
        print(f"ratio job / DuckDB       {job_s / duck_s:7.2f}   (goal <= 2)")
        print(f"ratio job / pandas       {job_s / pandas_s:7.2f}   (goal < 1)")


if __name__ == "__main__":
    main()
