"""What a ``sealroom`` invocation costs before it does anything: start-up time and the modules a
party's commands import (issue 15: operator commands are discovered through entry points on every
call, and the party side must stay light).

    python bench/cli_startup.py [--repeat N]

Prints, for each case, the median wall time of a fresh interpreter as a ratio to the baseline
``python -c pass`` measured in the same run, and the number of modules imported (with whether
pandas, DuckDB, OpenDP or FastAPI were among them).
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
HEAVY = ("pandas", "duckdb", "opendp", "fastapi", "pyarrow", "docker")

PROBE = """
import io, json, sys
from sdk.cli import run_command
out, err = io.StringIO(), io.StringIO()
try:
    run_command({argv!r}, out=out, err=err)
except SystemExit:
    pass
mods = sorted(sys.modules)
print(json.dumps({{"modules": len(mods), "heavy": [m for m in {heavy!r} if m in sys.modules]}}))
"""

CASES: list[tuple[str, list[str]]] = [
    ("sealroom --help (lists plugin commands)", ["--help"]),
    ("sealroom keys show (party command)", ["keys", "show", "/nonexistent.pub"]),
    ("sealroom receipt verify (auditor, offline)",
     ["receipt", "verify", "/nonexistent.json", "--manifest", "/nonexistent.json"]),
    ("sealroom demo --help (loads the operator plugin)", ["demo", "--help"]),
]


def timed(argv: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, capture_output=True, check=False)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    base = timed([sys.executable, "-c", "pass"], args.repeat)
    print(f"baseline: python -c pass, median {base * 1000:.0f} ms over {args.repeat} runs")
    print(f"{'case':52} {'x baseline':>10} {'modules':>8}  heavy imports")
    for label, argv in CASES:
        code = PROBE.format(argv=argv, heavy=HEAVY)
        median = timed([sys.executable, "-c", code], args.repeat)
        probe = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                               text=True, check=False)
        info = json.loads(probe.stdout.strip().splitlines()[-1])
        heavy = ", ".join(info["heavy"]) or "none"
        print(f"{label:52} {median / base:10.1f} {info['modules']:8d}  {heavy}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
