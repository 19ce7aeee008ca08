"""``sealroom data``: seal a dataset to the attested worker and upload it; the steps and their
promises are in :mod:`sdk.party.data`."""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sdk.cli.context import Context, short
from sdk.errors import InputError
from sdk.party.data import (
    dropped_line,
    next_version,
    seal_dataset,
    seal_version,
    upload_sealed,
    worker_for,
)
from sdk.party.files import read_envelope_file, write_json_file
from sdk.party.trust import PinnedRoom, load_room
from sdk.protocol.dsse import Envelope
from sdk.protocol.verify import verify_upload


@contextlib.contextmanager
def _rejects_file(target: str | None) -> Iterator[Path | None]:
    """A temporary path beside ``--rejects FILE``, renamed onto it only when the command
    succeeds (a refusal leaves no file behind)."""
    if not target:
        yield None
        return
    final = Path(target)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        if tmp.exists():
            os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


ONE_ROW_LINE = ("one row per person: the statement says so, and the worker checks it before "
                "a plan reads the file")


def _report(ctx: Context, room: PinnedRoom, statement: Envelope, rejects: str | None) -> None:
    """Print what the signed statement says was dropped at seal time (counts, never values)."""
    upload = verify_upload(statement, room.manifest, room.digest)
    if upload.rejected:
        ctx.say(dropped_line(upload.rejected) + (f", rows listed in {rejects}" if rejects else ""))
    else:
        ctx.say("no rows dropped at seal time")
    if upload.one_row_per_person:
        ctx.say(ONE_ROW_LINE)


def cmd_seal(ctx: Context, args: argparse.Namespace) -> int:
    """Seal a dataset file locally: writes OUT.sealed and OUT.upload.json."""
    room = load_room(ctx, args.room)
    worker = worker_for(ctx, room, args.attestation)
    version, origin = seal_version(ctx, room, args.dataset, args.version)
    base = Path(args.out) if args.out else Path(f"{args.dataset}-v{version}")
    with _rejects_file(args.rejects) as rejects:
        statement, sealed = seal_dataset(
            ctx, room, worker, Path(args.file), args.dataset, version,
            base.with_name(base.name + ".sealed"), region=args.region, strict=args.strict,
            rejects=rejects,
        )
        stmt_path = write_json_file(base.with_name(base.name + ".upload.json"),
                                    statement.to_dict())
    ctx.say(f"sealed {sealed} ({sealed.stat().st_size} bytes), statement {stmt_path}")
    ctx.say(f"upload {short(statement.digest())}: dataset {args.dataset} version {version} "
            f"({origin})")
    _report(ctx, room, statement, args.rejects)
    return 0


def cmd_upload(ctx: Context, args: argparse.Namespace) -> int:
    """Seal (unless given a sealed file) and upload a dataset."""
    room = load_room(ctx, args.room)
    if args.sealed:
        if not args.statement:
            raise InputError("--sealed needs --statement FILE.upload.json")
        statement = read_envelope_file(args.statement, "upload statement")
        upload = upload_sealed(ctx, room, statement, Path(args.sealed))
    else:
        if not args.file or not args.dataset:
            raise InputError("give a data file and --dataset (or --sealed and --statement)")
        worker = worker_for(ctx, room, args.attestation)
        version = args.version or next_version(ctx, room, args.dataset)
        with (tempfile.TemporaryDirectory(prefix="sealroom-sealed-") as tmp,
              _rejects_file(args.rejects) as rejects):
            statement, sealed = seal_dataset(
                ctx, room, worker, Path(args.file), args.dataset, version,
                Path(tmp) / "data.sealed", region=args.region, strict=args.strict,
                rejects=rejects,
            )
            upload = upload_sealed(ctx, room, statement, sealed)
    ctx.say(
        f"uploaded {upload.dataset} version {upload.version}: {upload.row_count} rows, "
        f"{upload.ciphertext_size} bytes sealed, statement {short(statement.digest())}"
    )
    _report(ctx, room, statement, args.rejects)
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``data seal`` and ``data upload``."""
    data = sub.add_parser("data", help="seal and upload datasets")
    dsub = data.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    seal = dsub.add_parser("seal", parents=[common], help="seal a CSV/Parquet file locally")
    upload = dsub.add_parser("upload", parents=[common], help="seal and upload a dataset")
    for p in (seal, upload):
        p.add_argument("file", nargs="?" if p is upload else None, help="CSV or Parquet file")
        p.add_argument("--dataset", required=p is seal, help="dataset name in the manifest")
        p.add_argument("--version", type=int, help="dataset version (default: next)")
        p.add_argument("--attestation", help="verify and seal to this attestation file")
        p.add_argument("--region", metavar="CC",
                       help="region (e.g. FR) for phone numbers without +; default: none, "
                       "so only +-prefixed numbers are accepted")
        p.add_argument("--strict", action="store_true",
                       help="refuse the file at the first empty or invalid identifier")
        p.add_argument("--rejects", metavar="FILE",
                       help="write the dropped rows' numbers and reasons (CSV, no values)")
    seal.add_argument("-o", "--out", help="output base name (OUT.sealed, OUT.upload.json)")
    seal.set_defaults(handler=cmd_seal)
    upload.add_argument("--sealed", help="an already sealed file (from `data seal`)")
    upload.add_argument("--statement", help="its upload statement")
    upload.set_defaults(handler=cmd_upload)
