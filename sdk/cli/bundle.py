"""``sealroom bundle``: write, submit, approve and revoke query bundles (DESIGN §5 step 4).

* ``bundle new`` signs a bundle as this party: a query plan (``--query FILE``: one SELECT in
  the plan grammar, Python builder code, or plan JSON; privacy by ``--epsilon``, ``--delta``,
  ``--min-group-size``, ``--max-contributions``, ``--domain NAME=a,b``), a ready-made template
  (``--template overlap|incrementality|enrichment`` with ``--param k=v``; inputs filled from the
  manifest), or, only where every input's owner allowed it, whole-table custom code
  (``--custom-code FILE --output-spec FILE --input DATASET``).
* ``bundle submit`` sends it to the coordinator.
* ``bundle approve`` / ``bundle revoke`` sign this party's decision on one exact bundle digest,
  after verifying the bundle against the pinned manifest (and, for templates, that its code and
  output spec are exactly what the template generates). They show what is signed (title,
  digest, datasets, privacy cost against the budget left) and ask ``Sign approval of DIGEST?
  [y/N]``; ``--yes`` signs without asking, and without a terminal and ``--yes`` they refuse
  (``E_INPUT``) rather than wait for an answer.

``bundle review`` lives in :mod:`sdk.cli.review`; the library under these is
:mod:`sdk.party.bundles`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from sdk.cli.context import Context, short
from sdk.errors import InputError, SealroomError
from sdk.party.bundles import (
    TEMPLATE_NAMES,
    PlanPrivacy,
    decide,
    load_bundle,
    parse_domains,
    parse_inputs,
    parse_params,
    plan_from_source,
    plan_output_for,
    resolve_inputs,
    template_inputs,
)
from sdk.party.files import read_envelope_file, read_json_file, write_json_file
from sdk.party.review import budget_lines, input_lines
from sdk.party.statements import make_bundle
from sdk.party.trust import PinnedRoom, fetch_log, fetch_workers, load_room
from sdk.protocol.clock import utcnow
from sdk.protocol.models import Bundle
from sdk.protocol.spec import OutputSpec
from sdk.protocol.templates import build_template
from sdk.protocol.verify import verify_bundle


def _privacy(args: argparse.Namespace) -> PlanPrivacy:
    return PlanPrivacy(
        epsilon=args.epsilon, delta=args.delta, min_group_size=args.min_group_size,
        max_contributions=args.max_contributions or 1,
        domains=parse_domains(args.domain or []),
        max_groups=args.max_groups or 10_000,
    )


def cmd_new(ctx: Context, args: argparse.Namespace) -> int:
    """Write a signed bundle file."""
    room = load_room(ctx, args.room)
    key = ctx.key()
    params = parse_params(args.param or [])
    template: str | None = None
    plan = None
    chosen = [x for x in (args.template, args.query, args.code) if x]
    if len(chosen) != 1:
        raise InputError("give one of --query FILE, --template NAME or --custom-code FILE")
    if args.template:
        if args.output_spec:
            raise InputError("--template replaces --output-spec")
        names = list(template_inputs(room, params))
        template = args.template
        built = build_template(args.template, params)
        kind, code, output, plan = "template", built.code, built.output, built.plan
    elif args.query:
        if args.output_spec or params:
            raise InputError("a plan implies its output spec: use --epsilon, --domain, ... "
                             "instead of --output-spec or --param")
        privacy = _privacy(args)
        kind, code, plan = plan_from_source(room, Path(args.query), privacy)
        output = plan_output_for(plan, privacy)
        names = list(plan.inputs)
    else:
        if not args.output_spec or not args.input:
            raise InputError("custom code needs --output-spec FILE and --input DATASET")
        path = Path(args.code)
        kind = {".py": "python", ".sql": "sql"}.get(path.suffix.lower(), "")
        if not kind:
            raise InputError("--custom-code must be a .py or .sql file")
        code = path.read_text(encoding="utf-8")
        output = OutputSpec.from_dict(read_json_file(args.output_spec, "output spec"))
        names = list(parse_inputs(args.input))
        ctx.say("custom code: privacy depends on code review; it runs only where every input's "
                "owner set allow_custom_code")
    inputs = resolve_inputs(ctx, room, names, versions=parse_inputs(args.input or []),
                            follow_latest=args.follow_latest or [],
                            statements=[read_envelope_file(f, "upload statement")
                                        for f in args.pin or []])
    recipients = args.recipient or [key.name]
    source = args.query or args.code
    envelope = make_bundle(
        key,
        room.manifest,
        room.digest,
        sequence=args.sequence or int(time.time()),
        title=args.title or (f"{template} template" if template else Path(source).stem),
        purpose=args.purpose or "",
        kind=kind,
        code=code,
        output=output,
        inputs=inputs,
        recipients=recipients,
        params=params,
        template=template,
        max_runs=args.max_runs,
        valid_days=args.valid_days,
        plan=plan,
    )
    verified = verify_bundle(envelope, room.manifest, room.digest, now=utcnow())
    out = Path(args.out) if args.out else Path(f"bundle-{short(envelope.digest())}.json")
    write_json_file(out, envelope.to_dict())
    ctx.say(f"bundle {envelope.digest()}")
    for line in input_lines(room, verified):
        ctx.say(f"  reads {line.dataset}: {line.reads}")
    ctx.say(f"wrote {out}; next: sealroom bundle submit {out}")
    return 0


def cmd_submit(ctx: Context, args: argparse.Namespace) -> int:
    """Send a bundle to the coordinator."""
    room = load_room(ctx, args.room)
    envelope, bundle = load_bundle(ctx, room, args.bundle)
    ctx.client().submit_bundle(room.room_id, envelope)
    ctx.say(f"submitted bundle {envelope.digest()} ({bundle.title})")
    ctx.say(f"every party reviews it: sealroom bundle review {short(envelope.digest())}")
    return 0


def cmd_list(ctx: Context, args: argparse.Namespace) -> int:
    """The room's bundles as the coordinator lists them (verify one with ``bundle review``)."""
    room = load_room(ctx, args.room)
    rows = [
        (str(b.get("digest", ""))[:12], b.get("title", ""), b.get("author", ""),
         b.get("created_at", ""))
        for b in ctx.client().bundles(room.room_id)
    ]
    ctx.table(["bundle", "title", "author", "submitted"], rows)
    return 0


def _summary(ctx: Context, room: PinnedRoom, digest: str, bundle: Bundle) -> None:
    """What is about to be signed: title, digest, datasets and the privacy cost against the
    budget left (verified log)."""
    ctx.say(f"bundle    {digest}")
    ctx.say(f"title     {bundle.title}")
    ctx.say(f"author    {bundle.author} (signature verified)")
    for line in input_lines(room, bundle):
        ctx.say(f"reads     {line.dataset} (owner {line.owner}): {line.reads}")
    try:
        workers, _ = fetch_workers(ctx, room)
        lines = budget_lines(room, bundle, fetch_log(ctx, room, workers))
    except SealroomError as exc:
        ctx.say(f"privacy   cost against the budget unknown: {exc.diagnostics()}")
        return
    ctx.table(["dataset", "epsilon budget", "spent", "left", "cost/run", "runs affordable"], [
        (line.dataset, str(line.budget), str(line.spent), str(line.left), str(line.cost),
         "unlimited" if line.runs_affordable is None else str(line.runs_affordable))
        for line in lines
    ])


def _decide(ctx: Context, args: argparse.Namespace, decision: str) -> int:
    if not args.yes and not ctx.can_confirm():
        raise InputError("pass --yes to confirm without a terminal")
    room = load_room(ctx, args.room)
    envelope, bundle = load_bundle(ctx, room, args.bundle)
    digest = envelope.digest()
    _summary(ctx, room, digest, bundle)
    statement = "approval" if decision == "approve" else "revocation"
    if not args.yes and not ctx.confirm(f"Sign {statement} of {digest}?"):
        raise InputError(f"not confirmed: no {statement} was signed")
    decide(ctx, room, envelope, bundle, decision, reason=args.reason or "",
           valid_days=args.valid_days, follow_latest=decision == "approve" and args.follow_latest)
    verb = "approved" if decision == "approve" else "revoked"
    ctx.say(f"{ctx.key().name} {verb} bundle {short(envelope.digest())} ({bundle.title})")
    return 0


def cmd_approve(ctx: Context, args: argparse.Namespace) -> int:
    """Sign and send this party's approval of one exact bundle digest. It shows the title,
    digest, datasets and privacy cost, and asks before it signs (--yes: without asking)."""
    return _decide(ctx, args, "approve")


def cmd_revoke(ctx: Context, args: argparse.Namespace) -> int:
    """Sign and send this party's revocation: the bundle will not run again. It shows the
    title, digest, datasets and privacy cost, and asks before it signs (--yes: without
    asking)."""
    return _decide(ctx, args, "revoke")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``bundle`` commands (``review`` is added by :mod:`sdk.cli.review`)."""
    from sdk.cli import review

    bundle = sub.add_parser("bundle", help="query bundles: write, review, approve")
    bsub = bundle.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    new = bsub.add_parser("new", parents=[common], help="write and sign a bundle")
    new.add_argument("--query", help="a plan: .sql (one SELECT), .py (builder code) or .json")
    new.add_argument("--epsilon", help="plan: DP epsilon per run (no DP without it)")
    new.add_argument("--delta", help="plan: DP delta (needed for group keys without a domain)")
    new.add_argument("--min-group-size", type=int, help="plan: a stricter minimum group size")
    new.add_argument("--max-contributions", type=int, help="plan: rows kept per person")
    new.add_argument("--max-groups", type=int, help="plan: most groups released")
    new.add_argument("--domain", action="append", help="plan: public domain NAME=a,b,c")
    new.add_argument("--custom-code", "--code", dest="code",
                     help="whole-table .py/.sql custom code (owners must allow it)")
    new.add_argument("--output-spec", help="custom code: the output spec (JSON)")
    new.add_argument("--template", choices=TEMPLATE_NAMES)
    new.add_argument("--param", action="append", help="template parameter KEY=VALUE")
    new.add_argument("--input", action="append",
                     help="DATASET (its newest upload) or DATASET@VERSION: the upload pinned")
    new.add_argument("--pin", action="append", metavar="FILE.upload.json",
                     help="pin an input to this upload statement (offline; default: the "
                          "coordinator's newest complete upload)")
    new.add_argument("--follow-latest", action="append", metavar="DATASET",
                     help="a standing bundle: runs read the newest upload of DATASET (its "
                          "owner must agree when approving)")
    new.add_argument("--recipient", action="append", help="a party that gets the output")
    new.add_argument("--title")
    new.add_argument("--purpose")
    new.add_argument("--max-runs", type=int)
    new.add_argument("--sequence", type=int)
    new.add_argument("--valid-days", type=int, default=30)
    new.add_argument("-o", "--out", help="bundle file (default bundle-DIGEST.json)")
    new.set_defaults(handler=cmd_new)
    submit = bsub.add_parser("submit", parents=[common], help="send a bundle to the coordinator")
    submit.add_argument("bundle", help="bundle file or digest")
    submit.set_defaults(handler=cmd_submit)
    listing = bsub.add_parser("list", parents=[common], help="the room's bundles")
    listing.set_defaults(handler=cmd_list)
    review.register(bsub, common)
    for name, handler, text in (
        ("approve", cmd_approve, "approve one exact bundle digest"),
        ("revoke", cmd_revoke, "revoke this party's approval"),
    ):
        p = bsub.add_parser(name, parents=[common], help=text)
        p.add_argument("bundle", help="bundle file or digest")
        p.add_argument("--reason")
        p.add_argument("--valid-days", type=int, default=30)
        p.add_argument("-y", "--yes", action="store_true",
                       help="sign without asking (needed when stdin is not a terminal)")
        if name == "approve":
            p.add_argument("--follow-latest", action="store_true",
                           help="agree that runs read uploads of your datasets made after this "
                                "approval (needed when the bundle follows them)")
        p.set_defaults(handler=handler)
