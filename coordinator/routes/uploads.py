"""``/v1/rooms/{room_id}/uploads``: signed upload statements and streamed ciphertext."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from coordinator.rooms import room_party
from coordinator.routes.common import upload_info
from coordinator.routes.deps import CallerDep, EnvelopeBody, ServicesDep
from coordinator.schemas import BINARY_BODY, ENVELOPE_BODY, ERRORS, UploadInfo
from coordinator.uploads import list_uploads, receive_upload, register_upload, upload_of

router = APIRouter(prefix="/rooms/{room_id}/uploads", tags=["uploads"], responses=ERRORS)


@router.post("", response_model=UploadInfo, status_code=201, openapi_extra=ENVELOPE_BODY)
def post_statement(room_id: str, caller: CallerDep, envelope: EnvelopeBody,
                   services: ServicesDep, response: Response) -> UploadInfo:
    """Register the dataset owner's signed upload statement (idempotent: 200 when known).

    Then PUT the sealed bytes to ``/data`` unless ``complete`` is already true."""
    row, created = register_upload(services, room_id, caller, envelope)
    if not created:
        response.status_code = 200
    return upload_info(row)


@router.get("", response_model=list[UploadInfo])
def get_uploads(room_id: str, caller: CallerDep, services: ServicesDep) -> list[UploadInfo]:
    """Every upload statement of the room (parties and the operator)."""
    room_party(services, room_id, caller)
    return [upload_info(r) for r in list_uploads(services, room_id)]


@router.get("/{digest}", response_model=UploadInfo)
def get_upload(room_id: str, digest: str, caller: CallerDep,
               services: ServicesDep) -> UploadInfo:
    """One upload statement and whether its ciphertext has arrived."""
    room_party(services, room_id, caller)
    return upload_info(upload_of(services, room_id, digest))


@router.put("/{digest}/data", response_model=UploadInfo, openapi_extra=BINARY_BODY)
async def put_data(room_id: str, digest: str, request: Request, caller: CallerDep,
                   services: ServicesDep) -> UploadInfo:
    """Stream the sealed file (exactly ``ciphertext_size`` bytes hashing to
    ``ciphertext_digest``). Retry-safe: a complete upload returns at once."""
    row = await receive_upload(services, room_id, digest, caller, request)
    return await run_in_threadpool(upload_info, row)
