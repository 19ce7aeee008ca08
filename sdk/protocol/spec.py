"""The output specification of a query bundle (DESIGN §6).

The spec is part of the signed bundle: every party approves exactly which aggregates may leave,
with which bounds, minimum group size and differential-privacy parameters. The supervisor in the
worker enforces it whatever the query code returns.

Modes:

- ``aggregate``: the query returns one row per contribution with a privacy-unit column, group
  columns and measure columns. The platform bounds contributions per unit, clamps measures,
  counts distinct units per group, suppresses small groups and adds DP noise when declared.
- ``list``: the query returns identifiers; only those present in the single recipient's own
  upload are released, and only when the list reaches ``list_min_size``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sdk.errors import InputError
from sdk.protocol.fields import (
    check_decimal,
    check_keys,
    check_name,
    expect_mapping,
    get_choice,
    get_decimal,
    get_int,
    get_list,
    get_name,
    get_opt_int,
)

MODES = ("aggregate", "list")
AGGREGATIONS = ("sum", "mean")
MAX_DOMAIN = 10_000


@dataclass(frozen=True)
class GroupKey:
    """A group-by column and, optionally, its public domain of values (as strings).

    With DP, a group key without a public domain is released through DP thresholding.
    """

    column: str
    domain: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "domain": None if self.domain is None else list(self.domain)}

    @classmethod
    def from_dict(cls, data: object) -> GroupKey:
        where = "output.group_by[]"
        d = expect_mapping(data, where)
        check_keys(d, where, ["column"], ["domain"])
        domain_raw = d.get("domain")
        domain: tuple[str, ...] | None = None
        if domain_raw is not None:
            items = get_list(d, "domain", where, max_items=MAX_DOMAIN)
            if not all(isinstance(i, str) for i in items) or len(set(items)) != len(items):
                raise InputError(f"{where}.domain: expected distinct strings")
            domain = tuple(items)
        return cls(column=get_name(d, "column", where), domain=domain)


@dataclass(frozen=True)
class Measure:
    """A released measure: ``agg`` of ``column`` clamped to [lower, upper] (decimal strings)."""

    name: str
    column: str
    agg: str
    lower: str
    upper: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "column": self.column,
            "agg": self.agg,
            "lower": self.lower,
            "upper": self.upper,
        }

    @classmethod
    def from_dict(cls, data: object) -> Measure:
        where = "output.measures[]"
        d = expect_mapping(data, where)
        check_keys(d, where, ["name", "column", "agg", "lower", "upper"])
        lower = get_decimal(d, "lower", where)
        upper = get_decimal(d, "upper", where)
        if Decimal(lower) > Decimal(upper):
            raise InputError(f"{where}: lower bound above upper bound")
        return cls(
            name=get_name(d, "name", where),
            column=get_name(d, "column", where),
            agg=get_choice(d, "agg", where, AGGREGATIONS),
            lower=lower,
            upper=upper,
        )


@dataclass(frozen=True)
class DPSpec:
    """Differential-privacy parameters charged per run (decimal strings)."""

    epsilon: str
    delta: str = "0"

    def to_dict(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon, "delta": self.delta}

    @classmethod
    def from_dict(cls, data: object) -> DPSpec:
        where = "output.dp"
        d = expect_mapping(data, where)
        check_keys(d, where, ["epsilon"], ["delta"])
        epsilon = get_decimal(d, "epsilon", where, non_negative=True)
        if Decimal(epsilon) <= 0:
            raise InputError(f"{where}.epsilon: must be positive")
        delta = check_decimal(d.get("delta", "0"), f"{where}.delta", non_negative=True)
        if Decimal(delta) >= 1:
            raise InputError(f"{where}.delta: must be below 1")
        return cls(epsilon=epsilon, delta=delta)


@dataclass(frozen=True)
class OutputSpec:
    """What a run may release, enforced by the platform (see module docstring)."""

    mode: str
    privacy_unit: str
    group_by: tuple[GroupKey, ...] = ()
    measures: tuple[Measure, ...] = ()
    max_contributions: int = 1
    min_group_size: int | None = None
    dp: DPSpec | None = None
    list_column: str | None = None
    list_min_size: int | None = None
    max_groups: int = 10_000

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "privacy_unit": self.privacy_unit,
            "group_by": [g.to_dict() for g in self.group_by],
            "measures": [m.to_dict() for m in self.measures],
            "max_contributions": self.max_contributions,
            "min_group_size": self.min_group_size,
            "dp": None if self.dp is None else self.dp.to_dict(),
            "list_column": self.list_column,
            "list_min_size": self.list_min_size,
            "max_groups": self.max_groups,
        }

    @property
    def epsilon(self) -> Decimal:
        """Epsilon charged by one run (zero without DP)."""
        return Decimal(self.dp.epsilon) if self.dp else Decimal(0)

    @property
    def delta(self) -> Decimal:
        """Delta charged by one run (zero without DP)."""
        return Decimal(self.dp.delta) if self.dp else Decimal(0)

    @classmethod
    def from_dict(cls, data: object) -> OutputSpec:
        where = "output"
        d = expect_mapping(data, where)
        check_keys(
            d,
            where,
            ["mode", "privacy_unit"],
            [
                "group_by",
                "measures",
                "max_contributions",
                "min_group_size",
                "dp",
                "list_column",
                "list_min_size",
                "max_groups",
            ],
        )
        mode = get_choice(d, "mode", where, MODES)
        group_by = (
            tuple(GroupKey.from_dict(g) for g in get_list(d, "group_by", where, max_items=8))
            if "group_by" in d
            else ()
        )
        measures = (
            tuple(Measure.from_dict(m) for m in get_list(d, "measures", where, max_items=32))
            if "measures" in d
            else ()
        )
        names = [m.name for m in measures] + [g.column for g in group_by]
        if len(set(names)) != len(names):
            raise InputError(f"{where}: measure names and group columns must be distinct")
        list_column = (
            None
            if d.get("list_column") is None
            else check_name(d["list_column"], f"{where}.list_column")
        )
        spec = cls(
            mode=mode,
            privacy_unit=get_name(d, "privacy_unit", where),
            group_by=group_by,
            measures=measures,
            max_contributions=get_int(d, "max_contributions", where, minimum=1, maximum=1000)
            if "max_contributions" in d
            else 1,
            min_group_size=get_opt_int(d, "min_group_size", where, minimum=1, maximum=10**9),
            dp=None if d.get("dp") is None else DPSpec.from_dict(d["dp"]),
            list_column=list_column,
            list_min_size=get_opt_int(d, "list_min_size", where, minimum=1, maximum=10**9),
            max_groups=get_int(d, "max_groups", where, minimum=1, maximum=1_000_000)
            if "max_groups" in d
            else 10_000,
        )
        if mode == "list" and spec.list_column is None:
            raise InputError(f"{where}: list mode needs list_column")
        if mode == "aggregate" and spec.list_column is not None:
            raise InputError(f"{where}: list_column is only for list mode")
        return spec
