"""Shared pieces of the routes: strict envelope bodies and row → response conversions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from coordinator.auth import iso
from coordinator.context import Services, get_services
from coordinator.rooms import RoomView
from coordinator.schemas import (
    ApprovalInfo,
    BundleInfo,
    EnvelopeModel,
    RoomInfo,
    RunInfo,
    UploadInfo,
)
from coordinator.storage.models import ApprovalRow, BundleRow, RunRow, UploadRow
from sdk.protocol.canonical import parse_json
from sdk.protocol.dsse import Envelope


async def envelope_body(
    request: Request, services: Annotated[Services, Depends(get_services)]
) -> Envelope:
    """The request body as a DSSE envelope, parsed by the strict parser (size-capped)."""
    body = await request.body()
    return Envelope.from_dict(parse_json(body, max_bytes=services.settings.max_json_bytes))


EnvelopeBody = Annotated[Envelope, Depends(envelope_body)]


def env_model(envelope: Envelope | str) -> EnvelopeModel:
    """An envelope (or its stored JSON) as a response model."""
    if isinstance(envelope, str):
        envelope = Envelope.from_json(envelope.encode("utf-8"), max_bytes=64 * 1024 * 1024)
    return EnvelopeModel.model_validate(envelope.to_dict())


def env_dict(text: str) -> dict[str, Any]:
    """A stored envelope's JSON as a dict."""
    value = parse_json(text.encode("utf-8"), max_bytes=64 * 1024 * 1024)
    assert isinstance(value, dict)
    return value


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
        requested_by=row.requested_by, status=row.state,  # type: ignore[arg-type]
        has_receipt=row.receipt is not None,
        error_code=row.error_code, message=row.message or "", log_index=row.log_index,
        recipients=[r for r in row.recipients.split(",") if r],
        created_at=iso(row.created_at),
        started_at=None if row.started_at is None else iso(row.started_at),
        finished_at=None if row.finished_at is None else iso(row.finished_at),
    )
