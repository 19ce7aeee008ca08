"""Bundles, approvals and revocations: pre-checked with the protocol verifiers, then stored.

The coordinator keeps every approval and revocation it receives, each checked on arrival with
:func:`sdk.protocol.approvals.check_approval`. A job carries what
:func:`sdk.protocol.approvals.select_for_job` selects (every revocation of the bundle plus,
per party, its most recent unexpired approval), which is the set
:func:`sdk.protocol.approvals.verify_approvals` (and the worker) judges.
"""

from __future__ import annotations

import re
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from coordinator.context import Caller, Services
from coordinator.rooms import active_room, envelope_of, envelope_text, now_utc, require_party
from coordinator.storage.db import utcnow
from coordinator.storage.models import ApprovalRow, BundleRow
from sdk.errors import ConflictError, InputError, NotFoundError
from sdk.protocol.approvals import check_approval, select_for_job
from sdk.protocol.dsse import Envelope
from sdk.protocol.verify import verify_bundle

_Row = TypeVar("_Row", BundleRow, ApprovalRow)
_PREFIX = re.compile(r"^[0-9a-f]{6,64}$")


def submit_bundle(services: Services, room_id: str, caller: Caller,
                  envelope: Envelope) -> tuple[BundleRow, bool]:
    """Accept a signed bundle from a party of the room (idempotent by digest).

    Raises ``SignatureError``/``InputError`` from :func:`verify_bundle`, ``Forbidden``.
    """
    require_party(services, room_id, caller)
    view = active_room(services, room_id)
    bundle = verify_bundle(envelope, view.manifest, view.digest, now=now_utc())
    digest = envelope.digest()
    row = BundleRow(digest=digest, room_id=room_id, author=bundle.author,
                    sequence=bundle.sequence, title=bundle.title[:200],
                    envelope=envelope_text(envelope), created_at=utcnow())
    return _insert(services, BundleRow, digest, row)


def _insert(services: Services, model: type[_Row], digest: str,
            row: _Row) -> tuple[_Row, bool]:
    with services.db.read() as s:
        existing = s.get(model, digest)
    if existing is not None:
        return existing, False
    try:
        with services.db.write() as s:
            s.add(row)
    except IntegrityError:
        with services.db.read() as s:
            again = s.get(model, digest)
        if again is None:
            raise ConflictError("concurrent submission failed") from None
        return again, False
    return row, True


def get_bundle(services: Services, room_id: str, ref: str) -> BundleRow:
    """A bundle by digest or unique hex prefix (at least 6 characters).

    Raises ``NotFoundError``, ``InputError`` (not hex), ``ConflictError`` (ambiguous prefix).
    """
    if not _PREFIX.match(ref):
        raise InputError("bundle reference: 6 to 64 lowercase hex characters")
    with services.db.read() as s:
        rows = list(s.scalars(select(BundleRow).where(
            BundleRow.room_id == room_id, BundleRow.digest.startswith(ref)).limit(2)))
    if not rows:
        raise NotFoundError("no such bundle in this room")
    if len(rows) > 1:
        raise ConflictError("ambiguous bundle prefix")
    return rows[0]


def list_bundles(services: Services, room_id: str) -> list[BundleRow]:
    """Every bundle of a room, oldest first."""
    with services.db.read() as s:
        return list(s.scalars(select(BundleRow).where(BundleRow.room_id == room_id)
                              .order_by(BundleRow.created_at, BundleRow.digest)))


def submit_approval(services: Services, room_id: str, caller: Caller, envelope: Envelope,
                    decision: str | None = None) -> tuple[ApprovalRow, bool]:
    """Accept a party's approval or revocation of a bundle of this room.

    Checks the statement with :func:`sdk.protocol.approvals.check_approval` (signed by the
    party it names, bound to this room and manifest, unexpired, not issued in the future),
    that it names a stored bundle, and, when ``decision`` is given, that it is that decision.

    Raises ``SignatureError``, ``InputError``, ``NotFoundError`` (unknown bundle), ``Forbidden``.
    """
    require_party(services, room_id, caller)
    view = active_room(services, room_id)
    approval = check_approval(envelope, view.manifest, view.digest, now=now_utc())
    get_bundle(services, room_id, approval.bundle_digest)
    if decision is not None and approval.decision != decision:
        raise InputError(f"expected a {decision} statement")
    digest = envelope.digest()
    row = ApprovalRow(digest=digest, room_id=room_id, bundle_digest=approval.bundle_digest,
                      party=approval.party, decision=approval.decision,
                      issued_at=approval.issued_at, expires=approval.expires,
                      envelope=envelope_text(envelope), created_at=utcnow())
    return _insert(services, ApprovalRow, digest, row)


def approvals_of(services: Services, room_id: str, bundle_digest: str) -> list[ApprovalRow]:
    """Every approval and revocation held for a bundle, oldest first."""
    with services.db.read() as s:
        return list(s.scalars(select(ApprovalRow).where(
            ApprovalRow.room_id == room_id, ApprovalRow.bundle_digest == bundle_digest)
            .order_by(ApprovalRow.issued_at, ApprovalRow.digest)))


def job_approvals(services: Services, room_id: str, bundle_digest: str) -> list[Envelope]:
    """The statements a job of this bundle carries, as
    :func:`sdk.protocol.approvals.select_for_job` selects them from those held."""
    rows = select_for_job(approvals_of(services, room_id, bundle_digest), now=now_utc())
    return [envelope_of(r.envelope) for r in rows]
