"""Privacy cost of a run and budget arithmetic: pure functions, stdlib + ``sdk`` only.

Accounting rule (docs/privacy.md): a run with ``output.dp`` costs its declared (epsilon, delta)
to EVERY dataset it reads, whatever the data and whether it succeeds after decryption; a run
without DP costs nothing (its protection is the minimum group size). Datasets are charged fully,
not split, because the same person may appear in several datasets. Budgets are epsilon budgets
(the manifest's); delta is reported but not budgeted.

Every figure of spent budget, run count and remaining budget, in the worker, the SDK
(``bundle review``, ``room status``) and the coordinator's metrics, comes from here.
All arithmetic is exact ``Decimal`` with 100 digits of precision (decimal strings in signed
payloads have up to 36 digits).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation, localcontext
from typing import TYPE_CHECKING, TypedDict

from sdk.errors import PrivacyError
from sdk.protocol.spec import OutputSpec

if TYPE_CHECKING:
    from sdk.protocol.records import LogEntry

CHARGE_KIND = "budget_charged"
RUN_STARTED_KIND = "run_started"

_PREC = 100


class DatasetCost(TypedDict):
    """One dataset's line in a cost estimate (all values exact decimals)."""

    cost: Decimal
    delta: Decimal
    budget: Decimal
    spent: Decimal
    left: Decimal
    ok: bool


def run_cost(spec: OutputSpec) -> tuple[Decimal, Decimal]:
    """(epsilon, delta) one run of ``spec`` charges to each dataset it reads ((0, 0) without DP)."""
    if spec.dp is None:
        return Decimal(0), Decimal(0)
    return Decimal(spec.dp.epsilon), Decimal(spec.dp.delta)


def total_spent(charges: Iterable[tuple[str, Decimal]]) -> dict[str, Decimal]:
    """Sum (dataset, epsilon) charges, e.g. from the verified "budget charged" log entries."""
    out: dict[str, Decimal] = {}
    with localcontext() as ctx:
        ctx.prec = _PREC
        for dataset, eps in charges:
            if eps < 0:
                raise PrivacyError("a budget charge cannot be negative")
            out[dataset] = out.get(dataset, Decimal(0)) + eps
    return out


def remaining_after(
    budgets: Mapping[str, Decimal],
    spent: Mapping[str, Decimal],
    cost: Decimal = Decimal(0),
) -> dict[str, Decimal]:
    """Budget left per dataset of ``budgets`` once ``spent`` and then ``cost`` are taken.

    Negative values mean the run would overspend; a dataset missing from ``spent`` spent 0.
    """
    with localcontext() as ctx:
        ctx.prec = _PREC
        return {
            name: budget - spent.get(name, Decimal(0)) - cost for name, budget in budgets.items()
        }


def estimate(
    spec: OutputSpec,
    budgets: Mapping[str, Decimal],
    spent: Mapping[str, Decimal],
) -> dict[str, DatasetCost]:
    """Dry cost estimate for ``bundle review``: one line per dataset the bundle reads.

    ``budgets`` maps each dataset read to its epsilon budget (from the manifest); ``spent`` maps
    datasets to what they have spent (from the log). ``ok`` is true when the run fits.
    """
    eps, delta = run_cost(spec)
    left = remaining_after(budgets, spent, eps)
    return {
        name: DatasetCost(
            cost=eps,
            delta=delta,
            budget=budgets[name],
            spent=spent.get(name, Decimal(0)),
            left=left[name],
            ok=left[name] >= 0,
        )
        for name in budgets
    }


def check_budget(
    spec: OutputSpec,
    budgets: Mapping[str, Decimal],
    spent: Mapping[str, Decimal],
) -> None:
    """Raise ``PrivacyError`` when a run of ``spec`` would overspend any dataset's budget.

    The message names the datasets (manifest names), never data.
    """
    short = sorted(name for name, line in estimate(spec, budgets, spent).items() if not line["ok"])
    if short:
        raise PrivacyError(f"privacy budget exhausted for dataset(s) {short}")


@dataclass(frozen=True)
class Spent:
    """What one dataset has been charged so far: exact epsilon and delta."""

    epsilon: Decimal = Decimal(0)
    delta: Decimal = Decimal(0)


def _charge(entry: LogEntry, key: str) -> Decimal:
    try:
        value = Decimal(str(entry.details.get(key, "0")))
    except InvalidOperation as exc:
        raise PrivacyError(f"a budget charge has a malformed {key}") from exc
    if not value.is_finite() or value < 0:
        raise PrivacyError(f"a budget charge has a malformed {key}")
    return value


def spent_by_dataset(entries: Iterable[LogEntry]) -> dict[str, Spent]:
    """Dataset → what its ``budget_charged`` entries add up to (datasets never charged are
    absent). The entries must already be verified (worker signature, chain).

    Raises ``PrivacyError`` for a charge that is not a finite, non-negative decimal.
    """
    totals: dict[str, Spent] = {}
    with localcontext() as ctx:
        ctx.prec = _PREC
        for entry in entries:
            if entry.kind != CHARGE_KIND:
                continue
            name = str(entry.details.get("dataset", ""))
            old = totals.get(name, Spent())
            totals[name] = Spent(old.epsilon + _charge(entry, "epsilon"),
                                 old.delta + _charge(entry, "delta"))
    return totals


def spent_of(entries: Iterable[LogEntry], dataset: str) -> Spent:
    """What ``dataset`` has been charged, from verified log entries (see
    :func:`spent_by_dataset`)."""
    return spent_by_dataset(entries).get(dataset, Spent())


def runs_of(entries: Iterable[LogEntry], bundle_digest: str) -> int:
    """How many runs of ``bundle_digest`` have started, from verified log entries."""
    return sum(1 for e in entries if e.kind == RUN_STARTED_KIND and e.subject == bundle_digest)


def runs_affordable(left: Decimal, cost: Decimal) -> int | None:
    """How many more runs at ``cost`` fit in ``left`` (``None``: unlimited, the run costs 0)."""
    if cost <= 0:
        return None
    if left <= 0:
        return 0
    with localcontext() as ctx:
        ctx.prec = _PREC
        return int(left // cost)
