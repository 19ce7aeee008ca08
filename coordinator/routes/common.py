"""Shared pieces of the routes: stored rows and envelopes → response models."""

from __future__ import annotations

from coordinator.auth import iso
from coordinator.rooms import RoomView
from coordinator.schemas import (
    ApprovalInfo,
    BundleInfo,
    EnvelopeModel,
    RoomInfo,
    RunInfo,
    UploadInfo,
    run_status,
)
from coordinator.storage.models import ApprovalRow, BundleRow, RunRow, UploadRow
from sdk.protocol.dsse import Envelope


def env_model(envelope: Envelope | str) -> EnvelopeModel:
    """An envelope (or its stored JSON) as a response model."""
    if isinstance(envelope, str):
        envelope = Envelope.from_json(envelope.encode("utf-8"), max_bytes=64 * 1024 * 1024)
    return EnvelopeModel.model_validate(envelope.to_dict())


def room_info(view: RoomView, you: str | None) -> RoomInfo:
    return RoomInfo(
        room_id=view.room_id, manifest_digest=view.digest, complete=view.complete,
        signed=list(view.signed), missing=list(view.missing),
        parties=[p.name for p in view.manifest.parties], you=you,
        manifest=env_model(view.envelope),
    )


def upload_info(row: UploadRow) -> UploadInfo:
    return UploadInfo(
        digest=row.digest, room_id=row.room_id, dataset=row.dataset, version=row.version,
        owner=row.owner, ciphertext_digest=row.ciphertext_digest,
        ciphertext_size=row.ciphertext_size, complete=row.complete,
        created_at=iso(row.created_at), statement=env_model(row.envelope),
    )


def bundle_info(row: BundleRow) -> BundleInfo:
    return BundleInfo(digest=row.digest, room_id=row.room_id, author=row.author,
                      sequence=row.sequence, title=row.title, created_at=iso(row.created_at),
                      envelope=env_model(row.envelope))


def approval_info(row: ApprovalRow) -> ApprovalInfo:
    return ApprovalInfo(digest=row.digest, bundle_digest=row.bundle_digest, party=row.party,
                        decision=row.decision, expires=row.expires,
                        envelope=env_model(row.envelope))


def run_info(row: RunRow) -> RunInfo:
    return RunInfo(
        run_id=row.run_id, room_id=row.room_id, bundle_digest=row.bundle_digest,
        requested_by=row.requested_by, status=run_status(row.state),
        has_receipt=row.receipt is not None,
        error_code=row.error_code, message=row.message or "", log_index=row.log_index,
        recipients=[r for r in row.recipients.split(",") if r],
        created_at=iso(row.created_at),
        started_at=None if row.started_at is None else iso(row.started_at),
        finished_at=None if row.finished_at is None else iso(row.finished_at),
    )
