"""Sealing a dataset to the attested worker and uploading it (DESIGN §5 step 3).

Order, and what each step promises:

1. the pinned manifest is verified and this key must be the dataset owner's key;
2. the worker's attestation (the coordinator's newest, or one given) is verified against the
   manifest's accepted providers, platform keys and measurements — BEFORE anything is read or
   sealed;
3. the file is told apart by content (CSV or Parquet; empty, binary and non-UTF-8 files are
   refused), checked against the dataset's schema, identifiers are validated (rows with an
   empty or invalid one are dropped and counted per reason, or refused with ``strict``),
   normalised and hashed (DuckDB, vectorised; phones by ``phonenumbers``) into a temporary
   Parquet file; a file with no valid row is refused;
4. that file is sealed, streaming, to the worker's encryption key, and the owner signs the upload
   statement binding room, manifest, dataset, version, schema, row count, the dropped rows'
   counts, ciphertext digest and key commitment;
5. the sealed file and its statement are streamed to the coordinator.

The temporary Parquet file is deleted whatever happens. Progress is reported as events.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from sdk.errors import AttestationError, InputError, SignatureError
from sdk.party.events import finished, progress, step
from sdk.party.files import read_envelope_file
from sdk.party.session import ENV_COORDINATOR, Session
from sdk.party.statements import make_upload
from sdk.party.trust import PinnedRoom, VerifiedWorker, current_worker, verify_workers
from sdk.protocol.dsse import Envelope
from sdk.protocol.models import Upload
from sdk.protocol.verify import verify_upload


def worker_for(session: Session, room: PinnedRoom, attestation_file: str | None = None
               ) -> VerifiedWorker:
    """The worker to seal to, verified against the manifest: the one in ``attestation_file``,
    or the coordinator's current one. Raises ``AttestationError`` when it is not accepted."""
    if attestation_file:
        envelope = read_envelope_file(attestation_file, "attestation")
        accepted, rejected = verify_workers(room, [envelope])
        if not accepted:
            raise AttestationError(f"attestation not accepted by the manifest ({rejected[0]})")
        return accepted[0]
    return current_worker(room, session.client().attestations(room.room_id))


def seal_dataset(
    session: Session,
    room: PinnedRoom,
    worker: VerifiedWorker,
    source: Path,
    dataset_name: str,
    version: int,
    destination: Path,
    *,
    region: str | None = None,
    strict: bool = False,
    rejects: Path | None = None,
) -> tuple[Envelope, Path]:
    """Prepare and seal ``source`` for ``dataset_name``; returns the signed upload statement
    and the sealed file. The worker must already be verified. ``region`` reads phone numbers
    without ``+``; ``strict`` refuses the file at its first invalid identifier; ``rejects``
    receives the dropped rows' numbers and reasons (CSV; the caller owns that file)."""
    from sdk.party.datasets import prepare_dataset, seal_dataset_file

    key = session.key()
    dataset = room.manifest.dataset(dataset_name)
    if dataset.owner != key.name:
        raise SignatureError(f"dataset {dataset_name!r} belongs to {dataset.owner}, not {key.name}")
    if room.manifest.party(key.name).identity.signing_key != key.signer.public_key:
        raise SignatureError(f"this key is not the key the manifest lists for {key.name}")
    if not source.is_file():
        raise InputError(f"data file {source} does not exist")
    session.emit(step(
        f"worker {worker.digest[:12]} verified: {worker.attestation.provider} attestation, "
        f"isolation {worker.attestation.isolation}, image {worker.attestation.measurement.image_id[:19]}"
    ))
    with tempfile.TemporaryDirectory(prefix="sealroom-prep-") as tmp:
        started = time.monotonic()
        prepared = prepare_dataset(source, dataset, Path(tmp), region=region, strict=strict,
                                   rejects=rejects)
        session.emit(step(
            f"checked schema, validated, normalised and hashed {dataset.id_column} "
            f"({dataset.id_kind}): {prepared.row_count} rows in "
            f"{time.monotonic() - started:.1f}s"
        ))
        if prepared.rejected:
            session.emit(step(f"{dropped_line(prepared.rejected)} (not sealed)"))
        label = f"sealing {dataset_name}"
        destination.parent.mkdir(parents=True, exist_ok=True)
        sealed = seal_dataset_file(
            prepared.path,
            destination,
            worker.attestation.worker_encryption_key,
            room_id=room.room_id,
            manifest_digest=room.digest,
            dataset=dataset_name,
            version=version,
            progress=lambda done, total: session.emit(progress(label, done, total)),
        )
        session.emit(finished(label))
    statement = make_upload(
        key, room.manifest, room.digest, dataset_name, version, prepared.row_count, sealed,
        worker.digest, rejected=prepared.rejected,
        one_row_per_person=prepared.one_row_per_person,
    )
    return statement, destination


def dropped_line(rejected: dict[str, int] | tuple[tuple[str, int], ...]) -> str:
    """``3 rows dropped at seal time (empty: 1, invalid_email: 2)``."""
    counts = dict(rejected)
    total = sum(counts.values())
    detail = ", ".join(f"{r}: {n}" for r, n in sorted(counts.items()))
    return f"{total} row{'s' if total != 1 else ''} dropped at seal time ({detail})"


def next_version(session: Session, room: PinnedRoom, dataset: str) -> int:
    """The version number the next upload of ``dataset`` takes (one above the coordinator's
    newest)."""
    versions = [
        int(u.get("version", 0))
        for u in session.client().uploads(room.room_id)
        if isinstance(u, dict) and u.get("dataset") == dataset
    ]
    return max(versions, default=0) + 1


def seal_version(session: Session, room: PinnedRoom, dataset: str,
                 explicit: int | None) -> tuple[int, str]:
    """The version a seal binds: ``explicit``, else the coordinator's next one
    (:func:`next_version`), else (no coordinator configured: sealing offline) 1. Returns it and
    a note saying where it came from."""
    if explicit:
        return explicit, "as given"
    if not (session.coordinator or os.environ.get(ENV_COORDINATOR)):
        return 1, ("offline: no coordinator to ask, so version 1; the coordinator refuses it if "
                   "taken (give --version N)")
    return next_version(session, room, dataset), "the coordinator's next version"


def upload_sealed(session: Session, room: PinnedRoom, statement: Envelope, sealed: Path) -> Upload:
    """Check a sealed file against its statement, then stream both to the coordinator."""
    upload = verify_upload(statement, room.manifest, room.digest)
    if sealed.stat().st_size != upload.ciphertext_size:
        raise InputError("the sealed file's size differs from its upload statement")
    label = f"uploading {upload.dataset}"
    session.client().upload(room.room_id, statement, sealed,
                            progress=lambda done, total: session.emit(progress(label, done, total)))
    session.emit(finished(label))
    return upload
