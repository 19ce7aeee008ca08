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


def run_template(bundle: Any, tables: dict[str, pa.Table], *, min_group_size: int = 50) -> Any:
    """Run a template's plan over ``tables`` as the worker does (compiled with the exact
    fixed-point mapping, released by ``release_groups``); roles are taken from what the plan
    reads and id columns from the template's parameters (or ``id``)."""
    from enclave.privacy.aggregate import measure_fixed_points, release_groups
    from sdk.protocol.plan import DatasetColumns, columns_of, compile_duckdb

    plan = bundle.plan
    roles: dict[str, dict[str, str]] = {name: {} for name in plan.inputs}
    for g in plan.group_by:
        for c in columns_of(g.expr):
            roles[c.dataset][c.column] = "dimension"
    for m in plan.measures:
        for c in columns_of(m.expr) if m.expr is not None else []:
            roles[c.dataset][c.column] = "measure"
    if plan.where is not None:
        for c in columns_of(plan.where):
            roles[c.dataset].setdefault(c.column, "filter")
    columns = {}
    for name in plan.inputs:
        id_column = next((c for c in tables[name].column_names
                          if c not in roles[name]), "id")
        columns[name] = DatasetColumns(id_column, "sha256", roles[name])
    fixed = {m.name: fp for m, fp in zip(bundle.output.measures,
                                           measure_fixed_points(bundle.output), strict=True)}
    compiled = compile_duckdb(plan, columns, salt="t",
                              measure_sql=lambda m, v: fixed[m.name].sql_of(v))
    groups = run_sql(compiled.sql, tables)
    return release_groups(groups, bundle.output, min_group_size=min_group_size,
                          contribution_bound=plan.contribution_bound)
