"""Metrics: query volume and turnaround over time from the verified log, and what ``room
status`` reports (match rate, output utility, request-to-result turnaround), labelled as the
coordinator's figures.

* query volume: the worker-signed ``run_started`` entries, counted per period;
* turnaround in the worker: each run's ``run_started`` to its ``run_finished``/``run_refused``
  entry, both signed by the attested worker (seconds resolution);
* match rate and output utility: the SDK measures neither yet; the page shows what recipients
  reported through ``sealroom feedback`` and the coordinator sums up (not verifiable here).
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from sdk.errors import SealroomError
from sdk.party.trust import VerifiedLog
from sdk.party.ui.charts import Series, bar_chart, count_chart, time_chart
from sdk.party.ui.render import Response
from sdk.party.ui.request import Request
from sdk.party.ui.state import snapshot
from sdk.protocol.budget import RUN_STARTED_KIND
from sdk.protocol.clock import parse_time

ENDED = ("run_finished", "run_refused")
MAX_BUCKETS = 48


def _bucket(span: timedelta) -> timedelta:
    for size in (timedelta(minutes=10), timedelta(hours=1), timedelta(days=1)):
        if span <= size * 24:
            return size
    return timedelta(days=7)


def _floor(moment: datetime, size: timedelta) -> datetime:
    epoch = datetime(2000, 1, 1, tzinfo=moment.tzinfo)
    return epoch + size * ((moment - epoch) // size)


def volume(log: VerifiedLog) -> list[tuple[str, int]]:
    """Runs started per period (10 minutes, hours, days or weeks, by the log's span)."""
    times = [
        parse_time(e.time, "log entry time") for e in log.entries if e.kind == RUN_STARTED_KIND
    ]
    if not times:
        return []
    size = _bucket(max(times) - min(times))
    counts = Counter(_floor(t, size) for t in times)
    start, end = _floor(min(times), size), _floor(max(times), size)
    buckets: list[tuple[str, int]] = []
    at = max(start, end - size * (MAX_BUCKETS - 1))
    fmt = "%Y-%m-%d" if size >= timedelta(days=1) else "%m-%d %H:%M"
    while at <= end:
        buckets.append((at.strftime(fmt), counts.get(at, 0)))
        at += size
    return buckets


def turnaround(log: VerifiedLog) -> list[tuple[datetime, float]]:
    """(end time, seconds from start to end in the worker) of every run the log ended."""
    started: dict[str, datetime] = {}
    out: list[tuple[datetime, float]] = []
    for entry in log.entries:
        moment = parse_time(entry.time, "log entry time")
        if entry.kind == RUN_STARTED_KIND:
            started[entry.run_id] = moment
        elif entry.kind in ENDED and entry.run_id in started:
            out.append((moment, (moment - started[entry.run_id]).total_seconds()))
    return out


def metrics_page(req: Request) -> Response:
    """GET /metrics"""
    snap = snapshot(req.session, req.room_id)
    status: dict[str, Any] = {}
    status_error: str | None = None
    try:
        status = dict(req.session.client().room_status(req.room_id))
    except SealroomError as exc:
        status_error = exc.diagnostics()
    charts = {}
    if snap.log is not None:
        charts["volume"] = count_chart(
            volume(snap.log), title="runs started per period", y_label="runs"
        )
        charts["turnaround"] = time_chart(
            [Series("start to result, in the worker", turnaround(snap.log))],
            title="turnaround per run",
            connect=False,
            y_label="seconds",
        )
    utility = status.get("utility") if isinstance(status.get("utility"), dict) else {}
    assert isinstance(utility, dict)
    feedback, changed = utility.get("feedback"), utility.get("changed_decision")
    if isinstance(feedback, int) and isinstance(changed, int) and feedback:
        charts["utility"] = bar_chart(
            ["changed a decision", "did not"],
            [float(changed), float(feedback - changed)],
            title="feedback on results",
            unit=" results",
        )
    raw = status.get("match_rates")
    match = [m for m in raw if isinstance(m, dict)] if isinstance(raw, list) else []
    latest = [(f"{m.get('dataset')} ({m.get('party')})", m.get("latest")) for m in match]
    if any(isinstance(v, int | float) for _, v in latest):
        charts["match"] = bar_chart(
            [k for k, _ in latest],
            [float(v) if isinstance(v, int | float) else None for _, v in latest],
            title="newest measured match rate",
        )
    return req.page(
        "metrics.html",
        "metrics",
        snap=snap,
        reported=status,
        status_error=status_error,
        charts=charts,
        utility=utility,
        match=match,
    )
