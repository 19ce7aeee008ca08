"""The measured match rate of a run that joins (issue 10): each input's persons found in every
other input, divided by that input's persons, released by the platform like a cell.

The counts come from the plan's own query (:func:`sdk.protocol.plan.match_stats_sql`, one row
marked ``__match``). One person removed from one input changes that input's count by one and
the matched count by at most one: an L1 sensitivity of 2 for the vector
``[matched, units_0, units_1, ...]``. Without DP the counts are exact; with DP the vector gets
OpenDP's discrete Laplace noise at :func:`sdk.protocol.policy.match_rate_epsilon` (a share of
the run's epsilon, not an extra charge). Either way a rate is withheld when its matched count
or its input's count is below the run's minimum group size, so it never describes a handful
of persons. Nothing here can fail on a value in the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

import pyarrow as pa
import pyarrow.compute as pc

from sdk.protocol.models import Bundle, Manifest
from sdk.protocol.plan import MATCH_MARK, MATCHED_COLUMN, match_units_column
from sdk.protocol.records import MatchRecord

MATCH_SENSITIVITY = 2
RATE_PLACES = Decimal("0.0001")


@dataclass(frozen=True)
class MatchStats:
    """The exact counts of one run's join: persons per input (input order), and persons in
    every input."""

    units: tuple[int, ...]
    matched: int


def split_match_row(table: pa.Table, inputs: int) -> tuple[pa.Table, MatchStats | None]:
    """The plan's result without its ``__match`` row, and that row's counts (None when the
    result has no such column: a plan without a join)."""
    if MATCH_MARK not in table.column_names:
        return table, None
    marked = pc.fill_null(table.column(MATCH_MARK), False)
    row = table.filter(marked)
    rest = table.filter(pc.invert(marked))
    extra = [MATCH_MARK, MATCHED_COLUMN, *(match_units_column(i) for i in range(inputs))]
    rest = rest.drop_columns([c for c in extra if c in rest.column_names])
    if row.num_rows != 1:  # pragma: no cover - the compiled query always yields one
        return rest, None
    units = tuple(int(row.column(match_units_column(i))[0].as_py() or 0) for i in range(inputs))
    return rest, MatchStats(units, int(row.column(MATCHED_COLUMN)[0].as_py() or 0))


def _rate(matched: int, units: int, floor: int) -> str | None:
    if matched < floor or units < floor or units <= 0:
        return None
    value = min(Decimal(1), max(Decimal(0), Decimal(matched) / Decimal(units)))
    return str(value.quantize(RATE_PLACES, rounding=ROUND_HALF_EVEN))


def release_match(stats: MatchStats, bundle: Bundle, manifest: Manifest, *,
                  min_group_size: int, epsilon: Decimal) -> tuple[MatchRecord, ...]:
    """One :class:`MatchRecord` per input, in input order: exact counts when ``epsilon`` is 0
    (a run without DP), otherwise counts with epsilon-DP noise (OpenDP); a rate whose counts
    are below ``min_group_size`` is withheld (``rate`` None).

    Raises ``PrivacyError`` only for a wrong OpenDP setup (never for the data).
    """
    counts = [stats.matched, *stats.units]
    if epsilon > 0:
        from enclave.privacy import dp

        dp.check_feature_gate()
        counts = list(dp.noisy_counts(counts, MATCH_SENSITIVITY, epsilon).values)
    matched, units = counts[0], counts[1:]
    assert bundle.plan is not None
    return tuple(
        MatchRecord(name, manifest.dataset(name).owner, _rate(matched, n, min_group_size))
        for name, n in zip(bundle.plan.inputs, units, strict=True)
    )


__all__ = ["MATCH_SENSITIVITY", "MatchStats", "release_match", "split_match_row"]
