"""Query plans: the engine-neutral, stable-by-construction query language (DESIGN §6, issue 13).

A plan says *what* to aggregate, never *how* to cross rows:

* ``inputs``: the datasets read; the first one's ``id`` column is the privacy unit;
* ``joins``: each further input is equi-joined on its ``id`` column to the person so far (same
  id kind, so one unit on both sides), ``inner``, ``left`` or ``full``; before the join each
  joined input keeps at most ``max_contributions`` rows per person (chosen by the platform), so
  no party's duplicates can multiply the join;
* ``release``: ``aggregate`` (cells of counts and sums) or ``list`` (the first input's own
  identifiers present in the join and passing ``where``: the query cannot pick single ids);
* ``where``: a row predicate over columns whose role allows it (``filter``, ``dimension``);
* ``group_by``: named row-level expressions over ``dimension`` columns, each with a public
  domain or none (then only DP thresholding may release its values);
* ``measures``: ``count`` (distinct units), or ``sum``/``mean`` of a row-level expression over
  ``measure`` columns, clamped to declared decimal bounds;
* ``max_contributions``: rows kept per unit *after* the join, chosen by the platform.

Expressions are trees of column references, literals and functions from a fixed list, each
computed on one row. Nothing crosses rows: no subqueries, windows, set operations, ordering,
limits, table functions or sampling can be written. Every released cell therefore depends only
on the rows of the units in its group, and removing one person from one party's dataset changes
the distinct-person counts, summed over all cells, by at most ``neighbour_factor *
max_contributions``, and each sum likewise by that many times its bound (``neighbour_factor``
is 2 with a ``left`` or ``full`` join; see :attr:`Plan.neighbour_factor`). ``matched(d)`` is
the one row-level fact about the join itself: whether the person has a row in input ``d``.

This module parses (strictly: no floats, bounded sizes), validates against the column roles,
describes a plan in words, and compiles it to one DuckDB query with the platform's bounding
and aggregation fused in. It runs no query and imports no engine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sdk.errors import InputError, QueryRejectedError
from sdk.protocol.fields import (
    check_decimal,
    check_keys,
    check_name,
    expect_mapping,
    get_choice,
    get_int,
    get_list,
    get_name,
)

ROLES = ("id", "dimension", "measure", "filter", "private")
JOIN_KINDS = ("inner", "left", "full")
RELEASES = ("aggregate", "list")
AGGREGATIONS = ("count", "sum", "mean")
MAX_INPUTS = 8
MAX_NODES = 2000
MAX_DEPTH = 32
MAX_GROUPS = 16
MAX_MEASURES = 32
MAX_DOMAIN = 10_000
MAX_LITERAL = 1000
MAX_INT = 2**53
MAX_KEY_CHARS = 256
"""Group-key text is cut to this many characters (a per-row function, so stability holds and
the size of what a run hands over is bounded by declared row counts)."""

# function name -> (min args, max args, SQL template kind)
FUNCTIONS: dict[str, tuple[int, int]] = {
    "and": (2, 16), "or": (2, 16), "not": (1, 1),
    "eq": (2, 2), "ne": (2, 2), "lt": (2, 2), "le": (2, 2), "gt": (2, 2), "ge": (2, 2),
    "is_null": (1, 1), "in": (2, 1001), "between": (3, 3),
    "add": (2, 2), "sub": (2, 2), "mul": (2, 2), "div": (2, 2), "neg": (1, 1), "abs": (1, 1),
    "coalesce": (2, 8), "if": (3, 3),
    "lower": (1, 1), "upper": (1, 1), "trim": (1, 1), "length": (1, 1), "substr": (3, 3),
    "concat": (2, 8),
    "to_int": (1, 1), "to_decimal": (1, 1), "to_text": (1, 1),
    "matched": (1, 1),
}
_COMPARE = {"eq": "=", "ne": "<>", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
_ARITH = {"add": "+", "sub": "-", "mul": "*"}
_PREDICATES = {"and", "or", "not", "eq", "ne", "lt", "le", "gt", "ge", "is_null", "in", "between",
               "matched"}


# -- expressions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Col:
    """A column of one input dataset."""

    dataset: str
    column: str


@dataclass(frozen=True)
class Lit:
    """A literal: text, a whole number, a decimal (kept as its string), a boolean or null."""

    value: str | int | bool | None
    decimal: bool = False


@dataclass(frozen=True)
class Call:
    """A row-level function of :data:`FUNCTIONS` applied to argument expressions."""

    fn: str
    args: tuple[Expr, ...]


Expr = Col | Lit | Call


def expr_to_dict(expr: Expr) -> dict[str, Any]:
    """The canonical JSON form of an expression."""
    if isinstance(expr, Col):
        return {"col": [expr.dataset, expr.column]}
    if isinstance(expr, Lit):
        if expr.decimal:
            return {"dec": expr.value}
        if expr.value is None:
            return {"null": True}
        if isinstance(expr.value, bool):
            return {"bool": expr.value}
        if isinstance(expr.value, int):
            return {"int": expr.value}
        return {"text": expr.value}
    return {"fn": expr.fn, "args": [expr_to_dict(a) for a in expr.args]}


class _Budget:
    """Counts nodes while parsing, so a hostile plan cannot be arbitrarily large or deep."""

    def __init__(self) -> None:
        self.nodes = 0

    def take(self, where: str, depth: int) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise InputError(f"{where}: the plan has more than {MAX_NODES} expression nodes")
        if depth > MAX_DEPTH:
            raise InputError(f"{where}: expressions nest deeper than {MAX_DEPTH}")


def expr_from_dict(data: object, where: str, budget: _Budget | None = None,
                   depth: int = 0) -> Expr:
    """Parse one expression strictly. Raises ``InputError`` naming where it is malformed."""
    budget = budget or _Budget()
    budget.take(where, depth)
    d = expect_mapping(data, where)
    if len(d) != 1 and set(d) != {"fn", "args"}:
        raise InputError(f"{where}: expected one of col, text, int, dec, bool, null, fn+args")
    if "col" in d:
        ref = d["col"]
        if not isinstance(ref, list) or len(ref) != 2:
            raise InputError(f"{where}.col: expected [dataset, column]")
        return Col(check_name(ref[0], f"{where}.col[0]"), check_name(ref[1], f"{where}.col[1]"))
    if "text" in d:
        value = d["text"]
        if not isinstance(value, str) or len(value) > MAX_LITERAL:
            raise InputError(f"{where}.text: expected a string of at most {MAX_LITERAL} chars")
        return Lit(value)
    if "int" in d:
        value = d["int"]
        if isinstance(value, bool) or not isinstance(value, int) or abs(value) > MAX_INT:
            raise InputError(f"{where}.int: expected a whole number within ±2^53")
        return Lit(value)
    if "dec" in d:
        return Lit(check_decimal(d["dec"], f"{where}.dec"), decimal=True)
    if "bool" in d:
        if not isinstance(d["bool"], bool):
            raise InputError(f"{where}.bool: expected true or false")
        return Lit(d["bool"])
    if "null" in d:
        if d["null"] is not True:
            raise InputError(f"{where}.null: expected true")
        return Lit(None)
    if "fn" in d:
        fn = get_choice(d, "fn", where, tuple(FUNCTIONS))
        lo, hi = FUNCTIONS[fn]
        raw = get_list(d, "args", where, max_items=hi)
        if len(raw) < lo:
            raise InputError(f"{where}: {fn} takes at least {lo} arguments")
        args = tuple(expr_from_dict(a, f"{where}.{fn}[{i}]", budget, depth + 1)
                     for i, a in enumerate(raw))
        if fn == "in" and not all(isinstance(a, Lit) for a in args[1:]):
            raise InputError(f"{where}: in takes an expression and literals")
        if fn == "matched" and not (isinstance(args[0], Lit) and isinstance(args[0].value, str)
                                    and not args[0].decimal):
            raise InputError(f"{where}: matched takes the name of an input as text")
        if fn == "substr" and not all(isinstance(a, Lit) and isinstance(a.value, int)
                                      and not isinstance(a.value, bool) for a in args[1:]):
            raise InputError(f"{where}: substr takes an expression and two whole numbers")
        return Call(fn, args)
    raise InputError(f"{where}: expected one of col, text, int, dec, bool, null, fn+args")


def matched_of(expr: Expr) -> list[str]:
    """Every input named by ``matched(...)`` in an expression."""
    if isinstance(expr, Call):
        if expr.fn == "matched":
            first = expr.args[0]
            return [first.value] if isinstance(first, Lit) and isinstance(first.value, str) \
                else []
        return [d for a in expr.args for d in matched_of(a)]
    return []


def columns_of(expr: Expr) -> list[Col]:
    """Every column an expression reads, in order of appearance."""
    if isinstance(expr, Col):
        return [expr]
    if isinstance(expr, Lit):
        return []
    return [c for a in expr.args for c in columns_of(a)]


# -- the plan ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Join:
    """Join ``dataset`` to the first input on the two datasets' ``id`` columns."""

    dataset: str
    kind: str = "inner"


@dataclass(frozen=True)
class PlanGroup:
    """A group key: a named row-level expression over dimensions, with an optional public
    domain of its values (as text)."""

    name: str
    expr: Expr
    domain: tuple[str, ...] | None = None


@dataclass(frozen=True)
class PlanMeasure:
    """A released measure: ``count`` of distinct units, or ``sum``/``mean`` of ``expr`` clamped
    to [lower, upper] (decimal strings)."""

    name: str
    agg: str
    expr: Expr | None = None
    lower: str = "0"
    upper: str = "0"

    @property
    def bound(self) -> Decimal:
        """The largest absolute value one clamped row can contribute."""
        return max(abs(Decimal(self.lower)), abs(Decimal(self.upper)))


@dataclass(frozen=True)
class Plan:
    """A whole query plan (see the module docstring)."""

    inputs: tuple[str, ...]
    joins: tuple[Join, ...]
    where: Expr | None
    group_by: tuple[PlanGroup, ...]
    measures: tuple[PlanMeasure, ...]
    max_contributions: int = 1
    release: str = "aggregate"

    @property
    def neighbour_factor(self) -> int:
        """How many times ``max_contributions`` one person can move the outputs in total (L1
        over cells), when that person is removed from any one party's dataset: 1 when every
        join is ``inner`` (their rows disappear), 2 with a ``left`` or ``full`` join (removing
        them from one dataset can turn their matched rows into unmatched ones: a change, not a
        removal). The release calibrates noise to ``neighbour_factor * max_contributions``."""
        return 2 if any(j.kind != "inner" for j in self.joins) else 1

    @property
    def contribution_bound(self) -> int:
        """``neighbour_factor * max_contributions``: the L1 bound the release is noised for."""
        return self.neighbour_factor * self.max_contributions

    @property
    def unit_dataset(self) -> str:
        """The dataset whose ``id`` column is the privacy unit (the first input)."""
        return self.inputs[0]

    def to_dict(self) -> dict[str, Any]:
        """The canonical JSON form (what a bundle carries and every party signs)."""
        return {
            "inputs": list(self.inputs),
            "joins": [{"dataset": j.dataset, "kind": j.kind} for j in self.joins],
            "where": None if self.where is None else expr_to_dict(self.where),
            "group_by": [{"name": g.name, "expr": expr_to_dict(g.expr),
                          "domain": None if g.domain is None else list(g.domain)}
                         for g in self.group_by],
            "measures": [{"name": m.name, "agg": m.agg,
                          "expr": None if m.expr is None else expr_to_dict(m.expr),
                          "lower": m.lower, "upper": m.upper} for m in self.measures],
            "max_contributions": self.max_contributions,
            "release": self.release,
        }

    @classmethod
    def from_dict(cls, data: object) -> Plan:
        """Parse a plan strictly (unknown keys, floats, oversize parts refused).

        Raises ``InputError`` naming the malformed part.
        """
        where = "plan"
        d = expect_mapping(data, where)
        check_keys(d, where, ["inputs", "joins", "where", "group_by", "measures",
                              "max_contributions"], ["release"])
        budget = _Budget()
        inputs = tuple(check_name(n, f"{where}.inputs[]")
                       for n in get_list(d, "inputs", where, max_items=MAX_INPUTS))
        if not inputs or len(set(inputs)) != len(inputs):
            raise InputError(f"{where}.inputs: expected distinct dataset names")
        joins = []
        for i, raw in enumerate(get_list(d, "joins", where, max_items=MAX_INPUTS)):
            w = f"{where}.joins[{i}]"
            jd = expect_mapping(raw, w)
            check_keys(jd, w, ["dataset", "kind"])
            joins.append(Join(get_name(jd, "dataset", w), get_choice(jd, "kind", w, JOIN_KINDS)))
        if [j.dataset for j in joins] != list(inputs[1:]):
            raise InputError(f"{where}.joins: join every input after the first, once, in order")
        predicate = None if d["where"] is None else expr_from_dict(d["where"], f"{where}.where",
                                                                   budget)
        groups = []
        for i, raw in enumerate(get_list(d, "group_by", where, max_items=MAX_GROUPS)):
            w = f"{where}.group_by[{i}]"
            gd = expect_mapping(raw, w)
            check_keys(gd, w, ["name", "expr", "domain"])
            domain = None
            if gd["domain"] is not None:
                items = get_list(gd, "domain", w, max_items=MAX_DOMAIN)
                if not all(isinstance(v, str) and len(v) <= MAX_LITERAL for v in items) \
                        or len(set(items)) != len(items):
                    raise InputError(f"{w}.domain: expected distinct strings")
                domain = tuple(items)
            groups.append(PlanGroup(get_name(gd, "name", w),
                                    expr_from_dict(gd["expr"], f"{w}.expr", budget), domain))
        measures = []
        for i, raw in enumerate(get_list(d, "measures", where, max_items=MAX_MEASURES)):
            w = f"{where}.measures[{i}]"
            md = expect_mapping(raw, w)
            check_keys(md, w, ["name", "agg", "expr", "lower", "upper"])
            agg = get_choice(md, "agg", w, AGGREGATIONS)
            expr = None if md["expr"] is None else expr_from_dict(md["expr"], f"{w}.expr", budget)
            lower = check_decimal(md["lower"], f"{w}.lower")
            upper = check_decimal(md["upper"], f"{w}.upper")
            if agg == "count" and expr is not None:
                raise InputError(f"{w}: count counts distinct units and takes no expression")
            if agg != "count" and (expr is None or Decimal(lower) > Decimal(upper)):
                raise InputError(f"{w}: {agg} needs an expression and lower <= upper")
            measures.append(PlanMeasure(get_name(md, "name", w), agg, expr, lower, upper))
        release = get_choice(d, "release", where, RELEASES) if "release" in d else "aggregate"
        if release == "aggregate" and not measures:
            raise InputError(f"{where}.measures: at least one measure")
        if release == "list" and (measures or groups):
            raise InputError(f"{where}: a list release has no group_by and no measures")
        names = [g.name for g in groups] + [m.name for m in measures]
        if len(set(names)) != len(names):
            raise InputError(f"{where}: group and measure names must be distinct")
        contributions = get_int(d, "max_contributions", where, minimum=1, maximum=1000)
        return cls(inputs, tuple(joins), predicate, tuple(groups), tuple(measures),
                   contributions, release)


# -- validation against the column roles -------------------------------------------------------


@dataclass(frozen=True)
class DatasetColumns:
    """What a plan may know of one dataset: its id column and kind, and each column's role
    (a column absent from ``roles`` is ``private``)."""

    id_column: str
    id_kind: str
    roles: Mapping[str, str]

    def role(self, column: str) -> str:
        if column == self.id_column:
            return "id"
        return self.roles.get(column, "private")


_ALLOWED = {
    "where": ("filter", "dimension"),
    "group_by": ("dimension",),
    "measures": ("measure",),
}


def _refuse(construct: str, where: str) -> QueryRejectedError:
    return QueryRejectedError(f"plan: {construct} at {where}")


def validate(plan: Plan, datasets: Mapping[str, DatasetColumns]) -> None:
    """Check a plan against the datasets' column roles.

    Raises ``QueryRejectedError`` (E_QUERY_REJECTED) naming the construct and where it is: an
    unknown dataset or column, a column read outside its role (an ``id`` column anywhere in an
    expression, a ``private`` column anywhere), a join across id kinds, ``matched`` of a
    dataset that is not an input, a non-predicate where a predicate is needed, a constant group
    key, or a ``full`` join in a list release.
    """
    for name in plan.inputs:
        if name not in datasets:
            raise _refuse(f"unknown dataset {name!r}", "inputs")
    first = datasets[plan.unit_dataset]
    for i, join in enumerate(plan.joins):
        other = datasets[join.dataset]
        if other.id_kind != first.id_kind or other.id_kind == "none":
            raise _refuse(f"join of {join.dataset!r} across id kinds "
                          f"({other.id_kind} vs {first.id_kind})", f"joins[{i}]")
        if plan.release == "list" and join.kind == "full":
            raise _refuse("a full join in a list release (only the first input's ids are "
                          "listed)", f"joins[{i}]")

    def check(expr: Expr, part: str, where: str) -> None:
        for col in columns_of(expr):
            if col.dataset not in plan.inputs:
                raise _refuse(f"column of a dataset not in inputs ({col.dataset!r})", where)
            role = datasets[col.dataset].role(col.column)
            if role not in _ALLOWED[part]:
                raise _refuse(f"column {col.dataset}.{col.column} ({role}) read in {part}", where)
        for name in matched_of(expr):
            if part == "measures":
                raise _refuse("matched() in a measure", where)
            if name not in plan.inputs:
                raise _refuse(f"matched() of a dataset not in inputs ({name!r})", where)

    if plan.where is not None:
        check(plan.where, "where", "where")
        if not (isinstance(plan.where, Call) and plan.where.fn in _PREDICATES):
            raise _refuse("a where clause that is not a predicate", "where")
    for i, group in enumerate(plan.group_by):
        check(group.expr, "group_by", f"group_by[{i}]")
        if not columns_of(group.expr) and not matched_of(group.expr):
            raise _refuse("a constant group key", f"group_by[{i}]")
    for i, measure in enumerate(plan.measures):
        if measure.expr is not None:
            check(measure.expr, "measures", f"measures[{i}]")


# -- in words, for review -----------------------------------------------------------------------


def expr_in_words(expr: Expr) -> str:
    """A readable rendering of an expression (review shows it; it is not parsed back)."""
    if isinstance(expr, Col):
        return f"{expr.dataset}.{expr.column}"
    if isinstance(expr, Lit):
        return "null" if expr.value is None else repr(expr.value) if isinstance(
            expr.value, str) else str(expr.value).lower() if isinstance(expr.value, bool) \
            else str(expr.value)
    args = [expr_in_words(a) for a in expr.args]
    if expr.fn in _COMPARE:
        return f"({args[0]} {_COMPARE[expr.fn]} {args[1]})"
    if expr.fn in ("and", "or"):
        return "(" + f" {expr.fn} ".join(args) + ")"
    if expr.fn == "in":
        return f"({args[0]} in [{', '.join(args[1:])}])"
    if expr.fn == "matched":
        return f"(the person has a row in {args[0].strip(chr(39))})"
    return f"{expr.fn}({', '.join(args)})"


def plan_in_words(plan: Plan) -> list[str]:
    """The plan as sentences a reviewer reads."""
    lines = [f"each person is one {plan.unit_dataset} identifier"]
    for join in plan.joins:
        how = {"inner": "matched", "left": "kept, matched where possible,",
               "full": "kept from both sides, matched where possible,"}[join.kind]
        lines.append(f"{plan.unit_dataset} rows are {how} with {join.dataset} on the same "
                     f"person (at most {plan.max_contributions} {join.dataset} row(s) per "
                     "person, chosen by the platform)")
    if plan.where is not None:
        lines.append(f"only rows where {expr_in_words(plan.where)}")
    lines.append(f"at most {plan.max_contributions} row(s) per person count, chosen by the "
                 "platform")
    for g in plan.group_by:
        domain = "values from the data (DP thresholding only)" if g.domain is None \
            else f"public values {', '.join(g.domain[:10])}{' ...' if len(g.domain) > 10 else ''}"
        lines.append(f"grouped by {g.name} = {expr_in_words(g.expr)} ({domain})")
    if plan.release == "list":
        lines.append(f"released: the list of {plan.unit_dataset}'s own identifiers that pass, "
                     "sorted; the query cannot pick single identifiers")
    for m in plan.measures:
        if m.agg == "count":
            lines.append(f"{m.name}: number of distinct persons per group")
        else:
            lines.append(f"{m.name}: {m.agg} of {expr_in_words(m.expr) if m.expr else '-'}, "
                         f"each row clamped to [{m.lower}, {m.upper}]")
    return lines


# -- compilation to DuckDB ----------------------------------------------------------------------


def quote(name: str) -> str:
    """A DuckDB identifier literal."""
    return '"' + name.replace('"', '""') + '"'


def _text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sql(expr: Expr, alias: Mapping[str, str], ids: Mapping[str, str]) -> str:
    if isinstance(expr, Col):
        return f"{alias[expr.dataset]}.{quote(expr.column)}"
    if isinstance(expr, Lit):
        if expr.value is None:
            return "NULL"
        if expr.decimal:
            return f"CAST({_text(str(expr.value))} AS DOUBLE)"
        if isinstance(expr.value, bool):
            return "TRUE" if expr.value else "FALSE"
        if isinstance(expr.value, int):
            return f"CAST({expr.value} AS BIGINT)"
        return _text(expr.value)
    fn = expr.fn
    if fn == "matched":
        first = expr.args[0]
        assert isinstance(first, Lit) and isinstance(first.value, str)
        return f"({ids[first.value]} IS NOT NULL)"
    a = [_sql(x, alias, ids) for x in expr.args]
    if fn in _COMPARE:
        return f"({a[0]} {_COMPARE[fn]} {a[1]})"
    if fn in _ARITH:
        return f"({a[0]} {_ARITH[fn]} {a[1]})"
    if fn == "div":
        return f"(CASE WHEN {a[1]} = 0 THEN NULL ELSE CAST({a[0]} AS DOUBLE) / {a[1]} END)"
    if fn in ("and", "or"):
        return "(" + f" {fn.upper()} ".join(a) + ")"
    simple = {"not": "NOT", "neg": "-", "abs": "abs", "lower": "lower", "upper": "upper",
              "trim": "trim", "length": "length"}
    if fn in ("not", "neg"):
        return f"({simple[fn]} {a[0]})"
    if fn in simple:
        return f"{simple[fn]}({a[0]})"
    if fn == "is_null":
        return f"({a[0]} IS NULL)"
    if fn == "in":
        return f"({a[0]} IN ({', '.join(a[1:])}))"
    if fn == "between":
        return f"({a[0]} BETWEEN {a[1]} AND {a[2]})"
    if fn == "coalesce":
        return f"coalesce({', '.join(a)})"
    if fn == "if":
        return f"(CASE WHEN {a[0]} THEN {a[1]} ELSE {a[2]} END)"
    if fn == "substr":
        return f"substr(CAST({a[0]} AS VARCHAR), {a[1]}, {a[2]})"
    if fn == "concat":
        return "concat(" + ", ".join(f"CAST({x} AS VARCHAR)" for x in a) + ")"
    if fn == "to_int":
        return f"CAST({a[0]} AS BIGINT)"
    if fn == "to_decimal":
        return f"CAST({a[0]} AS DOUBLE)"
    if fn == "to_text":
        return f"CAST({a[0]} AS VARCHAR)"
    raise QueryRejectedError(f"plan: unknown function {fn!r}")  # unreachable after parsing


def _row(expr: Expr, alias: Mapping[str, str], ids: Mapping[str, str]) -> str:
    """A row-level expression whose errors (casts, overflow) give NULL, never a failed run."""
    return f"TRY({_sql(expr, alias, ids)})"


MeasureSql = Callable[[PlanMeasure, str], str]
"""Maps a measure and the SQL of its row value (a DOUBLE, NULL on error) to the SQL of what
each kept row contributes to the sum. The default clamps to [lower, upper] as a DOUBLE; the
worker passes its exact fixed-point mapping (``enclave.privacy._exact.FixedPoint``)."""


def clamp_double(measure: PlanMeasure, value: str) -> str:
    """The default :data:`MeasureSql`: NULL stays NULL, everything else is clamped."""
    lo = f"CAST({_text(measure.lower)} AS DOUBLE)"
    hi = f"CAST({_text(measure.upper)} AS DOUBLE)"
    return f"least(greatest({value}, {lo}), {hi})"


@dataclass(frozen=True)
class CompiledPlan:
    """One DuckDB query over tables named as the datasets.

    Aggregate release: one row per group candidate: the group columns (text, named as the
    groups), ``__units`` (distinct persons) and one column per ``sum``/``mean`` measure (named
    as the measure: the sum of what the kept rows contribute). List release: one column
    ``__id``, the distinct listed identifiers as text, sorted.

    ``groups_persons`` is false when the query only joins and groups by the plan's own group
    keys: no grouping by person (bounding, the match row, a list's distinct identifiers). The
    runner then lets DuckDB buffer more (a join spills cleanly; a grouping by person over
    every identifier does not always).
    """

    sql: str
    release: str
    group_columns: tuple[str, ...]
    measure_columns: tuple[str, ...]
    groups_persons: bool = True


MATCH_MARK = "__match"


def match_units_column(i: int) -> str:
    """The column of :func:`match_stats_sql` holding input ``i``'s distinct persons."""
    return f"__match_units{i}"


MATCHED_COLUMN = "__match_matched"


def match_stats_sql(plan: Plan, datasets: Mapping[str, DatasetColumns]) -> str:
    """One row measuring the join of a validated plan with two or more inputs: ``__match``
    (TRUE, marking the row), each input's distinct persons (:func:`match_units_column`, in
    input order) and the persons found in every input (:data:`MATCHED_COLUMN`), all before
    predicates and bounding. A person is one non-NULL identifier value, as in the plan.

    :func:`first_pass_sql`'s grouping pass, without its checks."""
    return f"SELECT TRUE AS {MATCH_MARK}, * FROM ({first_pass_sql(plan, datasets, ())})"  # noqa: S608


def one_row_check_sql(datasets: Mapping[str, DatasetColumns], names: Sequence[str]) -> str:
    """One row, one column per dataset in ``names`` (its name): rows minus distinct non-NULL
    identifiers. 0 exactly when every row of that dataset has its own identifier (no person
    twice, no NULL), as its owner's ``one_row_per_person`` says. Each value depends on that
    dataset alone."""
    parts = [f"(SELECT count(*) - count(DISTINCT {quote(datasets[n].id_column)}) FROM "  # noqa: S608 - identifiers quoted
             f"{quote(n)}) AS {quote(n)}" for n in names]
    return f"SELECT {', '.join(parts)}"


def first_pass_sql(plan: Plan, datasets: Mapping[str, DatasetColumns],
                   check: Sequence[str]) -> str:
    """:func:`match_stats_sql` and :func:`one_row_check_sql` in one grouping pass, for a first
    run over inputs that all say one row per person: one row with the match columns
    (:func:`match_units_column`, :data:`MATCHED_COLUMN`) and, per dataset in ``check``, its
    persons with more than one row plus its rows without an identifier (0 exactly when its
    statement is true; each depends on that dataset alone). Two or more inputs."""
    parts = [f"SELECT {quote(datasets[name].id_column)} AS __pid, {i} AS __in "  # noqa: S608
             f"FROM {quote(name)} WHERE {quote(datasets[name].id_column)} IS NOT NULL"
             for i, name in enumerate(plan.inputs)]
    per_input = ", ".join(f"count(*) FILTER (WHERE __in = {i}) AS __n{i}"
                          for i in range(len(plan.inputs)))
    cols = [f"count(*) FILTER (WHERE __n{i} > 0) AS {match_units_column(i)}"
            for i in range(len(plan.inputs))]
    cols.append(f"count(*) FILTER (WHERE {' AND '.join(f'__n{i} > 0' for i in range(len(plan.inputs)))}) "
                f"AS {MATCHED_COLUMN}")
    for name in check:
        i = plan.inputs.index(name)
        nulls = (f"(SELECT count(*) FROM {quote(name)} WHERE "  # noqa: S608 - identifiers quoted
                 f"{quote(datasets[name].id_column)} IS NULL)")
        cols.append(f"count(*) FILTER (WHERE __n{i} > 1) + {nulls} AS {quote(name)}")
    return (f"SELECT {', '.join(cols)} FROM (SELECT {per_input} FROM "  # noqa: S608
            f"({' UNION ALL '.join(parts)}) GROUP BY __pid)")


def _bounded_input(table: str, id_col: str, values: list[str], salt: str, k: int) -> str:
    """A joined input keeping at most ``k`` rows per person, ranked by a salted hash of that
    person's own values (so a party's duplicates cannot multiply the join)."""
    cols = [id_col, *values]
    rank = ", ".join([_text(salt), *cols])
    if k == 1 and values:
        picked = ", ".join(f"__r.{v} AS {v}" for v in values)
        return (f"(SELECT {id_col}, {picked} FROM (SELECT {id_col}, arg_min(struct_pack("  # noqa: S608 - identifiers quoted, literals escaped
                f"{', '.join(values)}), hash({rank})) AS __r FROM {table} WHERE {id_col} IS NOT "
                f"NULL GROUP BY {id_col}))")
    if k == 1:
        return f"(SELECT DISTINCT {id_col} FROM {table} WHERE {id_col} IS NOT NULL)"  # noqa: S608
    return (f"(SELECT {', '.join(cols)} FROM {table} WHERE {id_col} IS NOT NULL QUALIFY "  # noqa: S608
            f"row_number() OVER (PARTITION BY {id_col} ORDER BY hash({rank})) <= {k})")


def compile_duckdb(plan: Plan, datasets: Mapping[str, DatasetColumns], *, salt: str = "",
                   measure_sql: MeasureSql = clamp_double,
                   match_stats: bool = False,
                   one_row: frozenset[str] = frozenset()) -> CompiledPlan:
    """Compile a validated plan to one DuckDB query with the platform's work fused in.

    In order: each joined input keeps at most ``max_contributions`` rows per person (ranked
    by a salted hash of that person's own values, so the choice is the platform's); the
    joins on the person; the row predicate; per-person bounding to ``max_contributions``
    rows after the join (ranked the same way); each measure's row value through
    ``measure_sql``; distinct-person counts and sums per group. Every row-level expression
    runs under ``TRY``: an error gives NULL for that cell (a false predicate, a NULL group
    or measure value), never a failed run. ``salt`` should be fixed per bundle (its digest)
    so repeated runs keep the same rows. With ``match_stats`` and two or more inputs, the
    result has one more row, :func:`match_stats_sql`'s, marked by ``__match`` (NULL in the
    other rows; a list's order is then the caller's to restore).

    ``one_row`` names inputs known to hold one row per person, no NULL identifier (checked:
    :func:`one_row_check_sql`). Bounding such an input keeps every row, so it is skipped, and
    when every input is one (each person then has at most one joined row) so is the bounding
    after the join: the same result, at the cost of a plain join and group-by.

    Raises ``QueryRejectedError`` when the plan does not validate.
    """
    validate(plan, datasets)
    alias = {name: f"t{i}" for i, name in enumerate(plan.inputs)}
    ids = {name: f"{alias[name]}.{quote(datasets[name].id_column)}" for name in plan.inputs}
    needed = referenced(plan)
    k = plan.max_contributions
    unit_ds = plan.unit_dataset
    unit = ids[unit_ds]
    source = f"{quote(unit_ds)} AS {alias[unit_ds]}"
    for join in plan.joins:
        id_col = quote(datasets[join.dataset].id_column)
        values = [quote(c) for c in sorted(needed.get(join.dataset, set()))]
        bounded = quote(join.dataset) if join.dataset in one_row else \
            _bounded_input(quote(join.dataset), id_col, values, salt, k)
        kind = {"inner": "JOIN", "left": "LEFT JOIN", "full": "FULL JOIN"}[join.kind]
        source += f" {kind} {bounded} AS {alias[join.dataset]} ON {unit} = {ids[join.dataset]}"
        if join.kind == "full":
            unit = f"coalesce({unit}, {ids[join.dataset]})"
    predicate = f"{unit} IS NOT NULL"
    if plan.where is not None:
        predicate += f" AND coalesce({_row(plan.where, alias, ids)}, FALSE)"
    if plan.release == "list":
        sql = (f"SELECT DISTINCT CAST({ids[unit_ds]} AS VARCHAR) AS __id FROM {source} "  # noqa: S608
               f"WHERE {ids[unit_ds]} IS NOT NULL AND {predicate} ORDER BY 1")
        return CompiledPlan(_with_match(sql, plan, datasets, match_stats), "list", (), ())
    cols = [f"{unit} AS __unit"]
    group_cols: list[str] = []
    for i, g in enumerate(plan.group_by):
        cols.append(f"substr(CAST({_row(g.expr, alias, ids)} AS VARCHAR), 1, {MAX_KEY_CHARS}) "
                    f"AS __g{i}")
        group_cols.append(f"__g{i}")
    value_cols: list[str] = []
    for i, m in enumerate(plan.measures):
        if m.expr is not None:
            # the cast inside TRY: a value that is not a number is NULL, never a failed run
            value = f"TRY(CAST({_sql(m.expr, alias, ids)} AS DOUBLE))"
            cols.append(f"{measure_sql(m, value)} AS __m{i}")
            value_cols.append(f"__m{i}")
    rank_args = ", ".join([_text(salt), "__unit", *group_cols, *value_cols])
    kept_cols = [*group_cols, *value_cols]
    if set(plan.inputs) <= one_row:
        # at most one joined row per person already: bounding would keep every row
        kept = "kept AS (SELECT * FROM rows)"
        ref = {c: c for c in kept_cols}
        units = "count(*) AS __units"
    elif k == 1:
        # one row per person: an aggregate (arg_min by the salted hash), cheaper than a window;
        # each person then counts once, so count(*) is the distinct-person count
        picked = (f"arg_min(struct_pack({', '.join(kept_cols)}), hash({rank_args})) AS __r"
                  if kept_cols else "NULL AS __r")
        kept = f"kept AS (SELECT __unit, {picked} FROM rows GROUP BY __unit)"  # noqa: S608
        ref = {c: f"__r.{c}" for c in kept_cols}
        units = "count(*) AS __units"
    else:
        kept = (f"kept AS (SELECT * FROM rows QUALIFY row_number() OVER (PARTITION BY __unit "  # noqa: S608
                f"ORDER BY hash({rank_args})) <= {k})")
        ref = {c: c for c in kept_cols}
        units = "count(DISTINCT __unit) AS __units"
    outer = [f"{ref[c]} AS {quote(g.name)}" for c, g in zip(group_cols, plan.group_by,
                                                             strict=True)]
    outer.append(units)
    measure_cols: list[str] = []
    for i, m in enumerate(plan.measures):
        if m.agg == "count":
            continue
        outer.append(f"coalesce(sum({ref[f'__m{i}']}), 0) AS {quote(m.name)}")
        measure_cols.append(m.name)
    group_clause = f" GROUP BY {', '.join(ref[c] for c in group_cols)}" if group_cols else ""
    sql = (
        f"WITH rows AS (SELECT {', '.join(cols)} FROM {source} WHERE {predicate}), "  # noqa: S608 - identifiers quoted, literals escaped
        f"{kept} SELECT {', '.join(outer)} FROM kept{group_clause}"
    )
    return CompiledPlan(_with_match(sql, plan, datasets, match_stats), "aggregate",
                        tuple(g.name for g in plan.group_by), tuple(measure_cols),
                        groups_persons=_has_match_row(plan, match_stats)
                        or not set(plan.inputs) <= one_row)


def _has_match_row(plan: Plan, match_stats: bool) -> bool:
    """Whether the compiled query carries the match-rate row (a join, measured this run)."""
    return match_stats and len(plan.inputs) > 1


def _with_match(sql: str, plan: Plan, datasets: Mapping[str, DatasetColumns],
                match_stats: bool) -> str:
    if not _has_match_row(plan, match_stats):
        return sql
    return f"SELECT * FROM ({sql}) UNION ALL BY NAME {match_stats_sql(plan, datasets)}"  # noqa: S608


def referenced(plan: Plan) -> dict[str, set[str]]:
    """Dataset → the columns the plan reads in expressions (id columns are read by joins)."""
    out: dict[str, set[str]] = {name: set() for name in plan.inputs}
    exprs: list[Expr] = [g.expr for g in plan.group_by]
    exprs += [m.expr for m in plan.measures if m.expr is not None]
    if plan.where is not None:
        exprs.append(plan.where)
    for expr in exprs:
        for col in columns_of(expr):
            out.setdefault(col.dataset, set()).add(col.column)
    return out


__all__: Sequence[str] = [
    "MATCHED_COLUMN",
    "MATCH_MARK",
    "Call",
    "Col",
    "CompiledPlan",
    "DatasetColumns",
    "Expr",
    "Join",
    "Lit",
    "MeasureSql",
    "Plan",
    "PlanGroup",
    "PlanMeasure",
    "clamp_double",
    "compile_duckdb",
    "expr_from_dict",
    "expr_in_words",
    "first_pass_sql",
    "match_stats_sql",
    "match_units_column",
    "matched_of",
    "one_row_check_sql",
    "plan_in_words",
    "referenced",
    "validate",
]
