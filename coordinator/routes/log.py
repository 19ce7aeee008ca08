"""``/v1/rooms/{room_id}/log``: entries, checkpoints, inclusion and consistency proofs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from sqlalchemy import select

from coordinator.logstore import (
    checkpoint_of,
    consistency,
    entry_rows,
    inclusion,
    latest_checkpoint,
    leaves_of,
    log_size,
)
from coordinator.rooms import room_party, room_party_async
from coordinator.routes.common import env_model
from coordinator.routes.deps import CallerDep, ServicesDep
from coordinator.routes.fast import FastCallerDep, cached_json
from coordinator.schemas import (
    ERRORS,
    CheckpointInfo,
    ConsistencyProof,
    InclusionProof,
    LogEntries,
)
from coordinator.storage.models import CheckpointRow
from sdk.protocol import merkle

router = APIRouter(prefix="/rooms/{room_id}/log", tags=["log"], responses=ERRORS)
MAX_PAGE = 10_000
Index = Annotated[int, Query(ge=0, le=2**40)]


@router.get("/entries", response_model=LogEntries)
def get_entries(room_id: str, caller: CallerDep, services: ServicesDep, start: Index = 0,
                end: Annotated[int | None, Query(ge=0, le=2**40)] = None) -> LogEntries:
    """Entries ``start <= index < end`` (at most 10 000), in order."""
    room_party(services, room_id, caller)
    stop = start + MAX_PAGE if end is None else min(end, start + MAX_PAGE)
    with services.db.read() as s:
        rows = entry_rows(s, room_id, start, stop)
        size = log_size(s, room_id)
    return LogEntries(room_id=room_id, start=start, tree_size=size,
                      entries=[env_model(r.envelope) for r in rows])


def _checkpoint(room_id: str, row: CheckpointRow | None) -> CheckpointInfo:
    if row is None:
        return CheckpointInfo(room_id=room_id, tree_size=0,
                              root_hash=merkle.EMPTY_ROOT.hex(), envelope=None)
    return CheckpointInfo(room_id=room_id, tree_size=row.tree_size, root_hash=row.root_hash,
                          envelope=env_model(row.envelope))


@router.get("/checkpoint", response_model=CheckpointInfo)
async def get_checkpoint(room_id: str, caller: FastCallerDep, services: ServicesDep,
                         tree_size: Annotated[int | None, Query(ge=1, le=2**40)] = None
                         ) -> Response:
    """The newest worker-signed checkpoint, or the one of ``tree_size`` (``envelope`` is null
    for an empty log)."""
    await room_party_async(services, room_id, caller)

    def compute() -> CheckpointInfo:
        with services.db.read() as s:
            if tree_size is None:
                return _checkpoint(room_id, latest_checkpoint(s, room_id))
            return _checkpoint(room_id, checkpoint_of(s, room_id, tree_size))

    return await cached_json(services, ("checkpoint", room_id, tree_size), compute)


@router.get("/checkpoints", response_model=list[CheckpointInfo])
def get_checkpoints(room_id: str, caller: CallerDep,
                    services: ServicesDep) -> list[CheckpointInfo]:
    """Every checkpoint, smallest tree first."""
    room_party(services, room_id, caller)
    with services.db.read() as s:
        rows = list(s.scalars(select(CheckpointRow).where(CheckpointRow.room_id == room_id)
                              .order_by(CheckpointRow.tree_size)))
    return [_checkpoint(room_id, r) for r in rows]


@router.get("/inclusion", response_model=InclusionProof)
def get_inclusion(room_id: str, index: Index, tree_size: Annotated[int, Query(ge=1, le=2**40)],
                  caller: CallerDep, services: ServicesDep) -> InclusionProof:
    """The audit path of entry ``index`` in the tree of the first ``tree_size`` entries."""
    room_party(services, room_id, caller)
    with services.db.read() as s:
        leaves = leaves_of(s, room_id)
    proof, root = inclusion(leaves, index, tree_size)
    return InclusionProof(index=index, tree_size=tree_size, leaf_hash=leaves[index].hex(),
                          root_hash=root.hex(), proof=[p.hex() for p in proof])


@router.get("/consistency", response_model=ConsistencyProof)
def get_consistency(room_id: str, first: Index, second: Index, caller: CallerDep,
                    services: ServicesDep) -> ConsistencyProof:
    """The RFC 9162 consistency proof between the trees of sizes ``first`` and ``second``."""
    room_party(services, room_id, caller)
    with services.db.read() as s:
        leaves = leaves_of(s, room_id)
    proof, old, new = consistency(leaves, first, second)
    return ConsistencyProof(first=first, second=second, first_root=old.hex(),
                            second_root=new.hex(), proof=[p.hex() for p in proof])
