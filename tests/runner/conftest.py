"""Fixtures of the runner tests: canary-planted input tables and a helper that runs the real
runner subprocess and checks the standing invariant (no canary in any error)."""

from __future__ import annotations

import hashlib
import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from enclave.runner import RunnerError, RunnerLimits, run_query

CANARY = "CANARY-7f3a9c"
MIB = 1 << 20

# Small limits: resource attacks end quickly. DuckDB needs ~0.5 GiB of address space at start.
LIMITS = RunnerLimits(
    cpu_seconds=2,
    wall_seconds=6,
    memory_bytes=768 * MIB,
    max_output_bytes=8 * MIB,
    max_output_rows=100_000,
    threads=1,
)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def people_table() -> pa.Table:
    """60 people; row 7 carries the canary in every string column."""
    n = 60
    emails = [f"user{i}@example.com" for i in range(n)]
    emails[7] = f"{CANARY}@example.com"
    return pa.table({
        "id": [sha(e) for e in emails],
        "email": emails,
        "ssn": [CANARY if i == 7 else f"000-00-{i:04d}" for i in range(n)],
        "age": [18 + (i * 7) % 60 for i in range(n)],
        "country": [CANARY if i == 7 else ("FR", "DE", "US")[i % 3] for i in range(n)],
        "signup": [CANARY if i == 7 else f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}"
                   for i in range(n)],
    })


def orders_table() -> pa.Table:
    """Orders of every second person (ids 0, 2, 4...), two each; a canary note on one."""
    ids = [sha(f"user{i}@example.com") for i in range(0, 60, 2)] * 2
    ids[3] = sha(f"{CANARY}@example.com")
    return pa.table({
        "id": ids,
        "total": [float(10 + i) for i in range(len(ids))],
        "note": [CANARY if i == 5 else "ok" for i in range(len(ids))],
    })


@pytest.fixture(scope="session")
def tables() -> dict[str, bytes]:
    return {"people": parquet_bytes(people_table()), "orders": parquet_bytes(orders_table())}


def outcome(kind: str, code: str, tables: dict[str, bytes], params: dict | None = None,
            limits: RunnerLimits = LIMITS) -> tuple[str, str]:
    """Run the real runner; return ("OK", "") or (error code, message), asserting no canary."""
    try:
        result = run_query(kind, code, tables, params or {}, limits)  # type: ignore[arg-type]
    except RunnerError as exc:
        assert CANARY not in exc.code
        assert CANARY not in exc.message
        assert CANARY not in str(exc)
        assert exc.__cause__ is None or CANARY not in str(exc.__cause__)
        return exc.code, exc.message
    assert isinstance(result, pa.Table)
    return "OK", ""
