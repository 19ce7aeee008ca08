"""Room status metrics, ``/metrics`` (Prometheus text) and ``/healthz``."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse
from sqlalchemy import select, text

from coordinator.errors import Forbidden
from coordinator.metrics import RoomStatus, prometheus_text, room_status
from coordinator.rooms import room_party_async
from coordinator.routes.deps import CallerDep, ServicesDep
from coordinator.routes.fast import FastCallerDep, cached_json
from coordinator.schemas import ERRORS, Health
from coordinator.storage.models import Worker

router = APIRouter(tags=["status"], responses=ERRORS)
root = APIRouter(tags=["status"], responses=ERRORS)


@router.get("/rooms/{room_id}/status", response_model=RoomStatus)
async def get_status(room_id: str, caller: FastCallerDep, services: ServicesDep) -> Response:
    """Match rate, query volume and turnaround, privacy posture, output utility."""
    await room_party_async(services, room_id, caller)
    return await cached_json(services, ("status", room_id), lambda: room_status(services, room_id))


@root.get("/metrics", response_class=PlainTextResponse,
          responses={200: {"content": {"text/plain": {}}}})
def metrics(caller: CallerDep, services: ServicesDep) -> PlainTextResponse:
    """Prometheus text format (operator token required)."""
    if not caller.admin:
        raise Forbidden("metrics need the admin token")
    return PlainTextResponse(prometheus_text(services),
                             media_type="text/plain; version=0.0.4; charset=utf-8")


@root.get("/healthz", response_model=Health)
def healthz(services: ServicesDep) -> Health:
    """Liveness: the database answers; whether a worker is provisioned."""
    with services.db.read() as s:
        s.execute(text("SELECT 1"))
        provisioned = s.scalars(select(Worker).limit(1)).first() is not None
    return Health(status="ok", database=True, worker_provisioned=provisioned)
