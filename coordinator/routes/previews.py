"""``/v1/rooms/{room_id}/previews``: match previews (ECDH PSI cardinality between two parties'
local files, before uploading). The coordinator relays the parties' opaque, signed messages
and keeps their signed statements; the rules are in :mod:`coordinator.previews`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, BinaryIO

from fastapi import APIRouter, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from coordinator.auth import iso
from coordinator.context import Services
from coordinator.previews import (
    PreviewView,
    abort_preview,
    get_preview,
    list_previews,
    message_files,
    open_preview,
    piece_bytes,
    post_statement,
    put_piece,
)
from coordinator.rooms import active_room
from coordinator.routes.common import env_model
from coordinator.routes.deps import CallerDep, EnvelopeBody, ServicesDep
from coordinator.schemas import BINARY_BODY, ENVELOPE_BODY, ERRORS, EnvelopeModel, Strict
from sdk.errors import NotFoundError, SealroomError
from sdk.protocol.matchpreview import preview_min_group_size
from sdk.protocol.psi import MAX_SET_SIZE

router = APIRouter(prefix="/rooms/{room_id}/previews", tags=["previews"], responses=ERRORS)

NAME = r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$"
SESSION = r"^[0-9a-f]{32}$"
MESSAGE = r"^(setup|(request|response)-(0|[1-9][0-9]{0,5}))$"
SessionId = Annotated[str, PathParam(pattern=SESSION, description="the session's id")]
MessageName = Annotated[str, PathParam(pattern=MESSAGE, description="request-N, setup, response-N")]
Sender = Annotated[str, PathParam(pattern=NAME, description="the party that sent it")]
CHUNK = 1024 * 1024


class PreviewOpen(Strict):
    dataset: str = Field(pattern=NAME, description="your dataset")
    partner: str = Field(pattern=NAME, description="the party to preview with")
    partner_dataset: str = Field(pattern=NAME, description="its dataset")
    size: int = Field(ge=1, le=MAX_SET_SIZE, description="distinct valid ids you bring")


class PreviewSide(Strict):
    party: str
    dataset: str
    size: int | None = Field(description="declared; None until this party joined")


class PreviewInfo(Strict):
    session_id: str
    room_id: str
    state: str = Field(description="waiting, running, done, aborted or expired")
    parties: list[PreviewSide] = Field(description="the opener first")
    min_group_size: int
    piece_bytes: int = Field(description="every piece of a message but its last has this size")
    messages: dict[str, list[str]] = Field(description="sender → its complete messages")
    statements: list[EnvelopeModel]
    created_at: str
    expires_at: str


class PieceInfo(Strict):
    name: str
    piece: int
    pieces: int
    size: int


def _info(services: Services, view: PreviewView) -> PreviewInfo:
    row = view.row
    try:
        manifest = active_room(services, row.room_id).manifest
        minimum = preview_min_group_size(manifest, row.opener_dataset, row.joiner_dataset)
    except SealroomError:  # an expired room still lists its previews
        minimum = 0
    return PreviewInfo(
        session_id=row.session_id, room_id=row.room_id, state=row.state,
        parties=[PreviewSide(party=s.party, dataset=s.dataset, size=s.size) for s in view.sides],
        min_group_size=minimum, piece_bytes=piece_bytes(services), messages=view.messages,
        statements=[env_model(t) for t in view.statements],
        created_at=iso(row.created_at), expires_at=iso(row.expires_at))


@router.post("", response_model=PreviewInfo, status_code=201)
def post_preview(room_id: str, body: PreviewOpen, caller: CallerDep, services: ServicesDep,
                 response: Response) -> PreviewInfo:
    """Open a preview session of your dataset with a partner's (201), or join the one the
    partner opened for that pair (200). Refused below the pair's minimum group size
    (``E_PRIVACY``) and beyond the pair's previews per day (429)."""
    view, created = open_preview(services, room_id, caller, body.dataset, body.partner,
                                 body.partner_dataset, body.size)
    if not created:
        response.status_code = 200
    return _info(services, view)


@router.get("", response_model=list[PreviewInfo])
def get_previews(room_id: str, caller: CallerDep, services: ServicesDep) -> list[PreviewInfo]:
    """Your preview sessions in the room, newest first, with their signed statements."""
    return [_info(services, v) for v in list_previews(services, room_id, caller)]


@router.get("/{session_id}", response_model=PreviewInfo)
def get_one(room_id: str, session_id: SessionId, caller: CallerDep,
            services: ServicesDep) -> PreviewInfo:
    """One of your sessions: its state, declared sizes, complete messages and statements."""
    return _info(services, get_preview(services, room_id, caller, session_id))


@router.delete("/{session_id}", response_model=PreviewInfo)
def delete_one(room_id: str, session_id: SessionId, caller: CallerDep,
               services: ServicesDep) -> PreviewInfo:
    """Abort one of your waiting or running sessions (its messages are deleted)."""
    return _info(services, abort_preview(services, room_id, caller, session_id))


@router.put("/{session_id}/messages/{name}", response_model=PieceInfo,
            openapi_extra=BINARY_BODY)
async def put_message(room_id: str, session_id: SessionId, name: MessageName,
                      request: Request, caller: CallerDep, services: ServicesDep,
                      piece: Annotated[int, Query(ge=0, le=1 << 20)] = 0,
                      pieces: Annotated[int, Query(ge=1, le=1 << 20)] = 1) -> PieceInfo:
    """Send one piece of one of your messages (opaque bytes; retry-safe)."""
    data = await request.body()
    row = await run_in_threadpool(put_piece, services, room_id, caller, session_id, name,
                                  piece, pieces, data)
    return PieceInfo(name=row.name, piece=row.piece, pieces=row.pieces, size=row.size)


def _stream(handles: list[BinaryIO]) -> Iterator[bytes]:
    try:
        for handle in handles:
            while chunk := handle.read(CHUNK):
                yield chunk
    finally:
        for handle in handles:
            handle.close()


def _open_all(paths: list[Path]) -> list[BinaryIO]:
    """Open every piece now: an abort that deletes them meanwhile cannot cut the answer."""
    handles: list[BinaryIO] = []
    try:
        for path in paths:
            handles.append(open(path, "rb"))
    except OSError:
        for handle in handles:
            handle.close()
        raise NotFoundError("match preview: no such complete message (yet)") from None
    return handles


@router.get("/{session_id}/messages/{sender}/{name}", response_class=StreamingResponse,
            responses={200: {"content": {"application/octet-stream": {}}}})
def get_message(room_id: str, session_id: SessionId, sender: Sender, name: MessageName,
                caller: CallerDep, services: ServicesDep) -> StreamingResponse:
    """A complete message of one of the session's parties (404 until every piece is in)."""
    paths, size = message_files(services, room_id, caller, session_id, sender, name)
    return StreamingResponse(_stream(_open_all(paths)), media_type="application/octet-stream",
                             headers={"Content-Length": str(size)})


@router.post("/{session_id}/statements", response_model=PreviewInfo,
             openapi_extra=ENVELOPE_BODY)
def post_one_statement(room_id: str, session_id: SessionId, caller: CallerDep,
                       envelope: EnvelopeBody, services: ServicesDep) -> PreviewInfo:
    """Post your signed ``match_preview`` statement; once both are in, the session is done
    and its messages are deleted."""
    return _info(services, post_statement(services, room_id, caller, session_id, envelope))
