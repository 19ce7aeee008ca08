"""``/v1/rooms/{room_id}/runs``: requesting runs, their status, receipts, sealed outputs and
the recipients' feedback."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response
from fastapi.responses import FileResponse

from coordinator.context import Caller, Services
from coordinator.errors import Forbidden
from coordinator.logstore import checkpoint_of, entry_rows, inclusion, leaves_of
from coordinator.rooms import require_party, room_party, room_party_async
from coordinator.routes.common import env_model, run_info
from coordinator.routes.deps import CallerDep, ServicesDep
from coordinator.routes.fast import FastCallerDep, cached_json
from coordinator.runs import create_run, get_run, list_runs
from coordinator.schemas import (
    ERRORS,
    FeedbackInfo,
    FeedbackRequest,
    ReceiptInfo,
    RunInfo,
    RunRequest,
)
from coordinator.storage.db import utcnow
from coordinator.storage.models import Feedback, OutputRow, RunRow
from sdk.errors import ConflictError, NotFoundError

router = APIRouter(prefix="/rooms/{room_id}/runs", tags=["runs"], responses=ERRORS)

IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", max_length=200, pattern=r"^[\x21-\x7e]{1,200}$",
           description="retrying with the same key returns the same run"),
]


@router.post("", response_model=RunInfo, status_code=202)
def post_run(room_id: str, body: RunRequest, caller: CallerDep, services: ServicesDep,
             response: Response, idempotency_key: IdempotencyKey = None) -> RunInfo:
    """Queue a run of an approved bundle. With an ``Idempotency-Key``, a retry returns the
    same run (200)."""
    row, created = create_run(services, room_id, caller, body.bundle_digest, idempotency_key)
    if not created:
        response.status_code = 200
    return run_info(row)


@router.get("", response_model=list[RunInfo])
def get_runs(room_id: str, caller: CallerDep, services: ServicesDep) -> list[RunInfo]:
    """Every run of the room."""
    room_party(services, room_id, caller)
    return [run_info(r) for r in list_runs(services, room_id)]


@router.get("/{run_id}", response_model=RunInfo)
async def get_one_run(room_id: str, run_id: str, caller: FastCallerDep,
                      services: ServicesDep) -> Response:
    """A run's state (queued, running, succeeded, refused, failed) and error code."""
    await room_party_async(services, room_id, caller)
    return await cached_json(services, ("run", room_id, run_id),
                             lambda: run_info(get_run(services, room_id, run_id)))


def _receipt(services: Services, room_id: str, run_id: str) -> ReceiptInfo:
    run = get_run(services, room_id, run_id)
    if run.receipt is None or run.log_index is None:
        raise NotFoundError("this run has no receipt (yet)")
    with services.db.read() as s:
        leaves = leaves_of(s, room_id)
        entry = entry_rows(s, room_id, run.log_index, run.log_index + 1)[0]
        checkpoint = checkpoint_of(s, room_id, run.log_index + 1)
    proof, _ = inclusion(leaves, run.log_index, run.log_index + 1)
    return ReceiptInfo(run_id=run_id, receipt=env_model(run.receipt), log_index=run.log_index,
                       log_entry=env_model(entry.envelope),
                       inclusion_proof=[p.hex() for p in proof],
                       checkpoint=env_model(checkpoint.envelope))


@router.get("/{run_id}/receipt", response_model=ReceiptInfo)
async def get_receipt(room_id: str, run_id: str, caller: FastCallerDep,
                      services: ServicesDep) -> Response:
    """The worker-signed receipt, its log entry and the inclusion proof under its checkpoint."""
    await room_party_async(services, room_id, caller)
    return await cached_json(services, ("receipt", room_id, run_id),
                             lambda: _receipt(services, room_id, run_id))


def _recipient(services: Services, room_id: str, run_id: str,
               caller: Caller) -> tuple[str, RunRow]:
    """The caller's party name and the run, when the caller is one of its recipients.

    Raises ``Forbidden`` for anyone else, ``NotFoundError`` for an unknown run.
    """
    party = require_party(services, room_id, caller)
    run = get_run(services, room_id, run_id)
    if party not in run.recipients.split(","):
        raise Forbidden("only the run's recipients may do this")
    return party, run


@router.get("/{run_id}/output", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}}})
def get_output(room_id: str, run_id: str, caller: CallerDep,
               services: ServicesDep) -> FileResponse:
    """The output sealed to the caller (only a recipient of the run)."""
    party, _ = _recipient(services, room_id, run_id, caller)
    with services.db.read() as s:
        row = s.get(OutputRow, (run_id, party))
    if row is None:
        raise NotFoundError("no output for you in this run")
    return FileResponse(services.blobs.open(row.ciphertext_digest),
                        media_type="application/octet-stream",
                        headers={"X-Sealroom-Ciphertext-Digest": row.ciphertext_digest})


@router.post("/{run_id}/feedback", response_model=FeedbackInfo)
def post_feedback(room_id: str, run_id: str, body: FeedbackRequest, caller: CallerDep,
                  services: ServicesDep) -> FeedbackInfo:
    """A recipient says whether the output changed a decision (output utility; the match rate
    is measured by the worker, in the receipt)."""
    party, run = _recipient(services, room_id, run_id, caller)
    if run.state != "succeeded":
        raise ConflictError("feedback is for succeeded runs")
    with services.db.write() as s:
        row = s.get(Feedback, (run_id, party))
        if row is None:
            row = Feedback(run_id=run_id, party=party, room_id=room_id,
                           changed_decision=body.changed_decision,
                           note=body.note, created_at=utcnow())
            s.add(row)
        row.changed_decision, row.note = body.changed_decision, body.note
    return FeedbackInfo(run_id=run_id, party=party, changed_decision=body.changed_decision)
