"""``sealroom run``, ``result get`` and ``feedback``.

* ``run BUNDLE`` asks the coordinator to run an approved bundle (with an idempotency key, so a
  retried request never starts two runs) and waits for its terminal state. A refused or failed
  run exits with the code of its error class (e.g. ``E_SIGNATURE`` when a party has not approved
  or has revoked).
* ``result get RUN`` fetches the receipt and this party's sealed output, verifies the receipt
  (attested worker, room, output digests, its log entry's inclusion under its checkpoint, and
  that checkpoint's consistency with the verified log and the last checkpoint seen here),
  decrypts with this party's key, checks the plaintext digest, writes CSV or Parquet, prints a
  table and keeps a self-contained receipt file (see :mod:`sdk.party.receipts`).

The library under these commands is :mod:`sdk.party.results`.
* ``feedback RUN`` records whether a result changed a decision (output-utility metric).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sdk.cli.context import Context, short
from sdk.errors import error_for_code
from sdk.party.bundles import load_bundle
from sdk.party.files import write_json_file
from sdk.party.receipts import receipt_lines
from sdk.party.results import (
    decode_result,
    decrypt_output,
    fetch_verified_receipt,
    raise_for_run,
    run_state,
    start_run,
    wait_for_run,
    write_result,
)
from sdk.party.trust import load_room


def cmd_run(ctx: Context, args: argparse.Namespace) -> int:
    """Start a run of an approved bundle and wait for its end."""
    room = load_room(ctx, args.room)
    envelope, bundle = load_bundle(ctx, room, args.bundle)
    run = start_run(ctx, room, envelope, idempotency_key=args.idempotency_key)
    run_id = str(run["run_id"])
    ctx.note(f"run {run_id} of {short(envelope.digest())} ({bundle.title}) queued")
    if not args.no_wait:
        run = wait_for_run(ctx, room, run, timeout=args.timeout)
    status = run_state(run)
    ctx.say(f"run {run_id}: {status}")
    raise_for_run(run)
    if status == "succeeded":
        ctx.say(f"next: sealroom result get {run_id}")
    return 0


def cmd_result(ctx: Context, args: argparse.Namespace) -> int:
    """Fetch, verify, decrypt and write one run's result."""
    room = load_room(ctx, args.room)
    rfile, verified = fetch_verified_receipt(ctx, room, args.run, with_output=True)
    receipt = verified.receipt
    if args.receipt_out:
        write_json_file(args.receipt_out, rfile.to_dict())
    if receipt.status != "succeeded":
        message = str(receipt.details.get("message") or f"run {receipt.status}")
        raise error_for_code(receipt.error_code or "E_INTERNAL", f"run {args.run} {receipt.status}: {message}")
    plaintext = decrypt_output(ctx, room, rfile, receipt)
    columns, rows, meta = decode_result(plaintext)
    if args.document:
        Path(args.document).write_bytes(plaintext)
    out = Path(args.out) if args.out else None
    if out is not None:
        write_result(out, columns, rows)
    ctx.table(columns, rows)
    privacy = receipt.privacy
    if privacy is not None:
        ctx.say(
            f"privacy: {privacy.mode} mode, min group {privacy.min_group_size}, "
            f"privacy {privacy.guarantee}, epsilon charged "
            f"{privacy.epsilon_charged}; budget left "
            + ", ".join(f"{k} {v}" for k, v in sorted(privacy.budget_left.items()))
        )
    if meta.get("mechanism"):
        ctx.say(f"noise: {meta['mechanism']}")
    for line in receipt_lines(receipt):
        ctx.say(line)
    ctx.say(
        f"receipt verified: worker {short(receipt.attestation_digest)} "
        f"({receipt.attestation} attestation, isolation {receipt.isolation}), log entry "
        f"{receipt.log_index} included in checkpoint {receipt.checkpoint.tree_size}/"
        f"{short(receipt.checkpoint.root_hash)}"
    )
    ctx.say(f"receipt file {ctx.home.receipt_path(room.room_id, args.run)}"
            + (f"; wrote {out}" if out else ""))
    return 0


def cmd_list(ctx: Context, args: argparse.Namespace) -> int:
    """The room's runs as the coordinator lists them (verify one with ``result get``)."""
    room = load_room(ctx, args.room)
    rows = [
        (r.get("run_id"), str(r.get("bundle_digest", ""))[:12], run_state(r),
         r.get("error_code"), ",".join(r.get("recipients") or []), r.get("created_at"))
        for r in ctx.client().runs(room.room_id)
    ]
    ctx.table(["run", "bundle", "state", "error", "recipients", "requested"], rows)
    return 0


def cmd_feedback(ctx: Context, args: argparse.Namespace) -> int:
    """Record whether a run's result changed a decision."""
    room = load_room(ctx, args.room)
    changed = args.changed_decision == "yes"
    ctx.client().feedback(room.room_id, args.run, changed_decision=changed, note=args.note or "")
    ctx.say(f"feedback recorded for run {args.run}: changed a decision: {args.changed_decision}")
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``run``, ``result get`` and ``feedback``."""
    run = sub.add_parser("run", parents=[common], help="run an approved bundle")
    run.add_argument("bundle", help="bundle file or digest")
    run.add_argument("--no-wait", action="store_true")
    run.add_argument("--timeout", type=float, default=900.0, help="seconds to wait")
    run.add_argument("--idempotency-key")
    run.set_defaults(handler=cmd_run)
    result = sub.add_parser("result", help="fetch and verify run results")
    rsub = result.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    get = rsub.add_parser("get", parents=[common], help="fetch, verify, decrypt, write")
    get.add_argument("run", help="run id")
    get.add_argument("-o", "--out", help="write the table as .csv or .parquet")
    get.add_argument("--document", help="also write the decrypted result document (JSON)")
    get.add_argument("--receipt-out", help="also write the receipt file here")
    get.set_defaults(handler=cmd_result)
    listing = rsub.add_parser("list", parents=[common], help="the room's runs")
    listing.set_defaults(handler=cmd_list)
    fb = sub.add_parser("feedback", parents=[common], help="did this result change a decision?")
    fb.add_argument("run", help="run id")
    fb.add_argument("--changed-decision", choices=("yes", "no"), required=True)
    fb.add_argument("--note")
    fb.set_defaults(handler=cmd_feedback)
