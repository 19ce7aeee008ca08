"""``/v1/admin``: operator routes (admin token)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from coordinator.routes.common import env_model
from coordinator.routes.deps import AdminDep, ServicesDep
from coordinator.schemas import ERRORS, AttestationInfo
from coordinator.worker import current_worker, provision_worker

router = APIRouter(prefix="/admin", tags=["admin"], responses=ERRORS)


@router.post("/workers", response_model=AttestationInfo, status_code=201)
async def provision(services: ServicesDep,
                    _admin: AdminDep) -> AttestationInfo:
    """Provision a new worker and publish its attestation (it becomes the current worker)."""
    await run_in_threadpool(provision_worker, services.settings, services.launcher, services.db)
    worker = await run_in_threadpool(current_worker, services.db)
    return AttestationInfo(digest=worker.attestation_digest, current=True,
                           image_id=worker.image_id, isolation=worker.isolation,
                           envelope=env_model(worker.attestation))
