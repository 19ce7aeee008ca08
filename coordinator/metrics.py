"""Per-room product metrics (DESIGN §8) and the Prometheus ``/metrics`` text.

Query volume and turnaround come from the run table (request → signed result); the privacy
posture is derived from the stored, worker-signed log (``budget_charged`` entries), never from
a mutable counter; output utility and match rates are what recipients reported.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal
from typing import Any

from pydantic import BaseModel
from sqlalchemy import func, select

from coordinator.auth import iso
from coordinator.context import Services
from coordinator.logstore import budget_spent, leaves_of, root_of
from coordinator.rooms import load_room, pending_count
from coordinator.storage.db import utcnow
from coordinator.storage.models import (
    CheckpointRow,
    Feedback,
    MatchRateRow,
    Room,
    RunRow,
    UploadRow,
    Worker,
)
from sdk.protocol.budget import Spent, remaining_after


class Queries(BaseModel):
    runs_total: int
    runs_last_7d: int
    by_state: dict[str, int]


class Turnaround(BaseModel):
    count: int
    median_s: float | None
    p95_s: float | None
    max_s: float | None


class DatasetPosture(BaseModel):
    dataset: str
    owner: str
    min_group_size: int
    epsilon_budget: str
    epsilon_spent: str
    epsilon_left: str
    delta_budget: str
    delta_spent: str


class LogPosture(BaseModel):
    size: int
    checkpoint_size: int
    verified_complete: bool


class Privacy(BaseModel):
    default_min_group_size: int
    datasets: list[DatasetPosture]
    log: LogPosture


class Utility(BaseModel):
    feedback: int
    changed_decision: int
    share_changed: float | None


class MatchPoint(BaseModel):
    run_id: str
    at: str
    rate: float | None


class MatchSeries(BaseModel):
    """One dataset's measured match rate against its partners' data, run after run (from the
    worker-signed receipts; None where a run withheld it)."""

    dataset: str
    party: str
    partners: list[str]
    runs: int
    withheld: int
    latest: float | None
    mean: float | None
    history: list[MatchPoint]


class Uploads(BaseModel):
    statements: int
    complete: int
    bytes: int


class RoomStatus(BaseModel):
    room_id: str
    manifest_digest: str
    complete: bool
    missing_signatures: list[str]
    queries: Queries
    turnaround: Turnaround
    privacy: Privacy
    utility: Utility
    match_rates: list[MatchSeries]
    uploads: Uploads


def _turnaround(times: list[float]) -> Turnaround:
    times = sorted(times)
    if not times:
        return Turnaround(count=0, median_s=None, p95_s=None, max_s=None)
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    return Turnaround(count=len(times), median_s=statistics.median(times), p95_s=p95,
                      max_s=times[-1])


HISTORY = 20


def _match_series(rows: Sequence[Any]) -> list[MatchSeries]:
    """Group measured rates by (dataset, party, partners), oldest first; the last
    :data:`HISTORY` points of each."""
    grouped: dict[tuple[str, str, str], list[MatchPoint]] = {}
    for dataset, party, partners, run_id, at, rate in rows:
        grouped.setdefault((dataset, party, partners), []).append(
            MatchPoint(run_id=run_id, at=iso(at), rate=rate))
    out = []
    for (dataset, party, partners), points in sorted(grouped.items()):
        rates = [p.rate for p in points if p.rate is not None]
        out.append(MatchSeries(
            dataset=dataset, party=party, partners=[p for p in partners.split(",") if p],
            runs=len(points), withheld=len(points) - len(rates),
            latest=rates[-1] if rates else None, mean=statistics.fmean(rates) if rates else None,
            history=points[-HISTORY:]))
    return out


def room_status(services: Services, room_id: str) -> RoomStatus:
    """The room's metrics. Raises ``NotFoundError`` for an unknown room.

    One read transaction; only the columns the figures need are read (never a receipt or a
    log entry's envelope, except the budget charges, which are summed from the signed log).
    """
    view = load_room(services, room_id)
    week = utcnow() - timedelta(days=7)
    with services.db.read() as s:
        runs = s.execute(select(RunRow.state, RunRow.created_at, RunRow.finished_at,
                                RunRow.receipt.is_not(None))
                         .where(RunRow.room_id == room_id)).all()
        spent = budget_spent(s, room_id)
        leaves = leaves_of(s, room_id)
        cp = s.execute(select(CheckpointRow.tree_size, CheckpointRow.root_hash)
                       .where(CheckpointRow.room_id == room_id)
                       .order_by(CheckpointRow.tree_size.desc()).limit(1)).first()
        feedback = s.execute(select(Feedback.changed_decision)
                             .where(Feedback.room_id == room_id)
                             .order_by(Feedback.created_at)).all()
        matches = s.execute(select(MatchRateRow.dataset, MatchRateRow.party,
                                   MatchRateRow.partners, MatchRateRow.run_id,
                                   MatchRateRow.created_at, MatchRateRow.rate)
                            .where(MatchRateRow.room_id == room_id)
                            .order_by(MatchRateRow.created_at, MatchRateRow.run_id)).all()
        uploads = s.execute(select(
            func.count(), func.count().filter(UploadRow.complete.is_(True)),
            func.coalesce(func.sum(UploadRow.ciphertext_size)
                          .filter(UploadRow.complete.is_(True)), 0))
            .where(UploadRow.room_id == room_id)).one()
    budgets = {d.name: Decimal(d.epsilon_budget) for d in view.manifest.datasets}
    left = remaining_after(budgets, {name: s.epsilon for name, s in spent.items()})
    datasets = []
    for d in view.manifest.datasets:
        charged = spent.get(d.name, Spent())
        datasets.append(DatasetPosture(
            dataset=d.name, owner=d.owner, min_group_size=d.min_group_size,
            epsilon_budget=d.epsilon_budget, epsilon_spent=str(charged.epsilon),
            epsilon_left=str(max(left[d.name], Decimal(0))),
            delta_budget=d.delta_budget, delta_spent=str(charged.delta)))
    verified = (cp is None and not leaves) or (
        cp is not None and cp.tree_size == len(leaves)
        and root_of(leaves).hex() == cp.root_hash)
    changed = sum(1 for (decided,) in feedback if decided)
    by_state = Counter(state for state, _, _, _ in runs)
    return RoomStatus(
        room_id=room_id, manifest_digest=view.digest, complete=view.complete,
        missing_signatures=list(view.missing),
        queries=Queries(runs_total=len(runs),
                        runs_last_7d=sum(1 for _, created, _, _ in runs if created >= week),
                        by_state=dict(by_state)),
        turnaround=_turnaround([(done - created).total_seconds()
                                for _, created, done, signed in runs
                                if done is not None and signed]),
        privacy=Privacy(default_min_group_size=view.manifest.default_min_group_size,
                        datasets=datasets,
                        log=LogPosture(size=len(leaves),
                                       checkpoint_size=0 if cp is None else cp.tree_size,
                                       verified_complete=verified)),
        utility=Utility(feedback=len(feedback), changed_decision=changed,
                        share_changed=changed / len(feedback) if feedback else None),
        match_rates=_match_series(matches),
        uploads=Uploads(statements=int(uploads[0]), complete=int(uploads[1]),
                        bytes=int(uploads[2])),
    )


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(services: Services) -> str:
    """Every room's metrics in the Prometheus text exposition format (version 0.0.4)."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str,
               samples: list[tuple[dict[str, str], float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            text = ",".join(f'{k}="{_label(v)}"' for k, v in sorted(labels.items()))
            lines.append(f"{name}{{{text}}} {value:g}" if text else f"{name} {value:g}")

    with services.db.read() as s:
        rooms = list(s.scalars(select(Room.room_id).order_by(Room.room_id)))
        workers = int(s.scalar(select(func.count()).select_from(Worker)) or 0)
    statuses = [room_status(services, r) for r in rooms]
    metric("sealroom_rooms", "gauge", "Rooms known to the coordinator.",
           [({}, float(len(rooms)))])
    metric("sealroom_pending_manifests", "gauge",
           "Manifests not yet signed by every party they list (unexpired invitations).",
           [({}, float(pending_count(services)))])
    metric("sealroom_workers_provisioned", "gauge", "Provisioned worker attestations.",
           [({}, float(workers))])
    metric("sealroom_runs", "gauge", "Runs by room and state.",
           [({"room": st.room_id, "state": k}, float(v))
            for st in statuses for k, v in sorted(st.queries.by_state.items())])
    metric("sealroom_run_turnaround_seconds", "summary",
           "Request to signed result, per room.",
           [({"room": st.room_id, "quantile": q}, v)
            for st in statuses for q, v in (("0.5", st.turnaround.median_s),
                                            ("0.95", st.turnaround.p95_s)) if v is not None])
    metric("sealroom_epsilon_spent", "gauge", "Epsilon charged per dataset (from the log).",
           [({"room": st.room_id, "dataset": d.dataset}, float(d.epsilon_spent))
            for st in statuses for d in st.privacy.datasets])
    metric("sealroom_epsilon_left", "gauge", "Epsilon budget left per dataset.",
           [({"room": st.room_id, "dataset": d.dataset}, float(d.epsilon_left))
            for st in statuses for d in st.privacy.datasets])
    metric("sealroom_log_entries", "gauge", "Entries in the room log.",
           [({"room": st.room_id}, float(st.privacy.log.size)) for st in statuses])
    metric("sealroom_upload_bytes", "gauge", "Bytes of complete sealed uploads.",
           [({"room": st.room_id}, float(st.uploads.bytes)) for st in statuses])
    metric("sealroom_match_rate", "gauge",
           "The newest measured match rate of each dataset against its partners (receipts).",
           [({"room": st.room_id, "dataset": m.dataset, "party": m.party,
              "partners": ",".join(m.partners)}, m.latest)
            for st in statuses for m in st.match_rates if m.latest is not None])
    metric("sealroom_feedback_changed_decision", "gauge",
           "Recipient feedback saying an output changed a decision.",
           [({"room": st.room_id}, float(st.utility.changed_decision)) for st in statuses])
    http = services.http_counters
    metric("sealroom_http_requests_total", "counter", "HTTP requests by status class.",
           [({"status": k}, float(v)) for k, v in sorted(http.items())])
    return "\n".join(lines) + "\n"
