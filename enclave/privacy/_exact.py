"""Exact, platform-side aggregation of a row-level table in DuckDB (no noise here).

What this module guarantees, whatever the query code returned:

- rows whose privacy unit is null are dropped (they cannot be attributed to a unit);
- each unit keeps at most ``max_contributions`` rows, chosen deterministically: the rows of a
  unit are ordered by DuckDB's ``hash`` of their (group, fixed-point measure) values, ties broken
  by the values themselves, and the first ``k`` are kept. The choice depends only on that unit's
  own rows;
- each measure is mapped to a fixed-point integer in [round(L/q), round(U/q)]: nulls and NaN are
  imputed with the bound value nearest to zero, then the value is clamped to [L, U] (so +/-inf
  and 1e308 land on a bound), scaled by 1/q, rounded and clamped again as an integer;
- groups count DISTINCT units (a unit with several kept rows in a group counts once); sums add
  the kept fixed-point values exactly (DuckDB HUGEINT), so there is no float-sum error.

Speed: a unit with a single row needs no bounding, so the (usually few) units with several rows
are found first from a sort of 64-bit hashes of the unit column (a hash seen once is a unit seen
once), and only their rows go through the window function; both parts are added up per group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa

from enclave.privacy.fixedpoint import SIGNIFICANT_DIGITS, FixedPoint
from sdk.errors import PrivacyError, ResourceError
from sdk.protocol.plan import quote

GroupKeyValue = tuple[str | None, ...]
__all__ = ["SIGNIFICANT_DIGITS", "ExactAggregate", "FixedPoint", "GroupKeyValue",
           "exact_aggregate"]


@dataclass(frozen=True)
class ExactAggregate:
    """Per group key (group values cast to VARCHAR): distinct units and fixed-point sums."""

    groups: dict[GroupKeyValue, tuple[int, tuple[int, ...]]]


def _check_measure_type(table: pa.Table, column: str) -> None:
    t = table.schema.field(column).type
    ok = (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_decimal(t)
        or pa.types.is_boolean(t)
        or pa.types.is_null(t)
    )
    if not ok:
        raise PrivacyError(f"measure column {column!r} is not numeric")


def _native_groupable(t: pa.DataType) -> bool:
    """Types whose cast to VARCHAR is injective, so grouping before the cast is the same as
    grouping after it (and cheaper); other types are cast row by row first."""
    return bool(
        pa.types.is_integer(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_boolean(t)
        or pa.types.is_date(t)
        or pa.types.is_decimal(t)
    )


def _multi_row_buckets(con: duckdb.DuckDBPyConnection, unit: str) -> pa.Table | None:
    """32-bit hash buckets of the unit column holding more than one row (None if none).

    Every unit with several rows falls in such a bucket (equal values hash alike); a bucket may
    also hold distinct single-row units that collide, which only sends them through the exact
    bounding path for nothing.
    """
    got = con.sql(f"SELECT {_bucket(unit)} AS h FROM t WHERE {quote(unit)} IS NOT NULL")  # noqa: S608
    hashes = got.to_arrow_table().column("h").to_numpy()
    if len(hashes) < 2:
        return None
    ordered = np.sort(hashes)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    if repeated.size == 0:
        return None
    return pa.table({"h": pa.array(np.unique(repeated), type=pa.uint32())})


def _bucket(unit: str) -> str:
    return f"CAST(hash({quote(unit)}) & 4294967295 AS UINTEGER)"


def exact_aggregate(
    table: pa.Table,
    *,
    unit: str,
    group_columns: Sequence[str],
    measures: Sequence[tuple[str, FixedPoint]],
    max_contributions: int,
    domains: Sequence[tuple[str, ...] | None],
    max_exact_groups: int,
) -> ExactAggregate:
    """Bound, clamp and aggregate ``table`` exactly (see the module docstring).

    Groups whose value in a column with a declared domain is outside that domain (or null) are
    dropped. Raises ``PrivacyError`` for a non-numeric measure column and ``ResourceError`` when
    more than ``max_exact_groups`` groups remain.

    Method: one aggregate over all rows as if every unit had one row, corrected for the units
    that have several: their rows' raw counts and sums are subtracted and their bounded,
    per-(unit, group) deduplicated counts and sums added back. All in exact integers.
    """
    for column, _ in measures:
        _check_measure_type(table, column)
    con = duckdb.connect(config={"enable_external_access": False})
    try:
        con.register("t", table)
        gs = [f"g{i}" for i in range(len(group_columns))]
        ms = [f"m{i}" for i in range(len(measures))]
        select = [f"{quote(unit)} AS u"]
        for c, g in zip(group_columns, gs, strict=True):
            native = _native_groupable(table.schema.field(c).type)
            select.append(f"{quote(c)} AS {g}" if native else f"CAST({quote(c)} AS VARCHAR) AS {g}")
        select += [
            fp.sql(c, table.schema.field(c).type) + f" AS {m}"
            for (c, fp), m in zip(measures, ms, strict=True)
        ]
        projection = ", ".join(select)
        not_null = f"{quote(unit)} IS NOT NULL"
        con.sql(f"CREATE TEMP VIEW src AS SELECT {projection} FROM t WHERE {not_null}")  # noqa: S608
        group_by = f"GROUP BY {', '.join(gs)}" if gs else ""
        gsel = "".join(f"{g}, " for g in gs)
        sums = ", ".join(["count(*) AS n", *[f"sum({m}) AS s{i}" for i, m in enumerate(ms)]])
        neg = ", ".join(["-count(*) AS n", *[f"-sum({m}) AS s{i}" for i, m in enumerate(ms)]])
        buckets = _multi_row_buckets(con, unit)
        if buckets is None:
            body = f"SELECT {gsel}{sums} FROM src {group_by}"  # noqa: S608
        else:
            # rows of units that may have several rows: filter first, then project (cheap)
            con.register("buckets", buckets)
            con.sql(
                f"CREATE TEMP TABLE multi AS SELECT {projection} FROM "  # noqa: S608
                f"(SELECT * FROM t WHERE {not_null} AND {_bucket(unit)} IN "
                f"(SELECT h FROM buckets)) AS t"
            )
            order = ", ".join([*gs, *ms]) or "u"
            pair_sums = ", ".join(f"sum({m}) AS {m}" for m in ms)
            pair_select = ", ".join(["u", *gs, *([pair_sums] if ms else [])])
            total_sums = ", ".join(["sum(n) AS n", *[f"sum(s{i}) AS s{i}" for i in range(len(ms))]])
            body = f"""
                WITH total AS (SELECT {gsel}{sums} FROM src {group_by}),
                raw AS (SELECT {gsel}{neg} FROM multi {group_by}),
                kept AS (SELECT * FROM multi QUALIFY row_number() OVER (
                         PARTITION BY u ORDER BY hash({order}), {order}) <= {int(max_contributions)}),
                pairs AS (SELECT {pair_select} FROM kept GROUP BY u{"".join(", " + g for g in gs)}),
                bounded AS (SELECT {gsel}{sums} FROM pairs {group_by}),
                parts AS (SELECT * FROM total UNION ALL SELECT * FROM raw
                          UNION ALL SELECT * FROM bounded)
                SELECT {gsel}{total_sums} FROM parts {group_by}"""  # noqa: S608
        cast = [f"CAST({g} AS VARCHAR) AS {g}" for g in gs]
        outer = ", ".join([*cast, "n", *[f"s{i}" for i in range(len(ms))]])
        filters = ["n > 0"]
        params: list[list[str]] = []
        for g, domain in zip(gs, domains, strict=True):
            if domain is not None:
                filters.append(f"list_contains(?, CAST({g} AS VARCHAR))")
                params.append(list(domain))
        where = " AND ".join(filters)
        sql = f"SELECT {outer} FROM ({body}) AS agg WHERE {where} LIMIT {int(max_exact_groups) + 1}"  # noqa: S608
        rows = con.execute(sql, params).fetchall()
    finally:
        con.close()
    if len(rows) > max_exact_groups:
        raise ResourceError("too many groups in the query output")
    ng = len(gs)
    groups: dict[GroupKeyValue, tuple[int, tuple[int, ...]]] = {}
    for row in rows:
        key = tuple(None if v is None else str(v) for v in row[:ng])
        if key in groups:  # pragma: no cover - the casts used are injective
            raise PrivacyError("group values are not distinct as text")
        groups[key] = (int(row[ng]), tuple(int(v or 0) for v in row[ng + 1 :]))
    return ExactAggregate(groups)
