"""The exact aggregation (bounding + dedup + fixed point, with its single/multi-row shortcut)
agrees with a naive reference on random tables."""

from __future__ import annotations

import math
from collections import defaultdict
from decimal import Decimal

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave.privacy._exact import FixedPoint, exact_aggregate

FP = FixedPoint.from_bounds(Decimal("-10"), Decimal("10"))
VALUES = st.one_of(
    st.none(),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308]),
    st.integers(-60, 60).map(lambda i: i / 4),
)
ROW = st.tuples(st.sampled_from(["a", "b", "c", "d", "e", "f", None]), st.integers(0, 3), VALUES)


def fixed(v: float | None) -> int:
    if v is None or math.isnan(v):
        return FP.impute
    return round(max(-10.0, min(10.0, v)) * 100_000)


def table_of(rows: list[tuple[str | None, int, float | None]]) -> pa.Table:
    return pa.table(
        {
            "u": pa.array([r[0] for r in rows], pa.string()),
            "g": pa.array([r[1] for r in rows], pa.int64()),
            "v": pa.array([r[2] for r in rows], pa.float64()),
        }
    )


def run(rows: list[tuple[str | None, int, float | None]], k: int, domain: tuple[str, ...] | None):
    return exact_aggregate(
        table_of(rows),
        unit="u",
        group_columns=["g"],
        measures=[("v", FP)],
        max_contributions=k,
        domains=[domain],
        max_exact_groups=100,
    ).groups


@settings(max_examples=40, deadline=None)
@given(st.lists(ROW, max_size=40))
def test_unbounded_equals_naive(rows: list[tuple[str | None, int, float | None]]) -> None:
    units: dict[str, set[int]] = defaultdict(set)
    naive_units: dict[tuple[str], set[str]] = defaultdict(set)
    naive_sums: dict[tuple[str], int] = defaultdict(int)
    for u, g, v in rows:
        if u is None:
            continue
        units[u].add(g)
        naive_units[(str(g),)].add(u)
        naive_sums[(str(g),)] += fixed(v)
    got = run(rows, 1000, None)
    assert got == {key: (len(us), (naive_sums[key],)) for key, us in naive_units.items()}


@settings(max_examples=40, deadline=None)
@given(st.lists(ROW, max_size=40), st.integers(1, 3))
def test_bounded_invariants(rows: list[tuple[str | None, int, float | None]], k: int) -> None:
    per_unit: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for u, g, v in rows:
        if u is not None:
            per_unit[u].append((g, fixed(v)))
    got = run(rows, k, ("0", "1", "2", "3"))
    naive = run(rows, 1000, ("0", "1", "2", "3"))
    # each unit keeps at most k rows, so it counts in at most k groups, and never more than it had
    assert sum(n for n, _ in got.values()) <= sum(min(k, len(r)) for r in per_unit.values())
    assert sum(n for n, _ in got.values()) >= len(per_unit)  # every unit keeps one row at least
    for key, (n, _) in got.items():
        assert 0 < n <= naive[key][0]
    # the kept values of a unit are some of its own: total sum within the extreme choices
    low = sum(sum(sorted(v for _, v in r)[:k]) for r in per_unit.values())
    high = sum(sum(sorted((v for _, v in r), reverse=True)[:k]) for r in per_unit.values())
    assert low <= sum(s[0] for _, s in got.values()) <= high
    if k == 1:
        assert sum(n for n, _ in got.values()) == len(per_unit)
