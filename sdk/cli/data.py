"""``sealroom data``: seal a dataset to the attested worker and upload it; the steps and their
promises are in :mod:`sdk.party.data`."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from sdk.cli.context import Context, short
from sdk.errors import InputError
from sdk.party.data import next_version, seal_dataset, upload_sealed, worker_for
from sdk.party.files import read_envelope_file, write_json_file
from sdk.party.trust import load_room


def cmd_seal(ctx: Context, args: argparse.Namespace) -> int:
    """Seal a dataset file locally: writes OUT.sealed and OUT.upload.json."""
    room = load_room(ctx, args.room)
    worker = worker_for(ctx, room, args.attestation)
    version = args.version or 1
    base = Path(args.out) if args.out else Path(f"{args.dataset}-v{version}")
    statement, sealed = seal_dataset(
        ctx, room, worker, Path(args.file), args.dataset, version,
        base.with_name(base.name + ".sealed"), country_code=args.country_code,
    )
    stmt_path = write_json_file(base.with_name(base.name + ".upload.json"), statement.to_dict())
    ctx.say(f"sealed {sealed} ({sealed.stat().st_size} bytes), statement {stmt_path}")
    ctx.say(f"upload {short(statement.digest())}: dataset {args.dataset} version {version}")
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
        with tempfile.TemporaryDirectory(prefix="sealroom-sealed-") as tmp:
            statement, sealed = seal_dataset(
                ctx, room, worker, Path(args.file), args.dataset, version,
                Path(tmp) / "data.sealed", country_code=args.country_code,
            )
            upload = upload_sealed(ctx, room, statement, sealed)
    ctx.say(
        f"uploaded {upload.dataset} version {upload.version}: {upload.row_count} rows, "
        f"{upload.ciphertext_size} bytes sealed, statement {short(statement.digest())}"
    )
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
        p.add_argument("--country-code", default="1", help="for phone numbers without one")
    seal.add_argument("-o", "--out", help="output base name (OUT.sealed, OUT.upload.json)")
    seal.set_defaults(handler=cmd_seal)
    upload.add_argument("--sealed", help="an already sealed file (from `data seal`)")
    upload.add_argument("--statement", help="its upload statement")
    upload.set_defaults(handler=cmd_upload)
