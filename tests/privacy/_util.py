"""Helpers for the privacy tests: synthetic ids, a stand-in for the runner, spec builders."""

from __future__ import annotations

import hashlib
from typing import Any

import duckdb
import pyarrow as pa

from sdk.protocol.spec import OutputSpec


def hexid(i: int) -> str:
    """A 64-char hex identifier, as the SDK produces (SHA-256 of a normalised value)."""
    return hashlib.sha256(f"user-{i}@example.com".encode()).hexdigest()


def run_sql(code: str, tables: dict[str, pa.Table]) -> pa.Table:
    """Execute template SQL over tables named as datasets (what the runner does)."""
    con = duckdb.connect()
    try:
        for name, table in tables.items():
            con.register(name, table)
        return con.sql(code).to_arrow_table()
    finally:
        con.close()


def spec(**fields: Any) -> OutputSpec:
    """An aggregate OutputSpec through the validating parser (the signed form)."""
    data: dict[str, Any] = {"mode": "aggregate", "privacy_unit": "uid"}
    data.update(fields)
    return OutputSpec.from_dict(data)


def rows(**columns: list[Any]) -> pa.Table:
    return pa.table(columns)
