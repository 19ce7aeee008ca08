"""``/v1/rooms`` and ``/v1/attestation``: manifests, signatures, the worker's attestation."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel
from sqlalchemy import select

from coordinator.auth import party_in_room
from coordinator.rooms import load_room, submit_manifest
from coordinator.routes.common import env_model, room_info
from coordinator.routes.deps import CallerDep, EnvelopeBody, ServicesDep
from coordinator.schemas import (
    ENVELOPE_BODY,
    ERRORS,
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


@router.post("/rooms", response_model=RoomInfo, status_code=201, openapi_extra=ENVELOPE_BODY)
def create_room(caller: CallerDep, envelope: EnvelopeBody, services: ServicesDep,
                response: Response) -> RoomInfo:
    """Submit a room manifest signed by at least one of its parties (the caller must be one).

    Re-submitting the same manifest with more signatures merges them (200)."""
    view, created = submit_manifest(services, envelope, caller)
    if not created:
        response.status_code = 200
    return room_info(view, view.party_with_key(caller.key))


@router.get("/rooms", response_model=list[RoomSummary])
def list_rooms(caller: CallerDep, services: ServicesDep) -> list[RoomSummary]:
    """The rooms whose manifest lists the caller (every room for the operator)."""
    with services.db.read() as s:
        query = select(Room)
        if not caller.admin:
            query = query.join(RoomParty, RoomParty.room_id == Room.room_id).where(
                RoomParty.signing_key == caller.key)
        rows = list(s.scalars(query.order_by(Room.room_id)))
    return [RoomSummary(room_id=r.room_id, manifest_digest=r.manifest_digest,
                        complete=r.complete) for r in rows]


@router.get("/rooms/{room_id}", response_model=RoomInfo)
def get_room(room_id: str, caller: CallerDep, services: ServicesDep) -> RoomInfo:
    """The room: its manifest with the signatures received, who signed and who is missing."""
    you = party_in_room(services, room_id, caller)
    return room_info(load_room(services, room_id), you)


@router.get("/rooms/{room_id}/manifest", response_model=EnvelopeModel)
def get_manifest(room_id: str, caller: CallerDep, services: ServicesDep) -> EnvelopeModel:
    """The manifest envelope with every valid signature received so far."""
    party_in_room(services, room_id, caller)
    return env_model(load_room(services, room_id).envelope)


@router.post("/rooms/{room_id}/signatures", response_model=RoomInfo,
             openapi_extra=ENVELOPE_BODY)
def add_signatures(room_id: str, caller: CallerDep, envelope: EnvelopeBody,
                   services: ServicesDep) -> RoomInfo:
    """Add party signatures: post the room's manifest envelope carrying them."""
    you = party_in_room(services, room_id, caller)
    view, _ = submit_manifest(services, envelope, caller, room_id=room_id)
    return room_info(view, you)


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
    party_in_room(services, room_id, caller)
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
