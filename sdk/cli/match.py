"""``sealroom match``: worker-free match previews before uploading.

* ``match preview --dataset NAME --with PARTY --file PATH`` counts how many distinct ids of
  this party's local file the partner's local file has too, by ECDH private-set-intersection
  cardinality through the coordinator (which relays signed, opaque messages). Both parties run
  it; whichever comes first waits for the other. Both learn the two set sizes and the
  intersection size, nothing else; both sign a ``match_preview`` statement. Refused (exit 7,
  ``E_PRIVACY``) when either set is below the pair's minimum group size.
* ``match list`` shows this party's previews in the room with their verified statements.

The steps and their promises are in :mod:`sdk.party.preview`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sdk.cli.context import Context, short
from sdk.party.events import Event
from sdk.party.preview import WORK, list_previews, preview_match
from sdk.party.trust import load_room


def _render(ctx: Context) -> None:
    """Show the protocol's work as a percentage every quarter; other events as usual."""
    base = ctx.on_event
    shown = [0]

    def on_event(event: Event) -> None:
        if event.kind == "progress" and event.label == WORK:
            quarter = 4 * event.done // max(event.total, 1)
            if quarter > shown[0]:
                shown[0] = quarter
                ctx.note(f"match preview: {25 * quarter}% of the work done")
            return
        base(event)

    ctx.on_event = on_event


def cmd_preview(ctx: Context, args: argparse.Namespace) -> int:
    """Preview the overlap of a local file with a partner's (PSI cardinality, no worker):
    prints both set sizes and the intersection size, signed by both parties."""
    room = load_room(ctx, args.room)
    _render(ctx)
    result = preview_match(ctx, room, Path(args.file), args.dataset, args.partner,
                           partner_dataset=args.partner_dataset, region=args.region,
                           strict=args.strict, timeout=args.timeout, workers=args.workers)
    p = result.preview
    ctx.say(f"match preview {short(p.session)}: {p.dataset} ({p.own_size} ids) "
            f"x {p.partner}'s {p.partner_dataset} ({p.partner_size} ids)")
    ctx.say(f"in common: {p.intersection} ({100 * result.own_rate:.1f}% of yours, "
            f"{100 * result.partner_rate:.1f}% of {p.partner}'s)")
    ctx.say(f"both statements signed and verified (minimum group size {result.min_group_size}, "
            f"{result.seconds:.1f}s)")
    return 0


def cmd_list(ctx: Context, args: argparse.Namespace) -> int:
    """List this party's match previews in the room, with their verified statements."""
    room = load_room(ctx, args.room)
    me = ctx.key().name
    rows = []
    for record in list_previews(ctx, room):
        sides = {party: (dataset, size) for party, dataset, size in record.sides}
        partner = next((p for p in sides if p != me), "-")
        mine, theirs = sides.get(me, ("-", None)), sides.get(partner, ("-", None))
        counts = sorted({s.intersection for s in record.statements.values()})
        agree = {None: f"{len(record.statements)}/2", True: "2/2 agree",
                 False: "2/2 DISAGREE"}[record.agree]
        if record.unverified:
            agree += f", {record.unverified} INVALID"
        rows.append([short(record.session), record.created_at, record.state,
                     f"{mine[0]} ({mine[1] if mine[1] is not None else '-'})",
                     f"{partner}:{theirs[0]} ({theirs[1] if theirs[1] is not None else '-'})",
                     "/".join(str(c) for c in counts) or "-", agree])
    if not rows:
        ctx.say("no match previews")
        return 0
    ctx.table(["session", "created", "state", "yours (ids)", "partner (ids)", "in common",
               "statements"], rows)
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``match preview`` and ``match list``."""
    match = sub.add_parser("match", help="match previews before uploading (PSI cardinality)")
    msub = match.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    preview = msub.add_parser("preview", parents=[common],
                              help="count the ids you and a partner have in common")
    preview.add_argument("--dataset", required=True, help="your dataset in the manifest")
    preview.add_argument("--with", dest="partner", required=True, metavar="PARTY",
                         help="the party to preview with (it runs this command too)")
    preview.add_argument("--file", required=True, metavar="PATH",
                         help="your local CSV or Parquet file of the dataset")
    preview.add_argument("--partner-dataset", metavar="NAME",
                         help="the partner's dataset (default: its one dataset of your id kind)")
    preview.add_argument("--timeout", type=float, default=1800.0, metavar="S",
                         help="give up after S seconds, waiting included (default 1800)")
    preview.add_argument("--region", metavar="CC",
                         help="region (e.g. FR) for phone numbers without +, as `data seal`")
    preview.add_argument("--strict", action="store_true",
                         help="refuse the file at the first empty or invalid identifier")
    preview.add_argument("--workers", type=int, metavar="N",
                         help="threads for the protocol's work (default: up to 2)")
    preview.set_defaults(handler=cmd_preview)
    listing = msub.add_parser("list", parents=[common],
                              help="your match previews in the room and their statements")
    listing.set_defaults(handler=cmd_list)
