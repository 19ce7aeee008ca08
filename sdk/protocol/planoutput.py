"""The output spec a query plan implies (shared by admission, templates and the SDK).

A plan bundle's ``output`` is not free: its mode, unit, group keys, measures and contribution
bound follow from the plan, and only the privacy parameters are the author's to choose.
"""

from __future__ import annotations

from sdk.protocol.plan import Plan
from sdk.protocol.spec import GroupKey, Measure, OutputSpec

PERSON_COLUMN = "person"
"""The privacy unit of a plan's output spec: the platform's person, not a query column."""
LIST_COLUMN = "id"
"""The one column of a released list."""

def plan_output(plan: Plan, like: OutputSpec | None = None) -> OutputSpec:
    """The output spec a plan implies. From ``like`` (the bundle's spec) only the privacy
    parameters are kept: ``dp``, ``min_group_size``, ``list_min_size`` and ``max_groups``."""
    dp = None if like is None else like.dp
    min_group_size = None if like is None else like.min_group_size
    max_groups = 10_000 if like is None else like.max_groups
    if plan.release == "list":
        return OutputSpec(
            mode="list", privacy_unit=PERSON_COLUMN, list_column=LIST_COLUMN,
            list_min_size=None if like is None else like.list_min_size, dp=dp,
            min_group_size=min_group_size, max_groups=max_groups,
        )
    return OutputSpec(
        mode="aggregate",
        privacy_unit=PERSON_COLUMN,
        group_by=tuple(GroupKey(g.name, g.domain) for g in plan.group_by),
        measures=tuple(Measure(m.name, m.name, m.agg, m.lower, m.upper)
                       for m in plan.measures if m.agg != "count"),
        max_contributions=plan.max_contributions,
        dp=dp, min_group_size=min_group_size, max_groups=max_groups,
    )


__all__ = ["LIST_COLUMN", "PERSON_COLUMN", "plan_output"]
