"""The budgets page: epsilon spent and left per dataset, from the verified log, and the running
total over time as a chart (one per dataset, with its budget as the limit line).

Every figure comes from :mod:`sdk.protocol.budget` over verified log entries
(:meth:`sdk.party.trust.VerifiedLog.spent`, ``left``, :func:`sdk.protocol.budget.spent_of`
of each prefix of the log ending at a charge), never from the coordinator's counters.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from markupsafe import Markup

from sdk.party.trust import VerifiedLog
from sdk.party.ui.charts import Series, time_chart
from sdk.party.ui.render import Response
from sdk.party.ui.request import Request
from sdk.party.ui.state import snapshot
from sdk.protocol.budget import CHARGE_KIND, spent_of
from sdk.protocol.clock import parse_time
from sdk.protocol.models import Dataset


@dataclass(frozen=True)
class BudgetRow:
    dataset: str
    owner: str
    budget: Decimal
    spent: Decimal
    left: Decimal
    delta_budget: str
    delta_spent: Decimal
    charges: int
    chart: Markup


def spent_over_time(log: VerifiedLog, dataset: str) -> list[tuple[datetime, float]]:
    """(time, epsilon spent so far) at the start of the log and after each charge."""
    entries = log.entries
    points: list[tuple[datetime, float]] = []
    if entries:
        points.append((parse_time(entries[0].time, "log entry time"), 0.0))
    for i, entry in enumerate(entries):
        if entry.kind == CHARGE_KIND and entry.details.get("dataset") == dataset:
            spent = spent_of(entries[: i + 1], dataset).epsilon
            points.append((parse_time(entry.time, "log entry time"), float(spent)))
    return points


def _row(log: VerifiedLog, dataset: Dataset) -> BudgetRow:
    points = spent_over_time(log, dataset.name)
    budget = Decimal(dataset.epsilon_budget)
    chart = time_chart(
        [Series(f"{dataset.name}: epsilon spent", points)],
        title=f"epsilon spent on {dataset.name} over time",
        y_label="epsilon",
        y_max=float(budget),
        limit=float(budget),
        limit_label=f"budget {dataset.epsilon_budget}",
        steps=True,
    )
    spent = spent_of(log.entries, dataset.name)
    charges = sum(
        1 for e in log.entries if e.kind == CHARGE_KIND and e.details.get("dataset") == dataset.name
    )
    return BudgetRow(
        dataset.name,
        dataset.owner,
        budget,
        spent.epsilon,
        log.left(dataset),
        dataset.delta_budget,
        spent.delta,
        charges,
        chart,
    )


def budgets_page(req: Request) -> Response:
    """GET /budgets"""
    snap = snapshot(req.session, req.room_id)
    rows = [] if snap.log is None else [_row(snap.log, d) for d in snap.room.manifest.datasets]
    return req.page("budgets.html", "budgets", snap=snap, rows=rows)
