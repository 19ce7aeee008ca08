"""``/v1/rooms``, ``/v1/invitations`` and ``/v1/attestation``: manifests, signatures,
invitations, the worker's attestation.

A room exists once every party its manifest lists has signed; before that a manifest is
pending, and the parties it lists see it as an invitation (``GET /v1/invitations``, and
``GET /v1/rooms/{id}`` or ``/manifest`` with ``?digest=`` when several list them). A caller
that is neither a party of the room nor listed by a pending manifest of its id gets one answer
on every route, whether or not the id exists (:mod:`coordinator.rooms`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from coordinator.auth import iso
from coordinator.rooms import (
    invitations,
    load_room,
    member_of,
    peek_room,
    room_or_invitation,
    room_party,
    submit_manifest,
)
from coordinator.routes.common import env_model, room_info
from coordinator.routes.deps import CallerDep, EnvelopeBody, ServicesDep
from coordinator.routes.fast import FastCallerDep, cached_json
from coordinator.schemas import (
    ENVELOPE_BODY,
    ERRORS,
    HEX64,
    AttestationInfo,
    EnvelopeModel,
    RoomInfo,
    RoomSummary,
)
from coordinator.storage.models import Room, RoomParty, Worker
from coordinator.worker import current_worker, platform_public_key
from sdk.errors import AttestationError, ConfigError
from sdk.protocol.dsse import Envelope
from sdk.protocol.verify import verify_attestation

router = APIRouter(tags=["rooms"], responses=ERRORS)

DigestQuery = Annotated[str | None, Query(
    pattern=HEX64, description="which pending manifest, when several of this id list you")]


@router.post("/rooms", response_model=RoomInfo, status_code=201, openapi_extra=ENVELOPE_BODY)
def create_room(caller: CallerDep, envelope: EnvelopeBody, services: ServicesDep,
                response: Response) -> RoomInfo:
    """Submit a room manifest signed by at least one of its parties (the caller must be one).

    Until every party it lists has signed, it is a pending manifest (``complete`` false): an
    invitation to those parties, which expires and reserves nothing. Re-submitting it with more
    signatures merges them (200); once every party has signed it becomes the room."""
    view, created = submit_manifest(services, envelope, caller)
    if not created:
        response.status_code = 200
    return room_info(view, view.party_with_key(caller.key))


@router.get("/rooms", response_model=list[RoomSummary])
def list_rooms(caller: CallerDep, services: ServicesDep) -> list[RoomSummary]:
    """The rooms whose manifest lists the caller (every room for the operator). Pending
    manifests are not rooms: see ``GET /v1/invitations``."""
    with services.db.read() as s:
        query = select(Room).where(Room.complete.is_(True))
        if not caller.admin:
            query = query.join(RoomParty, RoomParty.room_id == Room.room_id).where(
                RoomParty.signing_key == caller.key)
        rows = list(s.scalars(query.order_by(Room.room_id)))
    return [RoomSummary(room_id=r.room_id, manifest_digest=r.manifest_digest,
                        complete=r.complete) for r in rows]


class InvitedPartyInfo(BaseModel):
    name: str
    keyid: str = Field(description="SHA-256 of the party's signing key, as the manifest lists it")
    signed: bool


class InvitationInfo(BaseModel):
    room_id: str
    manifest_digest: str
    parties: list[InvitedPartyInfo]
    signed: list[str]
    missing: list[str]
    you: str | None = Field(default=None, description="the caller's party name")
    submitted_by: str
    created_at: str
    expires_at: str


@router.get("/invitations", response_model=list[InvitationInfo])
def list_invitations(caller: CallerDep, services: ServicesDep) -> list[InvitationInfo]:
    """The pending manifests that list the caller (every one for the operator): who they
    invite and who has signed. Fetch one with ``GET /v1/rooms/{id}/manifest?digest=``, sign
    it and post it to ``/v1/rooms/{id}/signatures``."""
    return [InvitationInfo(
        room_id=i.room_id, manifest_digest=i.digest,
        parties=[InvitedPartyInfo(name=p.name, keyid=p.keyid, signed=p.signed)
                 for p in i.parties],
        signed=list(i.signed), missing=list(i.missing), you=i.you,
        submitted_by=i.submitted_by, created_at=iso(i.created_at),
        expires_at=iso(i.expires_at)) for i in invitations(services, caller)]


@router.get("/rooms/{room_id}", response_model=RoomInfo)
async def get_room(room_id: str, caller: FastCallerDep, services: ServicesDep,
                   digest: DigestQuery = None) -> Response:
    """The room: its manifest with the signatures, who signed. For a party a pending manifest
    of this id lists: that manifest (``complete`` false, who signed and who is missing)."""
    view = peek_room(services, room_id)
    if view is not None and digest is None and (
            caller.admin or view.party_with_key(caller.key) is not None):
        you = member_of(view, room_id, caller)
        return await cached_json(services, ("room", room_id, you),
                                 lambda: room_info(view, you))

    def compute() -> RoomInfo:
        found, you = room_or_invitation(services, room_id, caller, digest)
        return room_info(found, you)

    return await cached_json(services, ("room?", room_id, caller.key, caller.admin, digest),
                             compute)


@router.get("/rooms/{room_id}/manifest", response_model=EnvelopeModel)
def get_manifest(room_id: str, caller: CallerDep, services: ServicesDep,
                 digest: DigestQuery = None) -> EnvelopeModel:
    """The manifest envelope with every valid signature received so far (the room's, or the
    pending manifest of this id that lists the caller)."""
    return env_model(room_or_invitation(services, room_id, caller, digest)[0].envelope)


@router.post("/rooms/{room_id}/signatures", response_model=RoomInfo,
             openapi_extra=ENVELOPE_BODY)
def add_signatures(room_id: str, caller: CallerDep, envelope: EnvelopeBody,
                   services: ServicesDep) -> RoomInfo:
    """Add party signatures: post the manifest envelope carrying them (a pending manifest of
    this id, or a new one, as ``POST /v1/rooms`` takes it)."""
    view, _ = submit_manifest(services, envelope, caller, room_id=room_id)
    return room_info(view, view.party_with_key(caller.key))


def _attestation(worker: Worker) -> AttestationInfo:
    return AttestationInfo(digest=worker.attestation_digest, current=worker.current,
                           image_id=worker.image_id, isolation=worker.isolation,
                           envelope=env_model(worker.attestation))


@router.get("/attestation", response_model=AttestationInfo)
def platform_attestation(services: ServicesDep) -> AttestationInfo:
    """The current worker's attestation (public: parties verify it against their manifest)."""
    return _attestation(current_worker(services.db))


class PlatformInfo(BaseModel):
    platform_key: str
    launcher: str
    isolation: str


@router.get("/platform", response_model=PlatformInfo)
def platform(services: ServicesDep) -> PlatformInfo:
    """The platform's public key (what manifests pin in ``workers.platform_keys``)."""
    try:
        key = platform_public_key(services.settings.platform_key_file).hex()
    except ConfigError:
        key = ""
    return PlatformInfo(platform_key=key, launcher=services.settings.launcher,
                        isolation=services.launcher.isolation)


@router.get("/rooms/{room_id}/attestations", response_model=list[AttestationInfo])
def room_attestations(room_id: str, caller: CallerDep,
                      services: ServicesDep) -> list[AttestationInfo]:
    """Every published attestation the room's manifest accepts, the current worker first."""
    room_party(services, room_id, caller)
    manifest = load_room(services, room_id).manifest
    with services.db.read() as s:
        workers = list(s.scalars(select(Worker).order_by(Worker.current.desc(),
                                                         Worker.created_at.desc())))
    out = []
    for worker in workers:
        try:
            verify_attestation(Envelope.from_json(worker.attestation.encode()), manifest)
        except AttestationError:
            continue
        out.append(_attestation(worker))
    return out
