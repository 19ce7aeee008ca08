"""Auditor commands: ``receipt verify`` (offline) and ``log verify``.

* ``receipt verify RECEIPT --manifest M [--output FILE]`` needs no coordinator and no data:
  the manifest must be signed by every party it lists, and the receipt file must verify as
  described in :mod:`sdk.party.receipts`. ``--output`` checks a sealed output or a decrypted
  result document against the digests the receipt signs.
* ``log verify`` fetches every log entry, verifies each signature against the attested
  workers, that the entries are exactly the newest checkpoint's tree, that this tree extends
  the last checkpoint this machine stored for the room (a rollback or a fork is reported as
  such, exit code of ``E_LOG``), and that every receipt of the room is included in the log;
  then it stores the new checkpoint.
* ``log export -o FILE`` writes that verified log with every receipt and the attestations to
  one file (``sealroom-log-export`` v1: room_id, manifest_digest, attestations, entries,
  checkpoint, receipts by run id); ``log verify --from FILE --manifest M`` checks it offline,
  with the same consistency check against the auditor's own stored checkpoint.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any

from sdk.cli.context import Context, short
from sdk.errors import InputError
from sdk.party.audit import AuditedLog, audit_export, export_document, fetch_audited_log
from sdk.party.files import read_envelope_file, read_json_file, write_json_file
from sdk.party.receipts import ReceiptFile, match_output, receipt_lines, verify_receipt_file
from sdk.party.trust import PinnedRoom, load_room
from sdk.protocol.clock import utcnow
from sdk.protocol.verify import verify_manifest


def cmd_receipt_verify(ctx: Context, args: argparse.Namespace) -> int:
    """Verify a receipt file offline against a manifest file."""
    manifest_env = read_envelope_file(args.manifest, "manifest")
    manifest = verify_manifest(manifest_env, now=utcnow())
    rfile = ReceiptFile.from_dict(read_json_file(args.receipt, "receipt file"))
    extra = []
    for path in args.output or []:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"output file {p} does not exist")
        extra.append(p.read_bytes())
    verified = verify_receipt_file(rfile, manifest, manifest_env.digest(), extra_outputs=extra)
    r = verified.receipt
    ctx.say(f"receipt of run {r.run_id} in room {r.room_id}: VALID")
    ctx.say(f"  manifest    {manifest_env.digest()} (signed by all {len(manifest.parties)} parties)")
    ctx.say(f"  status      {r.status}" + (f" ({r.error_code})" if r.error_code else ""))
    ctx.say(f"  bundle      {r.bundle_digest}")
    ctx.say(f"  approvals   {len(r.approval_digests)}")
    for line in receipt_lines(r):
        ctx.say(f"  {line}")
    ctx.say(
        f"  worker      {short(r.attestation_digest)}: {r.attestation} attestation, isolation "
        f"{r.isolation}, image {verified.attestation.measurement.image_id[:19]}"
    )
    if verified.attestation.is_hardware:
        ctx.say(
            f"              (hardware evidence verified offline: {r.attestation}, its chain to the "
            "vendor root, the pinned registers and the key binding)"
        )
    if r.attestation == "simulated":
        ctx.say("              (simulated: the operator's platform key vouches for the worker)")
    if r.isolation == "none":
        ctx.say("              (UNISOLATED development worker: no container boundary)")
    ctx.say(
        f"  log         entry {r.log_index} included under checkpoint "
        f"{r.checkpoint.tree_size}/{short(r.checkpoint.root_hash)}"
    )
    if r.privacy is not None:
        pr = r.privacy
        ctx.say(
            f"  privacy     {pr.mode}, min group {pr.min_group_size}, {pr.guarantee}, "
            f"epsilon {pr.epsilon_charged} charged; left "
            + ", ".join(f"{k} {v}" for k, v in sorted(pr.budget_left.items()))
        )
    for o in r.outputs:
        have = "sealed copy verified" if o.recipient in rfile.outputs else "digest only"
        ctx.say(f"  output      {o.recipient}: {o.rows} rows, {have}")
    for data in extra:
        ctx.say(f"  --output    matches the output of {match_output(r, data)}")
    return 0


def _report(ctx: Context, room: PinnedRoom, audited: AuditedLog) -> None:
    log = audited.log
    size = 0 if log.checkpoint is None else log.checkpoint.tree_size
    kinds = Counter(e.kind for e in log.entries)
    ctx.say(f"room {room.room_id}: log VERIFIED")
    ctx.say(f"  entries     {size}, each signed by an attested worker; root "
            f"{'-' if log.checkpoint is None else short(log.checkpoint.root_hash)}")
    ctx.say("  kinds       " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
    ctx.say(f"  receipts    {audited.verified_receipts} of {audited.results} verified and included")
    if log.previous is None:
        ctx.say("  consistency no checkpoint stored here before; this one is now stored")
    else:
        ctx.say(f"  consistency extends the checkpoint seen before "
                f"({log.previous.tree_size}/{short(log.previous.root_hash)})")
    ctx.say("  budget      " + ", ".join(
        f"{d.name} {log.spent(d.name)}/{d.epsilon_budget}" for d in room.manifest.datasets))
    ctx.say(f"  workers     {len(audited.workers)} attested"
            + (f"; not accepted: {'; '.join(audited.rejected)}" if audited.rejected else ""))


def cmd_log_verify(ctx: Context, args: argparse.Namespace) -> int:
    """Verify the whole room log, every receipt's inclusion, and consistency with the last
    checkpoint this machine stored (from the coordinator, or offline from a `log export`
    file)."""
    room = load_room(ctx, args.room, args.manifest)
    if args.manifest:
        pinned = ctx.home.pinned_manifest(room.room_id)
        if pinned is not None and pinned.digest() != room.digest:
            raise InputError("the manifest given differs from the one pinned on this machine")
    if args.from_file:
        if not args.manifest:
            raise InputError("--from needs --manifest (the auditor's copy of the manifest)")
        audited = audit_export(ctx, room, read_json_file(args.from_file, "log export"))
    else:
        audited = fetch_audited_log(ctx, room)
    _report(ctx, room, audited)
    return 0


def cmd_log_export(ctx: Context, args: argparse.Namespace) -> int:
    """Verify the room log as `log verify` does, then write it with every receipt and the
    attestations to one file an auditor verifies offline (`log verify --from FILE`)."""
    room = load_room(ctx, args.room)
    audited = fetch_audited_log(ctx, room)
    path = write_json_file(args.out, export_document(room, audited))
    ctx.say(f"wrote {path}: {len(audited.log.envelopes)} entries, {len(audited.receipts)} "
            f"receipts; an auditor runs: sealroom log verify --from {path.name} --manifest MANIFEST")
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``receipt verify`` and ``log verify``."""
    receipt = sub.add_parser("receipt", help="auditors: verify receipts offline")
    rsub = receipt.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    rv = rsub.add_parser("verify", parents=[common], help="verify a receipt file offline")
    rv.add_argument("receipt", help="receipt file (from `result get`)")
    rv.add_argument("--manifest", required=True, help="the signed manifest file")
    rv.add_argument("--output", action="append", help="a sealed output or result document")
    rv.set_defaults(handler=cmd_receipt_verify)
    log = sub.add_parser("log", help="auditors: verify the room log")
    lsub = log.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    lv = lsub.add_parser("verify", parents=[common], help="entries, receipts, consistency")
    lv.add_argument("--manifest", help="the signed manifest file (default: the pinned one)")
    lv.add_argument("--from", dest="from_file", help="verify a `log export` file offline")
    lv.set_defaults(handler=cmd_log_verify)
    le = lsub.add_parser("export", parents=[common], help="the verified log, for auditors")
    le.add_argument("-o", "--out", required=True, help="the export file (JSON)")
    le.set_defaults(handler=cmd_log_export)
