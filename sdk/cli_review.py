"""``sealroom bundle review``: everything a party should read before it signs an approval.

It shows the bundle verified against the pinned manifest (author's signature, room binding,
validity window, template code regenerated and compared), its inputs with their owners, the
output spec, the recipients, the privacy cost against each dataset's remaining epsilon budget
(derived from the verified room log, never from a counter the coordinator reports), the
approvals so far (each verified), the code, and a short risk report.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sdk.cli_bundle import load_bundle
from sdk.cli_common import Context, short
from sdk.cli_state import PinnedRoom, VerifiedLog, fetch_log, fetch_workers, load_room, utcnow
from sdk.errors import SealroomError
from sdk.protocol.dsse import Envelope, open_envelope
from sdk.protocol.models import Approval, Bundle
from sdk.protocol.spec import OutputSpec

SMALL_GROUP = 10
MANY_RUNS = 10
LARGE_EPSILON = Decimal(1)


def effective_min_group(room: PinnedRoom, bundle: Bundle) -> int:
    """The minimum group size the worker enforces: the strictest of the spec, the room's
    default and every dataset read."""
    sizes = [room.manifest.default_min_group_size]
    sizes += [room.manifest.dataset(d).min_group_size for d in bundle.datasets]
    if bundle.output.min_group_size is not None:
        sizes.append(bundle.output.min_group_size)
    return max(sizes)


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
    floor = effective_min_group(room, bundle)
    if floor < SMALL_GROUP:
        risks.append(f"SMALL MINIMUM GROUP SIZE: {floor} distinct units")
    if bundle.max_runs > MANY_RUNS:
        risks.append(f"MANY RUNS: up to {bundle.max_runs} runs of the same query")
    if spec.dp is not None and log is not None:
        for name in bundle.datasets:
            left = Decimal(room.manifest.dataset(name).epsilon_budget) - log.spent(name)
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
        risks.append(f"each privacy unit may contribute {spec.max_contributions} rows")
    if bundle.kind in ("python", "sql"):
        risks.append(f"CUSTOM {bundle.kind.upper()} CODE: read it below")
    if room.manifest.workers.allow_unisolated:
        risks.append("the room accepts UNISOLATED workers (development setting)")
    owners = {room.manifest.dataset(d).owner for d in bundle.datasets}
    for recipient in bundle.recipients:
        if recipient not in owners:
            risks.append(f"recipient {recipient} owns none of the inputs")
    return risks


def approval_states(
    room: PinnedRoom, bundle_digest: str, envelopes: Sequence[Envelope]
) -> dict[str, str]:
    """Party → "approved"/"revoked"/"invalid: ..." for the approvals the coordinator holds;
    each is verified (signature by the party it names, binding to this exact bundle)."""
    states: dict[str, str] = {}
    now = utcnow()
    for envelope in envelopes:
        try:
            payload, result = open_envelope(envelope, Approval.KIND, room.manifest.signing_keys())
            approval = Approval.from_dict(payload)
            if approval.party not in result.signed:
                raise SealroomError("signed by another party")
            if approval.bundle_digest != bundle_digest or approval.manifest_digest != room.digest:
                raise SealroomError("bound to another bundle or manifest")
            expired = approval.expires <= now.strftime("%Y-%m-%dT%H:%M:%SZ")
        except SealroomError as exc:
            states.setdefault("?", f"invalid approval: {exc.message}")
            continue
        if approval.decision == "revoke":
            states[approval.party] = "REVOKED" + (f" ({approval.reason})" if approval.reason else "")
        elif states.get(approval.party, "").startswith("REVOKED"):
            continue
        else:
            states[approval.party] = "expired" if expired else f"approved until {approval.expires}"
    return states


def _spec_rows(room: PinnedRoom, bundle: Bundle) -> list[tuple[str, str]]:
    spec = bundle.output
    rows = [("mode", spec.mode), ("privacy unit", spec.privacy_unit)]
    for g in spec.group_by:
        domain = "from the data" if g.domain is None else ", ".join(g.domain)
        rows.append((f"group by {g.column}", domain))
    for m in spec.measures:
        rows.append((f"measure {m.name}", f"{m.agg}({m.column}) clamped to [{m.lower}, {m.upper}]"))
    rows.append(("max contributions/unit", str(spec.max_contributions)))
    rows.append(("min group size", f"{effective_min_group(room, bundle)} (enforced)"))
    rows.append(("differential privacy", "none" if spec.dp is None
                 else f"epsilon {spec.dp.epsilon}, delta {spec.dp.delta} per run"))
    if spec.mode == "list":
        rows.append(("list column", str(spec.list_column)))
        rows.append(("list min size", str(spec.list_min_size)))
    rows.append(("max groups", str(spec.max_groups)))
    return rows


def cmd_review(ctx: Context, args: argparse.Namespace) -> int:
    """Print the bundle, its privacy cost against the verified budget, approvals and risks."""
    room = load_room(ctx, args.room)
    envelope, bundle = load_bundle(ctx, room, args.bundle)
    digest = envelope.digest()
    workers, _ = fetch_workers(ctx, room)
    log = fetch_log(ctx, room, workers)
    approvals = approval_states(room, digest, ctx.client().approvals(room.room_id, digest))
    ctx.say(f"bundle    {digest}")
    ctx.say(f"title     {bundle.title}")
    ctx.say(f"purpose   {bundle.purpose or '-'}")
    ctx.say(f"author    {bundle.author} (signature verified)   sequence {bundle.sequence}")
    kind = bundle.kind if bundle.template is None else f"template {bundle.template} (code regenerated and identical)"
    ctx.say(f"kind      {kind}")
    if bundle.params:
        ctx.say("params    " + ", ".join(f"{k}={v}" for k, v in sorted(bundle.params.items())))
    ctx.say(f"runs      {log.runs_of(digest)} of at most {bundle.max_runs}; valid "
            f"{bundle.not_before} .. {bundle.expires}")
    ctx.say(f"recipients {', '.join(bundle.recipients)}")
    ctx.say("")
    ctx.table(["input", "version", "owner", "id column"], [
        (i.dataset, "latest" if i.version is None else i.version,
         room.manifest.dataset(i.dataset).owner, room.manifest.dataset(i.dataset).id_column)
        for i in bundle.inputs
    ])
    ctx.say("")
    ctx.table(["output spec", ""], _spec_rows(room, bundle))
    ctx.say("")
    cost = bundle.output.epsilon
    rows = []
    for name in bundle.datasets:
        budget = Decimal(room.manifest.dataset(name).epsilon_budget)
        left = budget - log.spent(name)
        runs_left = "unlimited" if cost == 0 else str(int(left // cost)) if left >= 0 else "0"
        rows.append((name, str(budget), str(log.spent(name)), str(left), str(cost), runs_left))
    ctx.table(["dataset", "epsilon budget", "spent", "left", "cost/run", "runs affordable"], rows)
    ctx.say("")
    ctx.table(["party", "decision"], [
        (p.name, approvals.get(p.name, "not yet")) for p in room.manifest.parties
    ] + ([("?", approvals["?"])] if "?" in approvals else []))
    ctx.say("")
    risks = risk_report(room, bundle, log)
    ctx.say("risk report:" if risks else "risk report: nothing stood out")
    for risk in risks:
        ctx.say(f"  - {risk}")
    if not args.no_code:
        ctx.say("")
        ctx.say(f"code ({'sql' if bundle.kind == 'template' else bundle.kind}):")
        for line in bundle.code.splitlines():
            ctx.say(f"  | {line}")
    ctx.say("")
    ctx.say(f"to approve: sealroom bundle approve {short(digest)}")
    return 0


def register(bsub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``bundle review``."""
    review = bsub.add_parser("review", parents=[common], help="what you approve, and its risks")
    review.add_argument("bundle", help="bundle file or digest")
    review.add_argument("--no-code", action="store_true", help="do not print the code")
    review.set_defaults(handler=cmd_review)
