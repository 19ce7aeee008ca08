"""Python bundles as plans: a lazy expression API that builds a :class:`~sdk.protocol.plan.Plan`.

The builder never receives a data value. Every operation on a column returns another
expression, so Python control flow cannot branch on data: ``bool()`` of an expression raises,
and so do iteration, hashing for dict keys and conversion to numbers. A bundle's code calls::

    c = dataset("customers")
    v = dataset("visitors")
    q = (query(c).join(v)
         .where(c["region"].isin("eu", "us") & ~v["plan"].is_null())
         .group_by(segment=c["segment"])
         .count("people")
         .sum("minutes", v["minutes"], lower=0, upper=600)
         .max_contributions(2))
    plan = q.build()

and returns the plan. ``build`` checks nothing about roles: :func:`sdk.protocol.plan.validate`
does, at ``bundle new``, at submission and in the worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import NoReturn

from sdk.errors import QueryRejectedError
from sdk.protocol.plan import (
    MAX_INT,
    Call,
    Col,
    Expr,
    Join,
    Lit,
    Plan,
    PlanGroup,
    PlanMeasure,
)


def _lit(value: object) -> Expr:
    if isinstance(value, E):
        return value.node
    if value is None or isinstance(value, bool | str):
        return Lit(value)
    if isinstance(value, int):
        if abs(value) > MAX_INT:
            raise QueryRejectedError("plan builder: a whole number beyond 2^53")
        return Lit(value)
    if isinstance(value, Decimal):
        return Lit(str(value), decimal=True)
    raise QueryRejectedError(
        f"plan builder: {type(value).__name__} is not a literal (use int, str, bool, Decimal)")


class E:
    """A lazy row-level expression. Operators build new expressions; nothing is evaluated."""

    __slots__ = ("node",)

    def __init__(self, node: Expr) -> None:
        self.node = node

    def _call(self, fn: str, *others: object) -> E:
        return E(Call(fn, (self.node, *(_lit(o) for o in others))))

    # comparisons and logic
    def __eq__(self, other: object) -> E:  # type: ignore[override]
        return self._call("eq", other)

    def __ne__(self, other: object) -> E:  # type: ignore[override]
        return self._call("ne", other)

    def __lt__(self, other: object) -> E:
        return self._call("lt", other)

    def __le__(self, other: object) -> E:
        return self._call("le", other)

    def __gt__(self, other: object) -> E:
        return self._call("gt", other)

    def __ge__(self, other: object) -> E:
        return self._call("ge", other)

    def __and__(self, other: object) -> E:
        return self._call("and", other)

    def __or__(self, other: object) -> E:
        return self._call("or", other)

    def __invert__(self) -> E:
        return self._call("not")

    # arithmetic
    def __add__(self, other: object) -> E:
        return self._call("add", other)

    def __sub__(self, other: object) -> E:
        return self._call("sub", other)

    def __mul__(self, other: object) -> E:
        return self._call("mul", other)

    def __truediv__(self, other: object) -> E:
        return self._call("div", other)

    def __neg__(self) -> E:
        return self._call("neg")

    def __abs__(self) -> E:
        return self._call("abs")

    # functions
    def is_null(self) -> E:
        return self._call("is_null")

    def isin(self, *values: str | int | bool | Decimal) -> E:
        return self._call("in", *values)

    def between(self, low: object, high: object) -> E:
        return self._call("between", low, high)

    def coalesce(self, *others: object) -> E:
        return self._call("coalesce", *others)

    def lower(self) -> E:
        return self._call("lower")

    def upper(self) -> E:
        return self._call("upper")

    def trim(self) -> E:
        return self._call("trim")

    def length(self) -> E:
        return self._call("length")

    def substr(self, start: int, length: int) -> E:
        return self._call("substr", start, length)

    def concat(self, *others: object) -> E:
        return self._call("concat", *others)

    def to_int(self) -> E:
        return self._call("to_int")

    def to_decimal(self) -> E:
        return self._call("to_decimal")

    def to_text(self) -> E:
        return self._call("to_text")

    # what would let data reach Python control flow
    def _no_value(self, *_: object) -> NoReturn:
        raise QueryRejectedError(
            "plan builder: an expression has no value in Python (it is computed by the "
            "platform, row by row); use when_() for conditions")

    __bool__ = _no_value
    __iter__ = _no_value
    __int__ = _no_value
    __float__ = _no_value
    __index__ = _no_value
    __len__ = _no_value
    __hash__ = None  # type: ignore[assignment]


def when_(condition: E, then: object, otherwise: object = None) -> E:
    """``CASE WHEN condition THEN then ELSE otherwise END`` as an expression."""
    return E(Call("if", (condition.node, _lit(then), _lit(otherwise))))


@dataclass(frozen=True)
class Dataset:
    """A dataset of the room, by name; ``ds["column"]`` is a lazy column reference."""

    name: str

    def __getitem__(self, column: str) -> E:
        if not isinstance(column, str):
            raise QueryRejectedError("plan builder: a column is named by a string")
        return E(Col(self.name, column))

    def matched(self) -> E:
        """Whether the person has a row in this dataset (a fact of the join, not a value)."""
        return E(Call("matched", (Lit(self.name),)))


def dataset(name: str) -> Dataset:
    """A reference to the room's dataset ``name``."""
    return Dataset(name)


@dataclass(frozen=True)
class Query:
    """An immutable plan under construction; each method returns a new one."""

    first: Dataset
    joins: tuple[Join, ...] = ()
    predicate: Expr | None = None
    groups: tuple[PlanGroup, ...] = ()
    measures: tuple[PlanMeasure, ...] = ()
    contributions: int = 1
    domains: dict[str, tuple[str, ...]] = field(default_factory=dict)
    release: str = "aggregate"

    def join(self, other: Dataset, *, kind: str = "inner") -> Query:
        """Join ``other`` on the person (``inner``, ``left`` or ``full``)."""
        return replace(self, joins=(*self.joins, Join(other.name, kind)))

    def where(self, condition: E) -> Query:
        """Keep rows where ``condition`` holds (several calls are ANDed)."""
        node = condition.node if self.predicate is None \
            else Call("and", (self.predicate, condition.node))
        return replace(self, predicate=node)

    def group_by(self, domains: dict[str, list[str]] | None = None, **keys: E) -> Query:
        """Group by named expressions; ``domains`` gives public domains by name."""
        new = tuple(PlanGroup(name, key.node, None if not domains or name not in domains
                              else tuple(domains[name])) for name, key in keys.items())
        return replace(self, groups=(*self.groups, *new))

    def count(self, name: str = "people") -> Query:
        """Distinct persons per group."""
        return replace(self, measures=(*self.measures, PlanMeasure(name, "count")))

    def sum(self, name: str, value: E, *, lower: int | Decimal, upper: int | Decimal) -> Query:
        """The sum of ``value`` per group, each row clamped to [lower, upper]."""
        return replace(self, measures=(*self.measures, PlanMeasure(
            name, "sum", value.node, str(lower), str(upper))))

    def mean(self, name: str, value: E, *, lower: int | Decimal, upper: int | Decimal) -> Query:
        """The mean of ``value`` per group, each row clamped to [lower, upper]."""
        return replace(self, measures=(*self.measures, PlanMeasure(
            name, "mean", value.node, str(lower), str(upper))))

    def list_ids(self) -> Query:
        """Release the first dataset's own identifiers that pass (to its owner only)."""
        return replace(self, release="list")

    def max_contributions(self, rows: int) -> Query:
        """Rows kept per person after the join (the platform chooses which)."""
        return replace(self, contributions=rows)

    def build(self) -> Plan:
        """The plan, in its canonical form (parsed back, so it is exactly what a bundle
        carries). Raises ``InputError`` for a malformed plan."""
        plan = Plan((self.first.name, *(j.dataset for j in self.joins)), self.joins,
                    self.predicate, self.groups, self.measures, self.contributions,
                    self.release)
        return Plan.from_dict(plan.to_dict())


def query(first: Dataset) -> Query:
    """Start a plan whose privacy unit is ``first``'s id column."""
    return Query(first)


BUILDER_NAMES = {"dataset": dataset, "query": query, "when_": when_, "Decimal": Decimal}
"""What a Python bundle's code may call (the worker offers exactly these)."""
