"""``sealroom data``: seal a dataset to the attested worker and upload it (DESIGN §5 step 3).

Order, and what each step promises:

1. the pinned manifest is verified and this key must be the dataset owner's key;
2. the worker's attestation (the coordinator's newest, or ``--attestation FILE``) is verified
   against the manifest's accepted providers, platform keys and measurements — BEFORE anything
   is read or sealed;
3. the CSV/Parquet file is checked against the dataset's schema, identifiers are normalised and
   hashed (DuckDB, vectorised) into a temporary Parquet file;
4. that file is sealed, streaming, to the worker's encryption key (progress on stderr), and the
   owner signs the upload statement binding room, manifest, dataset, version, schema, row count,
   ciphertext digest and key commitment;
5. ``data upload`` streams the sealed file and its statement to the coordinator.

The temporary Parquet file is deleted whatever happens.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from sdk.cli_common import Context, ProgressBar, read_envelope_file, short, write_json_file
from sdk.cli_state import PinnedRoom, VerifiedWorker, current_worker, load_room, verify_workers
from sdk.errors import InputError, SignatureError
from sdk.protocol.dsse import Envelope
from sdk.protocol.models import Upload
from sdk.protocol.verify import verify_upload
from sdk.statements import make_upload


def _worker(ctx: Context, room: PinnedRoom, attestation_file: str | None) -> VerifiedWorker:
    if attestation_file:
        envelope = read_envelope_file(attestation_file, "attestation")
        accepted, rejected = verify_workers(room, [envelope])
        if not accepted:
            from sdk.errors import AttestationError

            raise AttestationError(f"attestation not accepted by the manifest ({rejected[0]})")
        return accepted[0]
    return current_worker(room, ctx.client().attestations(room.room_id))


def seal_dataset(
    ctx: Context,
    room: PinnedRoom,
    worker: VerifiedWorker,
    source: Path,
    dataset_name: str,
    version: int,
    destination: Path,
    *,
    country_code: str = "1",
) -> tuple[Envelope, Path]:
    """Prepare and seal ``source`` for ``dataset_name``; returns the signed upload statement
    and the sealed file. The worker must already be verified."""
    from sdk.datasets import prepare_dataset, seal_dataset_file

    key = ctx.key()
    dataset = room.manifest.dataset(dataset_name)
    if dataset.owner != key.name:
        raise SignatureError(f"dataset {dataset_name!r} belongs to {dataset.owner}, not {key.name}")
    if room.manifest.party(key.name).identity.signing_key != key.signer.public_key:
        raise SignatureError(f"this key is not the key the manifest lists for {key.name}")
    if not source.is_file():
        raise InputError(f"data file {source} does not exist")
    ctx.note(
        f"worker {short(worker.digest)} verified: {worker.attestation.provider} attestation, "
        f"isolation {worker.attestation.isolation}, image {worker.attestation.measurement.image_id[:19]}"
    )
    with tempfile.TemporaryDirectory(prefix="sealroom-prep-") as tmp:
        started = time.monotonic()
        prepared = prepare_dataset(source, dataset, Path(tmp), country_code=country_code)
        ctx.note(
            f"checked schema, normalised and hashed {dataset.id_column} ({dataset.id_kind}): "
            f"{prepared.row_count} rows in {time.monotonic() - started:.1f}s"
        )
        bar = ProgressBar(f"sealing {dataset_name}", ctx.err)
        destination.parent.mkdir(parents=True, exist_ok=True)
        sealed = seal_dataset_file(
            prepared.path,
            destination,
            worker.attestation.worker_encryption_key,
            room_id=room.room_id,
            manifest_digest=room.digest,
            dataset=dataset_name,
            version=version,
            progress=bar.update,
        )
        bar.finish()
    statement = make_upload(
        key, room.manifest, room.digest, dataset_name, version, prepared.row_count, sealed,
        worker.digest,
    )
    return statement, destination


def _next_version(ctx: Context, room: PinnedRoom, dataset: str) -> int:
    versions = [
        int(u.get("version", 0))
        for u in ctx.client().uploads(room.room_id)
        if isinstance(u, dict) and u.get("dataset") == dataset
    ]
    return max(versions, default=0) + 1


def cmd_seal(ctx: Context, args: argparse.Namespace) -> int:
    """Seal a dataset file locally: writes OUT.sealed and OUT.upload.json."""
    room = load_room(ctx, args.room)
    worker = _worker(ctx, room, args.attestation)
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


def upload_sealed(ctx: Context, room: PinnedRoom, statement: Envelope, sealed: Path) -> Upload:
    """Check a sealed file against its statement, then stream both to the coordinator."""
    upload = verify_upload(statement, room.manifest, room.digest)
    if sealed.stat().st_size != upload.ciphertext_size:
        raise InputError("the sealed file's size differs from its upload statement")
    bar = ProgressBar(f"uploading {upload.dataset}", ctx.err)
    ctx.client().upload(room.room_id, statement, sealed, progress=bar.update)
    bar.finish()
    return upload


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
        worker = _worker(ctx, room, args.attestation)
        version = args.version or _next_version(ctx, room, args.dataset)
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
