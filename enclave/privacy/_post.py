"""Post-processing of released tables into the templates' headline figures.

Only already-released (protected) values are read, so nothing here costs privacy. Intervals
cover the DP noise only, at 95% by a union bound over the noise terms of each figure, using
OpenDP's discrete-Laplace accuracy (``dp.accuracy``); they are null without DP.

Bounds used (proofs in docs/privacy.md):

- a noisy count: |e| <= acc(scale_N, alpha);
- a sum of two noisy counts: acc(scale_N, alpha/2) * 2;
- a ratio O' / (O' + X') of two noisy counts: max(acc_O, acc_X) / (O' + X') at alpha/2 each;
- a mean S' / N': (acc(scale_S, alpha/2) * q + M * acc(scale_N, alpha/2)) / N', M = max(|L|,|U|).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pyarrow as pa

from enclave.privacy import dp
from enclave.privacy.aggregate import COUNT_COLUMN, PrivacyResult
from sdk.errors import InputError

Figure = tuple[str, float | None, float | None, float | None]


def _rows(table: pa.Table, key: str) -> dict[str, dict[str, object]]:
    return {str(row[key]): row for row in table.to_pylist()}


def _int(row: Mapping[str, object], column: str) -> int:
    value = row[column]
    assert isinstance(value, int)
    return value


def _float(row: Mapping[str, object], column: str) -> float:
    value = row[column]
    assert isinstance(value, int | float)
    return float(value)


def _count_acc(result: PrivacyResult, alpha: float) -> float | None:
    info = result.noise.get(COUNT_COLUMN)
    return None if info is None else dp.accuracy(info.scale, alpha)


def mean_halfwidth(result: PrivacyResult, measure: str, count: int, alpha: float) -> float | None:
    """Half-width of the (1 - alpha) noise interval of a released mean over ``count`` units."""
    info, n_info = result.noise.get(measure), result.noise.get(COUNT_COLUMN)
    if info is None or n_info is None or count <= 0:
        return None
    a_s = dp.accuracy(info.scale, alpha / 2) * float(info.quantum)
    a_n = dp.accuracy(n_info.scale, alpha / 2)
    return (a_s + float(info.bound) * a_n) / count


def _fig(
    name: str,
    value: float | None,
    half: float | None,
    lo: float = float("-inf"),
    hi: float = float("inf"),
) -> Figure:
    if value is None or half is None:
        return (name, value, None, None)
    return (name, value, max(lo, value - half), min(hi, value + half))


def _figures_table(figures: list[Figure]) -> pa.Table:
    return pa.table(
        {
            "figure": pa.array([f[0] for f in figures], pa.string()),
            "value": pa.array([f[1] for f in figures], pa.float64()),
            "ci95_low": pa.array([f[2] for f in figures], pa.float64()),
            "ci95_high": pa.array([f[3] for f in figures], pa.float64()),
        }
    )


def post_overlap(table: pa.Table, result: PrivacyResult) -> pa.Table:
    """overlap, left_count, right_count, left_match_rate, right_match_rate (null if a needed
    cell was suppressed)."""
    rows = _rows(table, "side")

    def n(side: str) -> int | None:
        row = rows.get(side)
        return None if row is None else _int(row, COUNT_COLUMN)

    both = n("both")
    a1, a2 = _count_acc(result, 0.05), _count_acc(result, 0.025)
    figures: list[Figure] = [_fig("overlap", None if both is None else float(both), a1, 0.0)]
    for party, other in (("left", "left_only"), ("right", "right_only")):
        only = n(other)
        total = None if both is None or only is None else both + only
        figures.append(
            _fig(
                f"{party}_count",
                None if total is None else float(total),
                None if a2 is None else 2 * a2,
                0.0,
            )
        )
        rate = None if total is None or both is None or total <= 0 else both / total
        if rate is not None:
            rate = min(1.0, max(0.0, rate))
        half = None if a2 is None or total is None or total <= 0 else a2 / total
        figures.append(_fig(f"{party}_match_rate", rate, half, 0.0, 1.0))
    return _figures_table(figures)


def post_incrementality(table: pa.Table, result: PrivacyResult) -> pa.Table:
    """Users, conversion rates, absolute and relative lift (and spend per user when present)."""
    rows = _rows(table, "exposed")
    exp, ctl = rows.get("1"), rows.get("0")
    a1 = _count_acc(result, 0.05)
    figures: list[Figure] = []
    for label, row in (("exposed", exp), ("control", ctl)):
        count = None if row is None else _float(row, COUNT_COLUMN)
        figures.append(_fig(f"{label}_users", count, a1, 0.0))
    for label, row in (("exposed", exp), ("control", ctl)):
        for measure, lo, hi in (("conversion_rate", 0.0, 1.0), ("spend_per_user", 0.0, None)):
            if measure not in table.column_names:
                continue
            value = None if row is None else _float(row, measure)
            half = (
                None
                if row is None
                else mean_halfwidth(result, measure, _int(row, COUNT_COLUMN), 0.05)
            )
            figures.append(
                _fig(f"{label}_{measure}", value, half, lo, float("inf") if hi is None else hi)
            )
    if exp is None or ctl is None:
        figures += [("absolute_lift", None, None, None), ("relative_lift", None, None, None)]
        return _figures_table(figures)
    r1, r0 = _float(exp, "conversion_rate"), _float(ctl, "conversion_rate")
    b1 = mean_halfwidth(result, "conversion_rate", _int(exp, COUNT_COLUMN), 0.025)
    b0 = mean_halfwidth(result, "conversion_rate", _int(ctl, COUNT_COLUMN), 0.025)
    figures.append(
        _fig("absolute_lift", r1 - r0, None if b1 is None or b0 is None else b1 + b0, -1.0, 1.0)
    )
    rel = None if r0 <= 0 else r1 / r0 - 1
    if rel is None or b1 is None or b0 is None:
        figures.append(("relative_lift", rel, None, None))
    else:
        low = max(0.0, r1 - b1) / min(1.0, r0 + b0) - 1
        high = (min(1.0, r1 + b1) / (r0 - b0) - 1) if r0 - b0 > 0 else None
        figures.append(("relative_lift", rel, low, high))
    return _figures_table(figures)


def post_enrichment(table: pa.Table, result: PrivacyResult) -> pa.Table:
    """One row per released segment: accounts, mean_score and its 95% noise interval."""
    segs, counts, means, lows, highs = [], [], [], [], []
    for row in table.to_pylist():
        n, mean = _int(row, COUNT_COLUMN), _float(row, "mean_score")
        half = mean_halfwidth(result, "mean_score", n, 0.05)
        segs.append(row["segment"])
        counts.append(n)
        means.append(mean)
        lows.append(None if half is None else mean - half)
        highs.append(None if half is None else mean + half)
    return pa.table(
        {
            "segment": pa.array(segs, pa.string()),
            "accounts": pa.array(counts, pa.int64()),
            "mean_score": pa.array(means, pa.float64()),
            "ci95_low": pa.array(lows, pa.float64()),
            "ci95_high": pa.array(highs, pa.float64()),
        }
    )


POST: Mapping[str, Callable[[pa.Table, PrivacyResult], pa.Table]] = {
    "overlap": post_overlap,
    "incrementality": post_incrementality,
    "enrichment": post_enrichment,
}


def postprocess(name: str, released_table: pa.Table, privacy_result: PrivacyResult) -> pa.Table:
    """Derived figures of template ``name`` from its released table; ``InputError`` if unknown."""
    if name not in POST:
        raise InputError(f"unknown post-processing {name!r}")
    return POST[name](released_table, privacy_result)
