"""Uploads: the owner's signed statement first, then the ciphertext, streamed to the blob store.

The statement is pre-checked with :func:`sdk.protocol.verify.verify_upload` (the enclave is
the verifier of record). The body is hashed while it streams, capped at the size the signed
statement declares (and the configured maximum), and published only when its SHA-256 and size
equal the statement's ``ciphertext_digest`` and ``ciphertext_size``. Both steps are
idempotent: the same statement or the same bytes twice change nothing.
"""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import Request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from coordinator.context import Caller, Services
from coordinator.errors import Forbidden, PayloadTooLarge
from coordinator.rooms import active_room, envelope_text, require_party
from coordinator.storage.blobs import BlobWriter
from coordinator.storage.db import utcnow
from coordinator.storage.models import UploadRow, Worker
from sdk.errors import AttestationError, ConflictError, InputError, NotFoundError
from sdk.protocol.dsse import Envelope
from sdk.protocol.verify import verify_attestation, verify_upload

FLUSH_BYTES = 8 * 1024 * 1024


def register_upload(services: Services, room_id: str, caller: Caller,
                    envelope: Envelope) -> tuple[UploadRow, bool]:
    """Accept a signed upload statement; returns the row and whether it is new.

    Raises:
        Forbidden: the caller is not the dataset's owner.
        SignatureError, InputError: the statement does not verify against the room.
        AttestationError: it names a worker this coordinator did not publish for the room.
        PayloadTooLarge: it declares more bytes than the coordinator accepts.
        ConflictError: another statement already holds this dataset version.
    """
    party = require_party(services, room_id, caller)
    view = active_room(services, room_id)
    upload = verify_upload(envelope, view.manifest, view.digest)
    if view.manifest.dataset(upload.dataset).owner != party:
        raise Forbidden("only the dataset's owner uploads to it")
    if upload.ciphertext_size > services.settings.max_upload_bytes:
        raise PayloadTooLarge(
            f"upload of {upload.ciphertext_size} bytes exceeds the cap of "
            f"{services.settings.max_upload_bytes}")
    digest = envelope.digest()
    with services.db.read() as s:
        worker = s.get(Worker, upload.attestation_digest)
        existing = s.get(UploadRow, digest)
    if worker is None:
        raise AttestationError("upload: sealed to a worker this coordinator has not published")
    verify_attestation(Envelope.from_json(worker.attestation.encode()), view.manifest)
    if existing is not None:
        return existing, False
    row = UploadRow(
        digest=digest, room_id=room_id, dataset=upload.dataset, version=upload.version,
        owner=party, ciphertext_digest=upload.ciphertext_digest,
        ciphertext_size=upload.ciphertext_size, envelope=envelope_text(envelope),
        complete=services.blobs.exists(upload.ciphertext_digest), created_at=utcnow(),
    )
    if row.complete:
        row.completed_at = row.created_at
    try:
        with services.db.write() as s:
            clash = s.scalar(select(UploadRow).where(
                UploadRow.room_id == room_id, UploadRow.dataset == upload.dataset,
                UploadRow.version == upload.version))
            if clash is not None and clash.digest != digest:
                raise ConflictError(
                    f"dataset {upload.dataset!r} version {upload.version} already uploaded")
            if clash is not None:
                return clash, False
            s.add(row)
    except IntegrityError:
        with services.db.read() as s:
            again = s.get(UploadRow, digest)
        if again is None:
            raise ConflictError("upload raced with another statement") from None
        return again, False
    return row, True


def upload_of(services: Services, room_id: str, digest: str) -> UploadRow:
    """A room's upload by statement digest. Raises ``NotFoundError``."""
    with services.db.read() as s:
        row = s.get(UploadRow, digest)
    if row is None or row.room_id != room_id:
        raise NotFoundError("no such upload in this room")
    return row


def list_uploads(services: Services, room_id: str) -> list[UploadRow]:
    """Every upload statement of a room, oldest first."""
    with services.db.read() as s:
        return list(s.scalars(select(UploadRow).where(UploadRow.room_id == room_id)
                              .order_by(UploadRow.created_at, UploadRow.digest)))


def _mark_complete(services: Services, digest: str) -> UploadRow:
    with services.db.write() as s:
        row = s.get(UploadRow, digest)
        if row is None:
            raise NotFoundError("upload vanished")
        if not row.complete:
            row.complete = True
            row.completed_at = utcnow()
        s.flush()
        return row


def _target(services: Services, room_id: str, digest: str, caller: Caller) -> UploadRow:
    party = require_party(services, room_id, caller)
    row = upload_of(services, room_id, digest)
    if row.owner != party:
        raise Forbidden("only the dataset's owner uploads to it")
    return row


async def _flush(writer: BlobWriter, data: bytes) -> None:
    """Hash and write one batch on two threads at once (both release the GIL)."""
    await asyncio.gather(run_in_threadpool(writer.hash_part, data),
                         run_in_threadpool(writer.write_part, data))


async def receive_upload(services: Services, room_id: str, digest: str, caller: Caller,
                         request: Request) -> UploadRow:
    """Stream the request body into the blob store for upload ``digest``.

    Already complete (or the same ciphertext already stored): returns at once without reading
    the body. Raises ``PayloadTooLarge`` past the declared size, ``InputError`` for a wrong
    digest or a short/truncated body; nothing is published then.
    """
    row = await run_in_threadpool(_target, services, room_id, digest, caller)
    if row.complete:
        return row
    if services.blobs.exists(row.ciphertext_digest):
        return await run_in_threadpool(_mark_complete, services, digest)
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InputError("invalid Content-Length")
        if int(declared) > row.ciphertext_size:
            raise PayloadTooLarge(f"body larger than the declared {row.ciphertext_size} bytes")
    writer = services.blobs.writer(row.ciphertext_digest, row.ciphertext_size)
    flushing: asyncio.Future[None] | None = None  # one write in flight while we keep reading
    try:
        pending = bytearray()
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > row.ciphertext_size:
                raise PayloadTooLarge(f"body larger than the declared {row.ciphertext_size} bytes")
            pending += chunk
            if len(pending) >= FLUSH_BYTES:
                if flushing is not None:
                    await flushing
                data, pending = bytes(pending), bytearray()
                writer.reserve(len(data))
                flushing = asyncio.ensure_future(_flush(writer, data))
        if flushing is not None:
            await flushing
        flushing = None
        if pending:
            await run_in_threadpool(writer.write, pending)
        await run_in_threadpool(writer.commit)
    except ClientDisconnect:
        raise InputError("the body was truncated (client disconnected)") from None
    finally:
        if flushing is not None:  # never close the file under a running write
            with contextlib.suppress(Exception):
                await flushing
        writer.abort()
    return await run_in_threadpool(_mark_complete, services, digest)
