"""``/v1/admin``: operator routes (admin token)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from coordinator.auth import Caller, ServicesDep, require_admin
from coordinator.jobs import current_worker
from coordinator.routes.common import env_model
from coordinator.schemas import ERRORS, AttestationInfo
from coordinator.worker import provision_worker

router = APIRouter(prefix="/admin", tags=["admin"], responses=ERRORS)


@router.post("/workers", response_model=AttestationInfo, status_code=201)
async def provision(services: ServicesDep,
                    _admin: Annotated[Caller, Depends(require_admin)]) -> AttestationInfo:
    """Provision a new worker and publish its attestation (it becomes the current worker)."""
    await run_in_threadpool(provision_worker, services.settings, services.launcher, services.db)
    worker = await run_in_threadpool(current_worker, services)
    return AttestationInfo(digest=worker.attestation_digest, current=True,
                           image_id=worker.image_id, isolation=worker.isolation,
                           envelope=env_model(worker.attestation))
