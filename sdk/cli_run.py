"""``sealroom run``, ``result get`` and ``feedback``.

* ``run BUNDLE`` asks the coordinator to run an approved bundle (with an idempotency key, so a
  retried request never starts two runs) and waits for its terminal state. A refused or failed
  run exits with the code of its error class (e.g. ``E_SIGNATURE`` when a party has not approved
  or has revoked).
* ``result get RUN`` fetches the receipt and this party's sealed output, verifies the receipt
  (attested worker, room, output digests, its log entry's inclusion under its checkpoint, and
  that checkpoint's consistency with the verified log and the last checkpoint seen here),
  decrypts with this party's key, checks the plaintext digest, writes CSV or Parquet, prints a
  table and keeps a self-contained receipt file (see :mod:`sdk.cli_receipt`).
* ``feedback RUN`` records whether a result changed a decision (output-utility metric).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import time
import uuid
from pathlib import Path
from typing import Any

from sdk.cli_bundle import load_bundle
from sdk.cli_common import Context, short, write_json_file
from sdk.cli_receipt import ReceiptFile, verify_receipt_file
from sdk.cli_state import PinnedRoom, VerifiedLog, fetch_log, fetch_workers, load_room
from sdk.errors import DecryptionError, InputError, LogError, NotFoundError, error_for_code
from sdk.protocol import merkle
from sdk.protocol.canonical import parse_json
from sdk.protocol.dsse import Envelope
from sdk.protocol.records import Receipt
from sdk.protocol.sealing import open_bytes
from sdk.protocol.verify import VerifiedReceipt

TERMINAL = ("succeeded", "refused", "failed")
RESULT_FORMAT = "sealroom-result-v1"


def output_binding(room_id: str, run_id: str, recipient: str) -> dict[str, str]:
    """The binding a run output's sealed header carries (same rule as the worker)."""
    return {"room_id": room_id, "run_id": run_id, "recipient": recipient}


def run_state(run: dict[str, Any]) -> str:
    """A run's state as the coordinator reports it (``state``, or ``status``)."""
    return str(run.get("state") or run.get("status") or "unknown")


def cmd_run(ctx: Context, args: argparse.Namespace) -> int:
    """Start a run of an approved bundle and wait for its end."""
    room = load_room(ctx, args.room)
    envelope, bundle = load_bundle(ctx, room, args.bundle, check_template=False)
    client = ctx.client()
    run = client.create_run(room.room_id, envelope.digest(), idempotency_key=args.idempotency_key or uuid.uuid4().hex)
    run_id = str(run["run_id"])
    ctx.note(f"run {run_id} of {short(envelope.digest())} ({bundle.title}) queued")
    deadline = time.monotonic() + args.timeout
    while run_state(run) not in TERMINAL and not args.no_wait:
        if time.monotonic() > deadline:
            raise NotFoundError(
                f"run {run_id} not finished after {args.timeout}s (still {run_state(run)})"
            )
        time.sleep(0.25)
        run = client.run(room.room_id, run_id)
    status = run_state(run)
    ctx.say(f"run {run_id}: {status}")
    if status in ("refused", "failed"):
        code = str(run.get("error_code") or "E_INTERNAL")
        message = str(run.get("message") or run.get("error") or f"run {status}")
        raise error_for_code(code, f"run {run_id} {status}: {message}")
    if status == "succeeded":
        ctx.say(f"next: sealroom result get {run_id}")
    return 0


def receipt_file_for(
    ctx: Context | None, room: PinnedRoom, log: VerifiedLog, receipt_envelope: Envelope,
    workers: list[Envelope], run_id: str, outputs: dict[str, bytes],
) -> ReceiptFile:
    """Assemble the self-contained receipt file of a run from a verified log: the entry at the
    receipt's index, its inclusion proof in the receipt's tree, and that tree's checkpoint
    (fetched from the coordinator when ``ctx`` is given and it is not the newest one)."""
    receipt = Receipt.from_dict(parse_json(receipt_envelope.payload))  # verified just after
    size, index = receipt.checkpoint.tree_size, receipt.log_index
    if log.checkpoint is None or size > log.checkpoint.tree_size or not 0 <= index < size:
        raise LogError(f"receipt of {run_id}: its log entry is not in the verified log")
    if log.root_at(size) != receipt.checkpoint.root_hash:
        raise LogError(f"receipt of {run_id}: its checkpoint is not a prefix of the verified log")
    checkpoint = log.checkpoint_envelope if size == log.checkpoint.tree_size else None
    if checkpoint is None and ctx is not None:  # offline, the receipt's own copy suffices
        checkpoint = ctx.client().checkpoint(room.room_id, tree_size=size)
    return ReceiptFile(
        room_id=room.room_id,
        run_id=run_id,
        manifest_digest=room.digest,
        receipt=receipt_envelope,
        attestations=tuple(workers),
        log_entry=log.envelopes[index],
        inclusion_proof=tuple(merkle.inclusion_proof(log.leaves[:size], index)),
        checkpoint=checkpoint,
        outputs=outputs,
    )


def fetch_verified_receipt(
    ctx: Context, room: PinnedRoom, run_id: str, *, with_output: bool
) -> tuple[ReceiptFile, VerifiedReceipt]:
    """Fetch, assemble and verify a run's receipt (and this party's output when asked)."""
    workers, _ = fetch_workers(ctx, room)
    log = fetch_log(ctx, room, workers)
    client = ctx.client()
    receipt_envelope = client.receipt(room.room_id, run_id)
    outputs: dict[str, bytes] = {}
    if with_output:
        outputs[ctx.key().name] = client.output(room.room_id, run_id)
    rfile = receipt_file_for(
        ctx, room, log, receipt_envelope, [w.envelope for w in workers], run_id, outputs
    )
    verified = verify_receipt_file(rfile, room.manifest, room.digest)
    ctx.home.receipt_path(room.room_id, run_id).parent.mkdir(parents=True, exist_ok=True)
    write_json_file(ctx.home.receipt_path(room.room_id, run_id), rfile.to_dict())
    return rfile, verified


def decrypt_output(ctx: Context, room: PinnedRoom, rfile: ReceiptFile, receipt: Receipt) -> bytes:
    """Open this party's sealed output of a verified receipt: bound to this room, run and
    recipient, and equal to the plaintext digest the receipt signs."""
    me = ctx.key().name
    record = next((o for o in receipt.outputs if o.recipient == me), None)
    if record is None or me not in rfile.outputs:
        raise NotFoundError(f"run {receipt.run_id} has no output for {me}")
    plaintext = open_bytes(
        rfile.outputs[me], ctx.key().encryption_private,
        expected_binding=output_binding(room.room_id, receipt.run_id, me),
    )
    if hashlib.sha256(plaintext).hexdigest() != record.plaintext_digest:
        raise DecryptionError()
    return plaintext


def decode_result(plaintext: bytes) -> tuple[list[str], list[list[Any]], dict[str, Any]]:
    """(columns, rows, meta) of a decrypted result document."""
    doc = parse_json(plaintext, max_bytes=len(plaintext) + 1)
    if not isinstance(doc, dict) or doc.get("format") != RESULT_FORMAT:
        raise InputError("result: not a sealroom result document")
    columns, rows, meta = doc.get("columns"), doc.get("rows"), doc.get("meta", {})
    if not isinstance(columns, list) or not isinstance(rows, list) or not isinstance(meta, dict):
        raise InputError("result: malformed document")
    return [str(c) for c in columns], [list(r) for r in rows], meta


def write_result(path: Path, columns: list[str], rows: list[list[Any]]) -> None:
    """Write the result as CSV, or as Parquet for a ``.parquet`` path (needs pyarrow)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        data = {c: [_typed(r[i]) for r in rows] for i, c in enumerate(columns)}
        pq.write_table(pa.table(data), path)
        return
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows([["" if v is None else v for v in row] for row in rows])


def _typed(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value) if any(ch in value for ch in ".eE") else int(value)
        except ValueError:
            return value
    return value


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
            f"{privacy.suppressed_groups} group(s) suppressed, epsilon charged "
            f"{privacy.epsilon_charged}; budget left "
            + ", ".join(f"{k} {v}" for k, v in sorted(privacy.budget_left.items()))
        )
    if meta.get("mechanism"):
        ctx.say(f"noise: {meta['mechanism']}")
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
    ctx.client().feedback(room.room_id, args.run, changed_decision=changed, note=args.note or "",
                          match_rate=args.match_rate)
    extra = f", match rate {args.match_rate}" if args.match_rate else ""
    ctx.say(f"feedback recorded for run {args.run}: changed a decision: {args.changed_decision}"
            + extra)
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
    fb.add_argument("--match-rate", help="the match rate this result showed (0..1, decimal)")
    fb.set_defaults(handler=cmd_feedback)
