"""``/v1/rooms/{room_id}/bundles``: query bundles, approvals and revocations."""

from __future__ import annotations

from fastapi import APIRouter, Response

from coordinator.bundles import (
    approvals_of,
    get_bundle,
    list_bundles,
    submit_approval,
    submit_bundle,
)
from coordinator.rooms import room_party
from coordinator.routes.common import approval_info, bundle_info
from coordinator.routes.deps import CallerDep, EnvelopeBody, ServicesDep
from coordinator.schemas import ENVELOPE_BODY, ERRORS, ApprovalInfo, BundleInfo

router = APIRouter(prefix="/rooms/{room_id}", tags=["bundles"], responses=ERRORS)


@router.post("/bundles", response_model=BundleInfo, status_code=201,
             openapi_extra=ENVELOPE_BODY)
def post_bundle(room_id: str, caller: CallerDep, envelope: EnvelopeBody,
                services: ServicesDep, response: Response) -> BundleInfo:
    """Submit a bundle signed by its author (a party). Idempotent (200 when known)."""
    row, created = submit_bundle(services, room_id, caller, envelope)
    if not created:
        response.status_code = 200
    return bundle_info(row)


@router.get("/bundles", response_model=list[BundleInfo])
def get_bundles(room_id: str, caller: CallerDep, services: ServicesDep) -> list[BundleInfo]:
    """Every bundle of the room."""
    room_party(services, room_id, caller)
    return [bundle_info(r) for r in list_bundles(services, room_id)]


@router.get("/bundles/{ref}", response_model=BundleInfo)
def get_one_bundle(room_id: str, ref: str, caller: CallerDep,
                   services: ServicesDep) -> BundleInfo:
    """A bundle by digest or unique prefix (6+ hex characters)."""
    room_party(services, room_id, caller)
    return bundle_info(get_bundle(services, room_id, ref))


def _decide(room_id: str, caller: CallerDep, envelope: EnvelopeBody, services: ServicesDep,
            response: Response, decision: str | None) -> ApprovalInfo:
    row, created = submit_approval(services, room_id, caller, envelope, decision)
    if not created:
        response.status_code = 200
    return approval_info(row)


@router.post("/approvals", response_model=ApprovalInfo, status_code=201,
             openapi_extra=ENVELOPE_BODY)
def post_approval(room_id: str, caller: CallerDep, envelope: EnvelopeBody,
                  services: ServicesDep, response: Response) -> ApprovalInfo:
    """Submit a party's signed approval or revocation of a bundle."""
    return _decide(room_id, caller, envelope, services, response, None)


@router.post("/revocations", response_model=ApprovalInfo, status_code=201,
             openapi_extra=ENVELOPE_BODY)
def post_revocation(room_id: str, caller: CallerDep, envelope: EnvelopeBody,
                    services: ServicesDep, response: Response) -> ApprovalInfo:
    """Submit a party's signed revocation (an approval statement with decision ``revoke``)."""
    return _decide(room_id, caller, envelope, services, response, "revoke")


@router.get("/bundles/{ref}/approvals", response_model=list[ApprovalInfo])
def get_approvals(room_id: str, ref: str, caller: CallerDep,
                  services: ServicesDep) -> list[ApprovalInfo]:
    """Every approval and revocation held for a bundle."""
    room_party(services, room_id, caller)
    digest = get_bundle(services, room_id, ref).digest
    return [approval_info(r) for r in approvals_of(services, room_id, digest)]
