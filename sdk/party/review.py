"""What a party should weigh before it signs an approval: a risk report, the privacy cost
against each dataset's remaining budget (derived from the verified room log, never from a
counter the coordinator reports), and the approvals held so far, each verified.

The rules come from :mod:`sdk.protocol` (minimum group size, budget arithmetic, approvals), so
review shows exactly what the worker will enforce.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from sdk.party.trust import PinnedRoom, VerifiedLog
from sdk.protocol.approvals import approval_status
from sdk.protocol.budget import remaining_after, run_cost, runs_affordable
from sdk.protocol.clock import utcnow
from sdk.protocol.dsse import Envelope
from sdk.protocol.models import Bundle, Upload
from sdk.protocol.policy import effective_min_group_size
from sdk.protocol.spec import OutputSpec

SMALL_GROUP = 10
MANY_RUNS = 10
LARGE_EPSILON = Decimal(1)


def risk_report(room: PinnedRoom, bundle: Bundle, log: VerifiedLog | None) -> list[str]:
    """Short warnings a reviewer should weigh; an empty list means nothing stood out."""
    spec: OutputSpec = bundle.output
    risks: list[str] = []
    if spec.mode == "list":
        risks.append(
            f"LIST MODE: releases identifiers to {', '.join(bundle.recipients)} "
            f"(only those already in the recipient's own upload, at least "
            f"{spec.list_min_size or 'the default'} of them)"
        )
    if spec.dp is None and spec.mode == "aggregate":
        risks.append(
            "NO DIFFERENTIAL PRIVACY: exact aggregates; protection is the minimum group size "
            "only, and repeated or overlapping queries can difference out individuals"
        )
    if spec.dp is not None and spec.epsilon > LARGE_EPSILON:
        risks.append(f"LARGE EPSILON: {spec.dp.epsilon} per run (weak noise)")
    floor = effective_min_group_size(room.manifest, bundle)
    if floor < SMALL_GROUP:
        risks.append(f"SMALL MINIMUM GROUP SIZE: {floor} distinct units")
    if bundle.max_runs > MANY_RUNS:
        risks.append(f"MANY RUNS: up to {bundle.max_runs} runs of the same query")
    if spec.dp is not None and log is not None:
        for line in budget_lines(room, bundle, log):
            name, left = line.dataset, line.left
            if spec.epsilon * bundle.max_runs > left:
                risks.append(
                    f"BUDGET: {bundle.max_runs} runs at {spec.dp.epsilon} could spend all of "
                    f"{name!r}'s remaining {left}"
                )
    open_groups = [g.column for g in spec.group_by if g.domain is None]
    if open_groups:
        risks.append(
            f"DATA-DEPENDENT GROUPS: {', '.join(open_groups)} have no public domain (group "
            "values come from the data)"
        )
    if spec.max_contributions > 1:
        risks.append(f"each person may contribute {spec.max_contributions} rows")
    if bundle.custom_code:
        risks.append(f"CUSTOM {bundle.kind.upper()} CODE: privacy depends on code review; the "
                     "platform cannot check what it computes; read it below")
    if room.manifest.workers.allow_unisolated:
        risks.append("the room accepts UNISOLATED workers (development setting)")
    owners = {room.manifest.dataset(d).owner for d in bundle.datasets}
    for recipient in bundle.recipients:
        if recipient not in owners:
            risks.append(f"recipient {recipient} owns none of the inputs")
    return risks


@dataclass(frozen=True)
class ColumnUse:
    """One column a plan reads: its dataset, the dataset's owner, and the role the owner gave
    it (``id`` for the id column, which is joined only)."""

    dataset: str
    owner: str
    column: str
    role: str


def columns_used(room: PinnedRoom, bundle: Bundle) -> list[ColumnUse]:
    """Every column a plan bundle reads, dataset by dataset (the id column first), with its
    owner's role. Empty for custom code: the platform cannot tell what whole-table code reads."""
    from sdk.protocol.plan import referenced

    if bundle.plan is None:
        return []
    out: list[ColumnUse] = []
    for name, columns in sorted(referenced(bundle.plan).items()):
        dataset = room.manifest.dataset(name)
        out.append(ColumnUse(name, dataset.owner, dataset.id_column, "id"))
        out += [ColumnUse(name, dataset.owner, c, dataset.role(c)) for c in sorted(columns)]
    return out


FOLLOWS_LATEST = "every new upload: runs will read versions uploaded after approval"


@dataclass(frozen=True)
class InputLine:
    """One input as review shows it: which data a run reads and whose it is."""

    dataset: str
    reads: str
    owner: str
    id_column: str


def input_lines(room: PinnedRoom, bundle: Bundle,
                uploads: Mapping[str, Upload] | None = None) -> list[InputLine]:
    """Each input's pinned version and upload digest (what every approval binds), with the
    row count and seal-time drops its owner's statement signs when ``uploads`` (statement
    digest → verified upload) holds it; for a ``follow_latest`` input, :data:`FOLLOWS_LATEST`."""
    out = []
    for item in bundle.inputs:
        dataset = room.manifest.dataset(item.dataset)
        if item.follow_latest:
            reads = FOLLOWS_LATEST
        else:
            reads = f"version {item.version} (upload {(item.upload or '')[:12]})"
            upload = (uploads or {}).get(item.upload or "")
            if upload is not None:
                dropped = sum(n for _, n in upload.rejected)
                reads += f": {upload.row_count} rows" + (
                    f", {dropped} dropped at seal time ("
                    + ", ".join(f"{r}: {n}" for r, n in upload.rejected) + ")"
                    if dropped else "")
                if upload.one_row_per_person:
                    reads += ", one row per person (checked by the worker)"
        out.append(InputLine(item.dataset, reads, dataset.owner, dataset.id_column))
    return out


def verified_uploads(room: PinnedRoom, listed: Sequence[object]) -> dict[str, Upload]:
    """The coordinator's upload listing as statement digest → upload, keeping only statements
    that verify against the pinned manifest (the rest are left out, never shown)."""
    from sdk.errors import SealroomError
    from sdk.protocol.verify import verify_upload

    out: dict[str, Upload] = {}
    for info in listed:
        if not isinstance(info, dict):
            continue
        try:
            envelope = Envelope.from_dict(info.get("statement"))
            out[envelope.digest()] = verify_upload(envelope, room.manifest, room.digest)
        except SealroomError:
            continue
    return out


def plan_lines(room: PinnedRoom, bundle: Bundle) -> list[str]:
    """The plan in words, then every column it reads with its owner's role: what a reviewer
    approves (the worker runs exactly this plan). Empty for custom code."""
    from sdk.protocol.plan import plan_in_words

    plan = bundle.plan
    if plan is None:
        return []
    lines = list(plan_in_words(plan))
    by_dataset: dict[str, list[ColumnUse]] = {}
    for use in columns_used(room, bundle):
        by_dataset.setdefault(use.dataset, []).append(use)
    for name, uses in by_dataset.items():
        used = [f"{u.column} (id, joined only)" if u.role == "id" else f"{u.column} ({u.role})"
                for u in uses]
        lines.append(f"reads {name} (owner {uses[0].owner}): {', '.join(used)}")
    if bundle.kind == "python":
        lines.append("the Python code below is the author's builder; what runs is this plan")
    return lines


def spec_lines(room: PinnedRoom, bundle: Bundle) -> list[tuple[str, str]]:
    """The output spec as (what, value) lines, with the minimum group size the worker will
    enforce (the strictest of the room's, the datasets' and the bundle's)."""
    spec = bundle.output
    rows = [("mode", spec.mode), ("privacy unit", spec.privacy_unit)]
    for g in spec.group_by:
        domain = "from the data" if g.domain is None else ", ".join(g.domain)
        rows.append((f"group by {g.column}", domain))
    for m in spec.measures:
        rows.append((f"measure {m.name}", f"{m.agg}({m.column}) clamped to [{m.lower}, {m.upper}]"))
    rows.append(("max contributions/unit", str(spec.max_contributions)))
    rows.append(("min group size", f"{effective_min_group_size(room.manifest, bundle)} (enforced)"))
    rows.append(("differential privacy", "none" if spec.dp is None
                 else f"epsilon {spec.dp.epsilon}, delta {spec.dp.delta} per run"))
    if spec.mode == "list":
        rows.append(("list column", str(spec.list_column)))
        rows.append(("list min size", str(spec.list_min_size)))
    rows.append(("max groups", str(spec.max_groups)))
    return rows


def approval_states(
    room: PinnedRoom, bundle_digest: str, envelopes: Sequence[Envelope]
) -> dict[str, str]:
    """Party → "approved until ..."/"REVOKED (reason)"/"expired" for the approvals the
    coordinator holds, each verified (:func:`sdk.protocol.approvals.approval_status`); a
    statement that fails its checks appears under "?"."""
    status = approval_status(envelopes, room.manifest, room.digest, bundle_digest, now=utcnow())
    states: dict[str, str] = {}
    for party, expires in status.approved.items():
        states[party] = f"approved until {expires}"
    for party, reason in status.revoked.items():
        states[party] = "REVOKED" + (f" ({reason})" if reason else "")
    for party in status.expired:
        states[party] = "expired"
    if status.invalid:
        states["?"] = f"invalid approval: {status.invalid[0]}"
    return states


@dataclass(frozen=True)
class BudgetLine:
    """One dataset a bundle reads: its epsilon budget, spent so far, left, one run's cost and
    how many runs that leaves room for (``None``: unlimited)."""

    dataset: str
    budget: Decimal
    spent: Decimal
    left: Decimal
    cost: Decimal
    runs_affordable: int | None


def budget_lines(room: PinnedRoom, bundle: Bundle, log: VerifiedLog) -> list[BudgetLine]:
    """The budget position of every dataset ``bundle`` reads, from the verified log."""
    cost, _delta = run_cost(bundle.output)
    budgets = {n: Decimal(room.manifest.dataset(n).epsilon_budget) for n in bundle.datasets}
    spent = {n: log.spent(n) for n in bundle.datasets}
    left = remaining_after(budgets, spent)
    return [BudgetLine(n, budgets[n], spent[n], left[n], cost, runs_affordable(left[n], cost))
            for n in bundle.datasets]
