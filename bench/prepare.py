"""Benchmark: preparing a dataset for sealing (read CSV, check schema, normalise and hash the
identifier) with the seal-time identifier validation and without it, in the same run.

    python bench/prepare.py [--rows 1000000] [--phone-rows 100000] [--rounds 3]

Emails are validated in DuckDB (vectorised); phone numbers are parsed one at a time by
``phonenumbers`` in Python, so they are measured on fewer rows. Prints rows/s for each (best
round) and the ratio validated / unvalidated.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sdk.party.datasets import prepare_dataset
from sdk.protocol.models import Dataset


def _dataset(kind: str) -> Dataset:
    return Dataset.from_dict(
        {
            "name": "d",
            "owner": "o",
            "schema": [{"name": "id", "type": "string"}, {"name": "n", "type": "int"}],
            "id_column": "id",
            "id_kind": kind,
            "min_group_size": 5,
            "epsilon_budget": "1",
        }
    )


def _write(path: Path, kind: str, rows: int) -> None:
    with open(path, "w") as f:
        f.write("id,n\n")
        for i in range(rows):
            if kind == "email":
                value = f" First.Last{i}@Example{i % 97}.com " if i % 50 else "not-an-email"
            else:
                value = f"+33 6 {i // 10000 % 100:02d} {i // 100 % 100:02d} {i % 100:02d} 12"
            f.write(f"{value},{i}\n")


def _best(src: Path, kind: str, work: Path, validate: bool, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        prepare_dataset(src, _dataset(kind), work, validate=validate)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--phone-rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
        work = Path(tmp)
        for kind, rows in (("email", args.rows), ("phone", args.phone_rows)):
            src = work / f"{kind}.csv"
            _write(src, kind, rows)
            off = _best(src, kind, work, False, args.rounds)
            on = _best(src, kind, work, True, args.rounds)
            print(
                f"{kind:>6} {rows:>9} rows: without validation {rows / off:>12,.0f} rows/s, "
                f"with {rows / on:>12,.0f} rows/s (x{off / on:.2f})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
