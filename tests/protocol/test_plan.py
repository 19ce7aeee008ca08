"""Query plans (sdk/protocol/plan.py): strict parsing, validation against column roles, and
stability tested, not only argued — removing one person from either party's dataset changes the
counts, summed over cells, by at most ``neighbour_factor * max_contributions``, and each sum by
that many times its bound."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sdk.errors import InputError, QueryRejectedError
from sdk.protocol.canonical import canonical_json, parse_json
from sdk.protocol.plan import (
    DatasetColumns,
    Plan,
    clamp_double,
    compile_duckdb,
    first_pass_sql,
    match_stats_sql,
    one_row_check_sql,
    plan_in_words,
    validate,
)

DATASETS = {
    "a": DatasetColumns("id", "email", {"seg": "dimension", "val": "measure", "flag": "filter",
                                        "secret": "private"}),
    "b": DatasetColumns("id", "email", {"tier": "dimension", "spend": "measure"}),
    "c": DatasetColumns("id", "phone", {"x": "dimension"}),
}


def col(ds: str, name: str) -> dict[str, Any]:
    return {"col": [ds, name]}


def fn(name: str, *args: Any) -> dict[str, Any]:
    return {"fn": name, "args": list(args)}


def base_plan(**over: Any) -> dict[str, Any]:
    plan: dict[str, Any] = {
        "inputs": ["a", "b"], "joins": [{"dataset": "b", "kind": "inner"}],
        "where": fn("eq", col("a", "flag"), {"bool": True}),
        "group_by": [{"name": "seg", "expr": col("a", "seg"), "domain": ["x", "y"]}],
        "measures": [{"name": "people", "agg": "count", "expr": None, "lower": "0", "upper": "0"},
                     {"name": "spend", "agg": "sum", "expr": col("b", "spend"),
                      "lower": "0", "upper": "100"}],
        "max_contributions": 1,
    }
    plan.update(over)
    return plan


def test_round_trip_is_canonical() -> None:
    plan = Plan.from_dict(base_plan())
    again = Plan.from_dict(parse_json(canonical_json(plan.to_dict())))
    assert again == plan
    validate(plan, DATASETS)
    words = plan_in_words(plan)
    assert any("same person" in w for w in words) and any("clamped" in w for w in words)


@pytest.mark.parametrize("bad, construct", [
    ({"where": fn("eq", col("a", "id"), {"text": "x"})}, "(id)"),
    ({"where": fn("eq", col("a", "secret"), {"text": "x"})}, "(private)"),
    ({"where": fn("gt", col("a", "val"), {"int": 3})}, "(measure) read in where"),
    ({"group_by": [{"name": "f", "expr": col("a", "flag"), "domain": None}]}, "(filter) read in group_by"),
    ({"group_by": [{"name": "k", "expr": {"text": "all"}, "domain": None}]}, "constant group key"),
    ({"group_by": [{"name": "u", "expr": fn("lower", col("b", "id")), "domain": None}]}, "(id)"),
    ({"measures": [{"name": "s", "agg": "sum", "expr": col("a", "seg"), "lower": "0",
                    "upper": "1"}]}, "(dimension) read in measures"),
    ({"where": col("a", "flag")}, "not a predicate"),
    ({"inputs": ["a", "c"], "joins": [{"dataset": "c", "kind": "inner"}]}, "across id kinds"),
    ({"inputs": ["a", "zz"], "joins": [{"dataset": "zz", "kind": "inner"}]}, "unknown dataset"),
])
def test_roles_are_enforced(bad: dict[str, Any], construct: str) -> None:
    plan = Plan.from_dict(base_plan(**bad))
    with pytest.raises(QueryRejectedError) as err:
        validate(plan, DATASETS)
    assert construct in err.value.message


@pytest.mark.parametrize("bad", [
    {"where": fn("eq", col("a", "seg"), 1.5)},                       # a float
    {"where": fn("window_sum", col("a", "seg"))},                     # not a row function
    {"where": fn("in", col("a", "seg"), col("a", "seg"))},            # in over a column
    {"joins": []},                                                    # an input never joined
    {"joins": [{"dataset": "b", "kind": "cross"}]},                   # not an equi-join kind
    {"max_contributions": 0},
    {"measures": []},
    {"measures": [{"name": "n", "agg": "count", "expr": col("a", "val"), "lower": "0",
                   "upper": "0"}]},
    {"where": {"int": 2**60}},
    {"extra": 1},
])
def test_parsing_is_strict(bad: dict[str, Any]) -> None:
    with pytest.raises(InputError):
        Plan.from_dict(base_plan(**bad))


def test_nesting_and_size_are_bounded() -> None:
    deep: dict[str, Any] = col("a", "seg")
    for _ in range(40):
        deep = fn("lower", deep)
    with pytest.raises(InputError, match="nest"):
        Plan.from_dict(base_plan(where=fn("eq", deep, {"text": "x"})))


# -- stability ------------------------------------------------------------------------------

PEOPLE = [f"p{i}" for i in range(6)]
VALUES = st.one_of(st.sampled_from([-1000, -50, 0, 150, 1000]), st.integers(-50, 150))
SEGS = st.sampled_from(["x", "y", "z", None])
rows_a = st.lists(st.tuples(st.sampled_from(PEOPLE), SEGS, VALUES, st.booleans()), min_size=4, max_size=40)
rows_b = st.lists(st.tuples(st.sampled_from(PEOPLE), st.sampled_from(["t1", "t2", None]),
                            VALUES), min_size=4, max_size=40)


@st.composite
def plans(draw: st.DrawFn) -> dict[str, Any]:
    joined = draw(st.booleans())
    inputs = ["a", "b"] if joined else ["a"]
    joins = [{"dataset": "b", "kind": draw(st.sampled_from(["inner", "left", "full"]))}] \
        if joined else []
    where = draw(st.sampled_from([
        None, fn("eq", col("a", "flag"), {"bool": True}),
        fn("in", col("a", "seg"), {"text": "x"}, {"text": "z"}),
        fn("or", fn("is_null", col("a", "seg")), fn("not", col("a", "flag")))]))
    group_choices = [{"name": "seg", "expr": col("a", "seg"), "domain": None},
                     {"name": "seg2", "expr": fn("concat", col("a", "seg"), {"text": "-"}),
                      "domain": None}]
    if joined:
        group_choices.append({"name": "tier", "expr": col("b", "tier"), "domain": None})
        group_choices.append({"name": "side", "domain": None, "expr": fn(
            "if", fn("matched", {"text": "b"}), {"text": "both"}, {"text": "a only"})})
    groups = draw(st.lists(st.sampled_from(group_choices), max_size=2,
                           unique_by=lambda g: g["name"]))
    measure_exprs = [col("a", "val"), fn("mul", col("a", "val"), {"int": 3}),
                     fn("div", {"int": 100}, col("a", "val")),
                     fn("to_int", fn("to_text", col("a", "val")))]
    if joined:
        measure_exprs += [col("b", "spend"), fn("add", col("a", "val"), col("b", "spend"))]
    expr = draw(st.sampled_from(measure_exprs))
    lower = draw(st.integers(-100, 0))
    upper = draw(st.integers(0, 200))
    agg = draw(st.sampled_from(["sum", "mean"]))
    return {"inputs": inputs, "joins": joins, "where": where, "group_by": groups,
            "measures": [{"name": "people", "agg": "count", "expr": None, "lower": "0",
                          "upper": "0"},
                         {"name": "m", "agg": agg, "expr": expr, "lower": str(lower),
                          "upper": str(upper)}],
            "max_contributions": draw(st.integers(1, 3))}


def _run(sql: str, a: list[Any], b: list[Any]) -> dict[tuple[Any, ...], dict[str, Any]]:
    con = duckdb.connect(config={"enable_external_access": False})
    try:
        con.execute("CREATE TABLE a (id VARCHAR, seg VARCHAR, val BIGINT, flag BOOLEAN, "
                    "secret VARCHAR)")
        con.execute("CREATE TABLE b (id VARCHAR, tier VARCHAR, spend BIGINT)")
        if a:
            con.executemany("INSERT INTO a VALUES (?, ?, ?, ?, 'canary')", a)
        if b:
            con.executemany("INSERT INTO b VALUES (?, ?, ?)", b)
        cur = con.execute(sql)
        names = [d[0] for d in cur.description]
        out = {}
        for row in cur.fetchall():
            rec = dict(zip(names, row, strict=True))
            key = tuple(rec.pop(n) for n in list(rec) if n in ("seg", "seg2", "tier", "side"))
            out[key] = rec
        return out
    finally:
        con.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan_dict=plans(), a=rows_a, b=rows_b, person=st.sampled_from(PEOPLE),
       side=st.sampled_from(["a", "b"]), exact=st.booleans())
@example(  # one person with many rows at the bound: caught only if the platform bounds them
    plan_dict={"inputs": ["a"], "joins": [], "where": None, "group_by": [],
               "measures": [{"name": "people", "agg": "count", "expr": None, "lower": "0",
                             "upper": "0"},
                            {"name": "m", "agg": "sum", "expr": {"col": ["a", "val"]},
                             "lower": "0", "upper": "100"}],
               "max_contributions": 1},
    a=[("p1", "x", 1000, True)] * 3 + [("p2", "x", 5, True)], b=[], person="p1", side="a",
    exact=True)
def test_removing_one_person_moves_each_output_by_its_bound(
        plan_dict: dict[str, Any], a: list[Any], b: list[Any], person: str, side: str,
        exact: bool) -> None:
    """``exact``: with the worker's fixed-point mapping (bounds in fixed-point units)."""
    from enclave.privacy._exact import FixedPoint

    plan = Plan.from_dict(plan_dict)
    measure = plan.measures[1]
    fixed = FixedPoint.from_bounds(Decimal(measure.lower), Decimal(measure.upper))
    compiled = compile_duckdb(plan, DATASETS, salt="test", measure_sql=(
        (lambda m, v: fixed.sql_of(v)) if exact else clamp_double))
    full = _run(compiled.sql, a, b)
    fewer_a = [r for r in a if r[0] != person] if side == "a" else a
    fewer_b = [r for r in b if r[0] != person] if side == "b" else b
    less = _run(compiled.sql, fewer_a, fewer_b)
    k = plan.max_contributions * plan.neighbour_factor
    keys = set(full) | set(less)
    zero = {"__units": 0, "m": 0.0}

    def moved(field: str) -> float:
        return sum(abs(float(full.get(g, zero).get(field, 0) or 0)
                       - float(less.get(g, zero).get(field, 0) or 0)) for g in keys)

    assert moved("__units") <= k
    bound = float(fixed.max_abs) if exact else float(measure.bound)
    assert moved("m") <= k * bound + 1e-6
    assert "canary" not in repr(full)


def _one_row(rows: list[Any]) -> list[Any]:
    """The first row of each person: a dataset with one row per person."""
    seen: dict[str, Any] = {}
    for row in rows:
        seen.setdefault(row[0], row)
    return list(seen.values())


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan_dict=plans(), a=rows_a, b=rows_b, which=st.sampled_from(["a", "b", "both"]))
def test_one_row_inputs_skip_bounding_with_the_same_result(
        plan_dict: dict[str, Any], a: list[Any], b: list[Any], which: str) -> None:
    """Inputs known to hold one row per person (their check passed) need no bounding: the
    compiled query without it gives exactly the bounded query's figures, with either or both
    inputs marked; and the check itself is 0 exactly for such inputs."""
    plan = Plan.from_dict(plan_dict)
    a1, b1 = _one_row(a), _one_row(b)
    marked = frozenset(plan.inputs) if which == "both" else frozenset({which}) & set(plan.inputs)
    bounded = compile_duckdb(plan, DATASETS, salt="test")
    unbounded = compile_duckdb(plan, DATASETS, salt="test", one_row=marked)
    assert _run(unbounded.sql, a1, b1) == _run(bounded.sql, a1, b1)
    check = _run(one_row_check_sql(DATASETS, ["a", "b"]), a, b)
    ((_key, counts),) = check.items()
    assert counts["a"] == len(a) - len({r[0] for r in a})
    assert counts["b"] == len(b) - len({r[0] for r in b})
    assert _run(one_row_check_sql(DATASETS, ["a", "b"]), a1, b1) == {(): {"a": 0, "b": 0}}
    if len(plan.inputs) == 2:  # a first run's single pass: the same match figures, and a check
        for rows_of_a, rows_of_b in ((a, b), (a1, b1)):
            ((_k, one),) = _run(first_pass_sql(plan, DATASETS, ["a", "b"]), rows_of_a,
                                rows_of_b).items()
            ((_k, stats),) = _run(match_stats_sql(plan, DATASETS), rows_of_a, rows_of_b).items()
            assert {c: v for c, v in one.items() if c.startswith("__match")} == \
                {c: v for c, v in stats.items() if c != "__match"}
            assert (one["a"], one["b"]) == (
                sum(1 for p in {r[0] for r in rows_of_a}
                    if sum(r[0] == p for r in rows_of_a) > 1),
                sum(1 for p in {r[0] for r in rows_of_b}
                    if sum(r[0] == p for r in rows_of_b) > 1))


def test_only_a_plan_over_one_row_inputs_without_match_row_groups_no_person() -> None:
    """``groups_persons`` (the runner's larger DuckDB buffers when false) is false only for an
    aggregate whose every input is one row per person and that carries no match row."""
    plan = Plan.from_dict(base_plan())
    both = frozenset({"a", "b"})
    assert not compile_duckdb(plan, DATASETS, one_row=both).groups_persons
    assert compile_duckdb(plan, DATASETS, one_row=both, match_stats=True).groups_persons
    assert compile_duckdb(plan, DATASETS, one_row=frozenset({"a"})).groups_persons
    assert compile_duckdb(plan, DATASETS).groups_persons
    listing = Plan.from_dict(base_plan(release="list", group_by=[], measures=[]))
    assert compile_duckdb(listing, DATASETS, one_row=both).groups_persons
