"""``sealroom bundle review``: everything a party should read before it signs an approval.

It shows the bundle verified against the pinned manifest (author's signature, room binding,
validity window, admitted by the column policies, a template's plan regenerated and compared),
the plan in words with every column it reads and its owner's role, its inputs with their owners, the
output spec, the recipients, the privacy cost against each dataset's remaining epsilon budget
(derived from the verified room log, never from a counter the coordinator reports), the
approvals so far (each verified), the code, and a short risk report.
"""

from __future__ import annotations

import argparse
from typing import Any

from sdk.cli.context import Context, short
from sdk.party.bundles import load_bundle
from sdk.party.review import (
    approval_states,
    budget_lines,
    input_lines,
    plan_lines,
    risk_report,
    spec_lines,
    verified_uploads,
)
from sdk.party.trust import fetch_log, fetch_workers, load_room
from sdk.protocol.admission import guarantee_of


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
    kind = bundle.kind if bundle.template is None else f"template {bundle.template} (plan regenerated and identical)"
    ctx.say(f"kind      {kind}")
    ctx.say(f"privacy   {guarantee_of(bundle).upper()}"
            + ("" if bundle.plan is not None else ": the platform cannot check what this "
               "code computes; only your reading of it protects your data"))
    if bundle.params:
        ctx.say("params    " + ", ".join(f"{k}={v}" for k, v in sorted(bundle.params.items())))
    ctx.say(f"runs      {log.runs_of(digest)} of at most {bundle.max_runs}; valid "
            f"{bundle.not_before} .. {bundle.expires}")
    ctx.say(f"recipients {', '.join(bundle.recipients)}")
    ctx.say("")
    ctx.table(["input", "reads", "owner", "id column"], [
        (line.dataset, line.reads, line.owner, line.id_column)
        for line in input_lines(room, bundle,
                                verified_uploads(room, ctx.client().uploads(room.room_id)))
    ])
    ctx.say("")
    plan = plan_lines(room, bundle)
    if plan:
        ctx.say("plan (what runs, in words):")
        for line in plan:
            ctx.say(f"  - {line}")
        ctx.say("")
    ctx.table(["output spec", ""], spec_lines(room, bundle))
    ctx.say("")
    rows = [
        (line.dataset, str(line.budget), str(line.spent), str(line.left), str(line.cost),
         "unlimited" if line.runs_affordable is None else str(line.runs_affordable))
        for line in budget_lines(room, bundle, log)
    ]
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
    if not args.no_code and bundle.code:
        ctx.say("")
        ctx.say(f"code ({bundle.kind}):")
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
