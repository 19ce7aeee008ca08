"""What the pages show, gathered with the SDK's own verifying functions and nothing else.

* the room: the pinned manifest, verified (:func:`sdk.party.trust.load_room`);
* the workers: the published attestations the manifest accepts
  (:func:`sdk.party.trust.fetch_workers`);
* the log: every entry and the newest checkpoint, verified and checked against the last
  checkpoint this machine saw (:func:`sdk.party.trust.fetch_log`), as ``room status`` and
  ``log verify`` do; a failure is kept and shown, not hidden;
* bundles: each loaded and verified as ``bundle review`` does
  (:func:`sdk.party.bundles.load_bundle`), with its approvals verified
  (:func:`sdk.protocol.approvals.approval_status`);
* receipts: assembled and verified against the verified log as ``result get`` does
  (:func:`sdk.party.results.receipt_file_for`, :func:`sdk.party.receipts.verify_receipt_file`).

The coordinator's own lists (bundles, runs, room status) only say what to look at; whatever
a page presents as a fact comes from a verified object, and what it shows from the coordinator
alone is labelled so.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sdk.errors import SealroomError
from sdk.party.bundles import load_bundle
from sdk.party.receipts import verify_receipt_file
from sdk.party.results import receipt_file_for, run_state
from sdk.party.session import Session
from sdk.party.trust import (
    PinnedRoom,
    VerifiedLog,
    VerifiedWorker,
    fetch_log,
    fetch_workers,
    load_room,
)
from sdk.protocol.approvals import ApprovalStatus, approval_status
from sdk.protocol.clock import utcnow
from sdk.protocol.dsse import Envelope
from sdk.protocol.models import Bundle
from sdk.protocol.verify import VerifiedReceipt

MAX_LISTED = 200


@dataclass
class Snapshot:
    """The verified state of the room, as of one page view."""

    room: PinnedRoom
    me: str
    workers: list[VerifiedWorker]
    rejected: list[str]
    log: VerifiedLog | None
    log_error: str | None

    @property
    def log_ok(self) -> bool:
        return self.log is not None


def snapshot(session: Session, room_id: str) -> Snapshot:
    """Load and verify the room, its workers and its log (a log failure is recorded)."""
    room = load_room(session, room_id)
    workers, rejected = fetch_workers(session, room)
    log: VerifiedLog | None = None
    error: str | None = None
    try:
        log = fetch_log(session, room, workers)
    except SealroomError as exc:
        error = exc.diagnostics()
    return Snapshot(room, session.key().name, workers, rejected, log, error)


@dataclass
class BundleView:
    """One bundle of the room: verified (``bundle`` set) or not (``error`` says why)."""

    digest: str
    listed: dict[str, Any]
    envelope: Envelope | None = None
    bundle: Bundle | None = None
    error: str | None = None
    status: ApprovalStatus | None = None

    def mine(self, me: str) -> str:
        """This party's decision: ``approved``, ``revoked``, ``expired`` or ``pending``."""
        if self.status is None:
            return "unverified"
        if me in self.status.revoked:
            return "revoked"
        if me in self.status.approved:
            return "approved"
        if me in self.status.expired:
            return "expired"
        return "pending"


def verified_bundle(
    session: Session, snap: Snapshot, digest: str, listed: dict[str, Any] | None = None
) -> BundleView:
    """Load and verify one bundle and its approvals (a failure is kept in ``error``)."""
    view = BundleView(digest, listed or {})
    try:
        envelope, bundle = load_bundle(session, snap.room, digest)
        view.envelope, view.bundle, view.digest = envelope, bundle, envelope.digest()
        statements = session.client().approvals(snap.room.room_id, view.digest)
        view.status = approval_status(
            statements, snap.room.manifest, snap.room.digest, view.digest, now=utcnow()
        )
    except SealroomError as exc:
        view.error = exc.diagnostics()
    return view


def room_bundles(session: Session, snap: Snapshot) -> list[BundleView]:
    """Every bundle the coordinator lists, each verified (newest first)."""
    listed = [b for b in session.client().bundles(snap.room.room_id) if isinstance(b, dict)]
    listed = listed[-MAX_LISTED:][::-1]
    return [verified_bundle(session, snap, str(b.get("digest", "")), b) for b in listed]


@dataclass
class RunView:
    """One run: what the coordinator reports, and its receipt verified (or why not)."""

    run_id: str
    listed: dict[str, Any]
    verified: VerifiedReceipt | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def reported_state(self) -> str:
        return run_state(self.listed)

    @property
    def has_receipt(self) -> bool:
        return bool(self.listed.get("has_receipt")) or self.listed.get("log_index") is not None


def verify_run(session: Session, snap: Snapshot, listed: dict[str, Any]) -> RunView:
    """Fetch a run's receipt and verify it against the verified log (as ``result get``
    does, without fetching an output)."""
    view = RunView(str(listed.get("run_id", "")), listed)
    if not view.has_receipt:
        return view
    if snap.log is None:
        view.error = "the log failed verification: " + (snap.log_error or "")
        return view
    try:
        envelope = session.client().receipt(snap.room.room_id, view.run_id)
        rfile = receipt_file_for(
            session,
            snap.room,
            snap.log,
            envelope,
            [w.envelope for w in snap.workers],
            view.run_id,
            {},
        )
        view.verified = verify_receipt_file(rfile, snap.room.manifest, snap.room.digest)
    except SealroomError as exc:
        view.error = exc.diagnostics()
    return view


def room_runs(session: Session, snap: Snapshot) -> list[RunView]:
    """The coordinator's runs of the room, newest first, each receipt verified."""
    listed = [r for r in session.client().runs(snap.room.room_id) if isinstance(r, dict)]
    return [verify_run(session, snap, r) for r in listed[-MAX_LISTED:][::-1]]


def bundle_titles(session: Session, snap: Snapshot, digests: Iterable[str]) -> dict[str, str]:
    """Digest → title of each bundle that verifies (labels; one fetch per bundle)."""
    titles: dict[str, str] = {}
    for digest in dict.fromkeys(digests):
        try:
            envelope, bundle = load_bundle(session, snap.room, digest)
        except SealroomError:
            continue
        titles[envelope.digest()] = bundle.title
    return titles
