"""What a run of a bundle reads, collected from storage and checked as far as the coordinator
can: the five steps both the pre-check of a run request and the building of its job take.

1. the room, its manifest verified (every party signed, unexpired);
2. the bundle, by its full digest, with its author's signature verified;
3. the current worker and every stored attestation the manifest accepts, the current one first;
4. the approvals and revocations a job carries (and, for the pre-check, that they approve);
5. the complete upload each of the bundle's inputs reads.

A run is requested once and executed later, so the job is collected again when it runs: a
revocation, a new worker or an expired manifest in between must reach the worker, which is
the verifier of record.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from coordinator.bundles import get_bundle, job_approvals
from coordinator.context import Services
from coordinator.rooms import RoomView, active_room, envelope_of, now_utc
from coordinator.storage.models import UploadRow, Worker
from coordinator.worker import current_worker
from sdk.errors import AttestationError, ConflictError, NotFoundError
from sdk.protocol.approvals import verify_approvals
from sdk.protocol.dsse import Envelope, open_envelope
from sdk.protocol.models import Attestation, Bundle, Manifest
from sdk.protocol.verify import verify_attestation


@dataclass(frozen=True)
class RunSources:
    """Everything a run of one bundle reads, as the five steps collected it."""

    room: RoomView
    worker: Worker
    attestation: Attestation
    attestations: list[Envelope]
    bundle_envelope: Envelope
    bundle: Bundle
    approvals: list[Envelope]
    uploads: list[UploadRow]

    @property
    def worker_key(self) -> bytes:
        """The current worker's signing key, from its verified attestation."""
        return self.attestation.worker_signing_key


def room_attestations(services: Services, manifest: Manifest,
                      first: Worker) -> tuple[Attestation, list[Envelope]]:
    """``first``'s verified attestation, and the envelopes of ``first``'s attestation followed
    by every other stored one the manifest accepts (oldest first).

    Raises ``AttestationError`` when ``first`` is not accepted by the manifest.
    """
    head = Envelope.from_json(first.attestation.encode())
    attestation = verify_attestation(head, manifest)
    out = [head]
    with services.db.read() as s:
        others = list(s.scalars(select(Worker).where(
            Worker.attestation_digest != first.attestation_digest).order_by(Worker.created_at)))
    for worker in others:
        envelope = Envelope.from_json(worker.attestation.encode())
        try:
            verify_attestation(envelope, manifest)
        except AttestationError:
            continue
        out.append(envelope)
    return attestation, out


def select_uploads(services: Services, room_id: str, bundle: Bundle) -> list[UploadRow]:
    """The complete upload each input reads: the one whose signed statement the bundle pins
    (by digest), or for a ``follow_latest`` input the newest.

    Raises ``ConflictError`` when an input has no such complete upload.
    """
    chosen = []
    with services.db.read() as s:
        for item in bundle.inputs:
            query = select(UploadRow).where(
                UploadRow.room_id == room_id, UploadRow.dataset == item.dataset,
                UploadRow.complete.is_(True))
            if item.upload is not None:
                query = query.where(UploadRow.digest == item.upload)
            row = s.scalars(query.order_by(UploadRow.version.desc()).limit(1)).first()
            if row is None:
                which = ("any complete upload" if item.upload is None
                         else f"the complete upload of version {item.version} the bundle pins")
                raise ConflictError(f"dataset {item.dataset!r} has no {which}")
            chosen.append(row)
    return chosen


def collect_sources(services: Services, room_id: str, bundle_digest: str, *,
                    require_approved: bool) -> RunSources:
    """Take the five steps (module docstring) for a run of ``bundle_digest`` in ``room_id``.

    With ``require_approved``, the approvals selected must satisfy
    :func:`sdk.protocol.approvals.verify_approvals` (the pre-check); without it they are only
    collected, for the worker to judge and sign its refusal.

    Raises ``NotFoundError`` (no bundle of that full digest), ``ConflictError`` (room not fully
    signed, no worker, an input without a complete upload), ``AttestationError`` (the current
    worker is not accepted by the manifest), ``SignatureError``/``InputError`` (approvals, with
    ``require_approved``), and the manifest verifier's errors.
    """
    room = active_room(services, room_id)
    row = get_bundle(services, room_id, bundle_digest)
    if row.digest != bundle_digest:
        raise NotFoundError("no such bundle in this room")
    bundle_envelope = envelope_of(row.envelope)
    payload, _ = open_envelope(bundle_envelope, Bundle.KIND, room.manifest.signing_keys())
    bundle = Bundle.from_dict(payload)
    worker = current_worker(services.db)
    attestation, attestations = room_attestations(services, room.manifest, worker)
    approvals = job_approvals(services, room_id, bundle_digest)
    if require_approved:
        verify_approvals(approvals, room.manifest, room.digest, bundle_digest, now=now_utc(),
                         bundle=bundle)
    uploads = select_uploads(services, room_id, bundle)
    return RunSources(room, worker, attestation, attestations, bundle_envelope, bundle,
                      approvals, uploads)
