"""The room log as the coordinator stores it: worker-signed entries, checkpoints, proofs.

The coordinator cannot sign entries; it only appends what a worker returned, and only when the
worker's new checkpoint extends the head it was given (checked by :mod:`coordinator.results`).
Rows are keyed by ``(room_id, idx)``, so two appends on the same head cannot both land.
Proofs are computed with :mod:`sdk.protocol.merkle` over the stored leaf hashes; the root of a
sequence of leaves never changes, so :func:`root_of` keeps the roots it computed (by content).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from coordinator.storage.db import utcnow
from coordinator.storage.models import CheckpointRow, LogEntryRow
from sdk.errors import InputError, NotFoundError
from sdk.protocol import merkle
from sdk.protocol.budget import CHARGE_KIND, Spent, spent_by_dataset
from sdk.protocol.canonical import parse_json
from sdk.protocol.dsse import Envelope
from sdk.protocol.records import Checkpoint, LogEntry


@dataclass(frozen=True)
class LogHead:
    """A room's stored log: entries in order and the newest checkpoint (None when empty)."""

    entries: list[Envelope]
    leaves: list[bytes]
    checkpoint: Envelope | None

    @property
    def size(self) -> int:
        return len(self.entries)


def entry_rows(session: Session, room_id: str, start: int = 0,
               end: int | None = None) -> list[LogEntryRow]:
    """Stored entries ``start <= idx < end`` in order."""
    query = select(LogEntryRow).where(LogEntryRow.room_id == room_id, LogEntryRow.idx >= start)
    if end is not None:
        query = query.where(LogEntryRow.idx < end)
    return list(session.scalars(query.order_by(LogEntryRow.idx)))


def latest_checkpoint(session: Session, room_id: str) -> CheckpointRow | None:
    """The checkpoint with the largest tree size."""
    return session.scalars(
        select(CheckpointRow).where(CheckpointRow.room_id == room_id)
        .order_by(CheckpointRow.tree_size.desc()).limit(1)
    ).first()


def log_size(session: Session, room_id: str) -> int:
    """Number of stored entries."""
    return int(session.scalar(
        select(func.count()).select_from(LogEntryRow).where(LogEntryRow.room_id == room_id)
    ) or 0)


def head(session: Session, room_id: str) -> LogHead:
    """The log as a job is built on: the entries of the newest checkpoint's tree."""
    cp = latest_checkpoint(session, room_id)
    size = 0 if cp is None else cp.tree_size
    rows = entry_rows(session, room_id, 0, size)
    return LogHead(
        [Envelope.from_json(r.envelope.encode()) for r in rows],
        [bytes.fromhex(r.leaf_hash) for r in rows],
        None if cp is None else Envelope.from_json(cp.envelope.encode()),
    )


def append(session: Session, room_id: str, old_size: int, entries: list[Envelope],
           kinds: list[LogEntry], checkpoint: Envelope, tree_size: int, root_hash: str) -> None:
    """Store new entries at ``old_size..`` and their checkpoint (in the caller's transaction).

    The ``(room_id, idx)`` key makes a second append on the same head fail at commit.
    """
    for offset, (envelope, entry) in enumerate(zip(entries, kinds, strict=True)):
        session.add(LogEntryRow(
            room_id=room_id, idx=old_size + offset, kind=entry.kind, run_id=entry.run_id,
            leaf_hash=merkle.leaf_hash(envelope.to_json()).hex(),
            envelope=envelope.to_json().decode(),
        ))
    session.add(CheckpointRow(room_id=room_id, tree_size=tree_size, root_hash=root_hash,
                              envelope=checkpoint.to_json().decode(), created_at=utcnow()))


def leaves_of(session: Session, room_id: str) -> list[bytes]:
    """Every stored leaf hash of the room's log, in order (only that column is read)."""
    return [bytes.fromhex(h) for h in session.scalars(
        select(LogEntryRow.leaf_hash).where(LogEntryRow.room_id == room_id)
        .order_by(LogEntryRow.idx))]


_ROOTS: OrderedDict[bytes, bytes] = OrderedDict()
_ROOTS_LOCK = threading.Lock()
MAX_ROOTS = 4096


def root_of(leaves: list[bytes]) -> bytes:
    """:func:`sdk.protocol.merkle.root` of ``leaves``, kept by their content (a verified
    prefix is never recomputed)."""
    key = hashlib.sha256(b"".join(leaves)).digest() + len(leaves).to_bytes(8, "big")
    with _ROOTS_LOCK:
        hit = _ROOTS.get(key)
        if hit is not None:
            _ROOTS.move_to_end(key)
            return hit
    root = merkle.root(leaves)
    with _ROOTS_LOCK:
        _ROOTS[key] = root
        while len(_ROOTS) > MAX_ROOTS:
            _ROOTS.popitem(last=False)
    return root


def inclusion(leaves: list[bytes], index: int, tree_size: int) -> tuple[list[bytes], bytes]:
    """(audit path, root) for leaf ``index`` in the tree of the first ``tree_size`` leaves.

    Raises ``InputError`` for an index or size outside the stored log.
    """
    if not 0 < tree_size <= len(leaves) or not 0 <= index < tree_size:
        raise InputError(f"inclusion: need 0 <= index < tree_size <= {len(leaves)}")
    tree = leaves[:tree_size]
    return merkle.inclusion_proof(tree, index), merkle.root(tree)


def consistency(leaves: list[bytes], first: int, second: int) -> tuple[list[bytes], bytes, bytes]:
    """(proof, first root, second root) between two sizes of the stored log.

    Raises ``InputError`` unless ``0 <= first <= second <= size``.
    """
    if not 0 <= first <= second <= len(leaves):
        raise InputError(f"consistency: need 0 <= first <= second <= {len(leaves)}")
    tree = leaves[:second]
    return (merkle.consistency_proof(tree, first), merkle.root(leaves[:first]),
            merkle.root(tree))


def budget_spent(session: Session, room_id: str) -> dict[str, Spent]:
    """Dataset → the exact epsilon and delta charged to it, summed by
    :func:`sdk.protocol.budget.spent_by_dataset` from the stored ``budget_charged`` entries
    (datasets never charged are absent).

    The entries were verified (worker signature, room, chain) when they were appended.
    Raises ``PrivacyError`` for a charge that is not a finite, non-negative decimal.
    """
    rows = session.scalars(select(LogEntryRow).where(
        LogEntryRow.room_id == room_id, LogEntryRow.kind == CHARGE_KIND).order_by(LogEntryRow.idx))
    return spent_by_dataset(
        LogEntry.from_dict(parse_json(Envelope.from_json(r.envelope.encode()).payload))
        for r in rows)


def checkpoint_of(session: Session, room_id: str, tree_size: int | None = None) -> CheckpointRow:
    """A stored checkpoint (the newest when ``tree_size`` is None). Raises ``NotFoundError``."""
    if tree_size is None:
        row = latest_checkpoint(session, room_id)
    else:
        row = session.get(CheckpointRow, (room_id, tree_size))
    if row is None:
        raise NotFoundError("no such checkpoint")
    return row


def parsed_checkpoint(envelope: Envelope) -> Checkpoint:
    """A stored (already verified) checkpoint's payload."""
    return Checkpoint.from_dict(parse_json(envelope.payload))
