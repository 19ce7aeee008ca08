"""What a party's or auditor's machine verifies before it relies on anything a coordinator
relays: the pinned manifest, the published worker attestations, and the room log checked
against the last checkpoint this machine saw (rollback and fork detection, DESIGN §7).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from sdk.errors import AttestationError, ConfigError, LogError
from sdk.party.files import read_envelope_file
from sdk.party.session import Session
from sdk.protocol import merkle
from sdk.protocol.budget import remaining_after, runs_of, spent_of
from sdk.protocol.canonical import parse_json
from sdk.protocol.clock import utcnow
from sdk.protocol.dsse import Envelope
from sdk.protocol.models import Attestation, Dataset, Manifest
from sdk.protocol.records import Checkpoint, LogEntry, log_origin
from sdk.protocol.verify import (
    log_leaf_hashes,
    verify_attestation,
    verify_checkpoint,
    verify_log_against_checkpoint,
    verify_log_entries,
    verify_manifest,
)

if TYPE_CHECKING:
    from sdk.party.home import Home


@dataclass(frozen=True)
class PinnedRoom:
    """A verified, fully signed manifest and its digest."""

    envelope: Envelope
    manifest: Manifest
    digest: str

    @property
    def room_id(self) -> str:
        return self.manifest.room_id


def load_room(session: Session, room: str | None = None, manifest_file: str | None = None) -> PinnedRoom:
    """The room's manifest, verified: from ``manifest_file`` (an auditor's copy) or the one
    this machine pinned. Raises ``ConfigError`` when nothing is pinned."""
    if manifest_file:
        envelope = read_envelope_file(manifest_file, "manifest")
        manifest = verify_manifest(envelope, now=utcnow())
        return PinnedRoom(envelope, manifest, envelope.digest())
    room_id = session.room_id(room)
    envelope_or_none = session.home.pinned_manifest(room_id)
    if envelope_or_none is None:
        raise ConfigError(
            f"no manifest pinned for room {room_id}: run `sealroom room verify` on the "
            "manifest you signed first"
        )
    manifest = verify_manifest(
        envelope_or_none, now=utcnow(), expected_digest=envelope_or_none.digest()
    )
    return PinnedRoom(envelope_or_none, manifest, envelope_or_none.digest())


@dataclass(frozen=True)
class VerifiedWorker:
    """An attestation the manifest accepts."""

    envelope: Envelope
    attestation: Attestation

    @property
    def digest(self) -> str:
        return self.envelope.digest()


def verify_workers(
    room: PinnedRoom, envelopes: Sequence[Envelope]
) -> tuple[list[VerifiedWorker], list[str]]:
    """Split published attestations into accepted ones and the reasons others were not."""
    accepted: list[VerifiedWorker] = []
    rejected: list[str] = []
    for envelope in envelopes:
        try:
            accepted.append(VerifiedWorker(envelope, verify_attestation(envelope, room.manifest)))
        except AttestationError as exc:
            rejected.append(f"{envelope.digest()[:12]}: {exc.message}")
    return accepted, rejected


def current_worker(room: PinnedRoom, envelopes: Sequence[Envelope]) -> VerifiedWorker:
    """The worker to seal to: the current one (the coordinator lists it first), which the
    manifest must accept.

    Raises ``AttestationError`` (nothing is sealed) when it is not accepted.
    """
    if not envelopes:
        raise AttestationError("the coordinator publishes no worker attestation for this room")
    current = envelopes[0]
    return VerifiedWorker(current, verify_attestation(current, room.manifest))


def worker_signing_keys(workers: Sequence[VerifiedWorker]) -> dict[str, bytes]:
    """The trusted set of worker signing keys, by attestation digest."""
    return {w.digest: w.attestation.worker_signing_key for w in workers}


@dataclass
class VerifiedLog:
    """A room log whose every entry is signed by an attested worker and whose entries are
    exactly the tree of its newest checkpoint."""

    room_id: str
    envelopes: list[Envelope]
    entries: list[LogEntry]
    checkpoint: Checkpoint | None
    checkpoint_envelope: Envelope | None
    previous: Checkpoint | None = None
    leaves: list[bytes] = field(default_factory=list)

    def spent(self, dataset: str) -> Decimal:
        """Epsilon charged to ``dataset`` so far (see :mod:`sdk.protocol.budget`)."""
        return spent_of(self.entries, dataset).epsilon

    def left(self, dataset: Dataset) -> Decimal:
        """Epsilon ``dataset`` has left (never below 0; see :mod:`sdk.protocol.budget`)."""
        budget = Decimal(dataset.epsilon_budget)
        left = remaining_after({dataset.name: budget}, {dataset.name: self.spent(dataset.name)})
        return max(Decimal(0), left[dataset.name])

    def runs_of(self, bundle_digest: str) -> int:
        """How many runs of the bundle have started (see :mod:`sdk.protocol.budget`)."""
        return runs_of(self.entries, bundle_digest)

    def root_at(self, size: int) -> str:
        """Root hash (hex) of the first ``size`` entries."""
        return merkle.root(self.leaves[:size]).hex()


def check_consistency(home: Home, room_id: str, leaves: Sequence[bytes],
                      checkpoint: Checkpoint | None) -> Checkpoint | None:
    """Compare a verified log with the last checkpoint this machine stored for the room.

    Returns that stored checkpoint. Raises ``LogError`` naming a rollback (fewer entries than
    seen before) or a fork (the entries seen before were rewritten).
    """
    stored = home.last_checkpoint(room_id)
    if stored is None:
        return None
    old, _ = stored
    size = 0 if checkpoint is None else checkpoint.tree_size
    if size < old.tree_size:
        raise LogError(
            f"log rollback: the coordinator shows {size} entries, this machine already saw "
            f"{old.tree_size} (checkpoint {old.root_hash[:12]})"
        )
    if merkle.root(list(leaves[: old.tree_size])).hex() != old.root_hash:
        raise LogError(
            f"log fork: the first {old.tree_size} entries differ from the checkpoint this "
            f"machine saw ({old.root_hash[:12]})"
        )
    return old


def verify_room_log(
    home: Home,
    room: PinnedRoom,
    workers: Sequence[VerifiedWorker],
    entries: Sequence[Envelope],
    checkpoint_envelope: Envelope | None,
    *,
    remember: bool = True,
) -> VerifiedLog:
    """Verify every entry, the checkpoint, and consistency with the stored checkpoint; then
    store the new checkpoint (when ``remember``).

    Raises:
        LogError: an unsigned or foreign entry, entries that are not the checkpoint's tree,
            a rollback or a fork.
    """
    trusted = worker_signing_keys(workers)
    room_id = room.room_id
    parsed = verify_log_entries(entries, trusted, room_id) if entries else []
    checkpoint: Checkpoint | None = None
    if checkpoint_envelope is None:
        if entries:
            raise LogError("log: entries without a checkpoint")
    else:
        checkpoint = verify_checkpoint(checkpoint_envelope, trusted, log_origin(room_id))
        verify_log_against_checkpoint(entries, checkpoint)
    leaves = log_leaf_hashes(entries)
    previous = check_consistency(home, room_id, leaves, checkpoint)
    if remember and checkpoint is not None and checkpoint_envelope is not None:
        if previous is None or checkpoint.tree_size >= previous.tree_size:
            home.save_checkpoint(room_id, checkpoint, checkpoint_envelope)
    return VerifiedLog(
        room_id, list(entries), parsed, checkpoint, checkpoint_envelope, previous, leaves
    )


def fetch_workers(session: Session, room: PinnedRoom) -> tuple[list[VerifiedWorker], list[str]]:
    """Fetch the room's published attestations and verify them against the manifest."""
    envelopes = session.client().attestations(room.room_id)
    return verify_workers(room, envelopes)


def fetch_log(session: Session, room: PinnedRoom, workers: Sequence[VerifiedWorker]) -> VerifiedLog:
    """Fetch every log entry and the newest checkpoint, verify them and check consistency
    with what this machine saw before (see :func:`verify_room_log`)."""
    client = session.client()
    checkpoint = client.checkpoint(room.room_id)
    entries: list[Envelope] = []
    if checkpoint is not None:
        # entries may be appended after the checkpoint was read: take exactly its tree
        size = Checkpoint.from_dict(parse_json(checkpoint.payload)).tree_size
        entries = client.log_entries(room.room_id, 0, size)[:size]
    return verify_room_log(session.home, room, workers, entries, checkpoint)


def path_or_none(value: str | None) -> Path | None:
    """``Path`` of an optional argument."""
    return None if value is None else Path(value).expanduser()
