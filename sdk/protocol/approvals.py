"""The approval rule, defined once: a bundle runs only when every party of the manifest holds
an unexpired ``approve`` of its exact digest and none has revoked it (DESIGN §4).

* :func:`check_approval` — one approval statement: signed by the party it names, bound to this
  room and manifest (and bundle), unexpired, not issued in the future;
* :func:`verify_approvals` — the whole rule, raising and naming who is missing (the worker,
  the verifier of record, and the SDK call it), including :func:`follow_latest_missing`: an
  input that reads uploads made after approval needs its owner's explicit word;
* :func:`approval_status` — the same checks, reported per party and never raising (review,
  ``room status``);
* :func:`select_for_job` — which stored statements a job carries (the coordinator).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, TypeVar

from sdk.errors import InputError, SealroomError, SignatureError
from sdk.protocol.clock import format_time, parse_time
from sdk.protocol.dsse import Envelope, open_envelope
from sdk.protocol.models import Approval, Bundle, Manifest

APPROVE = "approve"
REVOKE = "revoke"


def _signed_and_bound(
    envelope: Envelope, manifest: Manifest, manifest_digest: str, bundle_digest: str | None
) -> Approval:
    payload, result = open_envelope(envelope, Approval.KIND, manifest.signing_keys(), threshold=1)
    approval = Approval.from_dict(payload)
    if approval.party not in result.signed:
        raise SignatureError("approval: not signed by the party it names")
    if (
        approval.room_id != manifest.room_id
        or approval.manifest_digest != manifest_digest
        or (bundle_digest is not None and approval.bundle_digest != bundle_digest)
    ):
        raise InputError("approval: bound to another room, manifest or bundle")
    return approval


def check_approval(
    envelope: Envelope,
    manifest: Manifest,
    manifest_digest: str,
    *,
    now: datetime,
    bundle_digest: str | None = None,
) -> Approval:
    """Verify one approval or revocation statement and return its payload.

    ``bundle_digest``, when given, must be the statement's bundle.

    Raises:
        SignatureError: not signed by a party of the room, signed by another party than the
            one it names, or expired.
        InputError: malformed, of another payload type, bound to another room, manifest or
            bundle, or issued in the future.
    """
    approval = _signed_and_bound(envelope, manifest, manifest_digest, bundle_digest)
    if parse_time(approval.expires, "approval.expires") <= now:
        raise SignatureError(f"approval: the approval of {approval.party} has expired")
    if parse_time(approval.issued_at, "approval.issued_at") > now:
        raise InputError("approval: issued in the future")
    return approval


@dataclass(frozen=True)
class ApprovalSet:
    """The verified approvals of one bundle: one per party, in party order."""

    approvals: tuple[Approval, ...]
    digests: tuple[str, ...]


def verify_approvals(
    envelopes: Sequence[Envelope],
    manifest: Manifest,
    manifest_digest: str,
    bundle_digest: str,
    *,
    now: datetime,
    bundle: Bundle | None = None,
) -> ApprovalSet:
    """Check that every party approved this exact bundle and none revoked it, and (given the
    ``bundle`` itself) that the owner of every ``follow_latest`` input agreed to it.

    Approvals of another bundle, room or manifest, expired ones, and envelopes of another type
    (a receipt presented as an approval) are refused, not skipped.

    Raises:
        SignatureError: a party is missing, an approval is signed by someone other than the
            party it names, a party revoked, or an owner did not agree to follow new uploads
            (the message names them).
        InputError: a malformed approval or one bound to something else.
    """
    by_party: dict[str, tuple[Approval, str]] = {}
    revoked: list[str] = []
    for envelope in envelopes:
        approval = check_approval(envelope, manifest, manifest_digest, now=now,
                                  bundle_digest=bundle_digest)
        if approval.decision == REVOKE:
            revoked.append(approval.party)
            continue
        if approval.party in by_party:
            raise InputError(f"approval: two approvals from {approval.party}")
        by_party[approval.party] = (approval, envelope.digest())
    if revoked:
        raise SignatureError(f"approvals: revoked by {', '.join(sorted(set(revoked)))}")
    missing = [p.name for p in manifest.parties if p.name not in by_party]
    if missing:
        raise SignatureError(f"approvals: missing from {', '.join(missing)}")
    ordered = [by_party[p.name] for p in manifest.parties]
    result = ApprovalSet(tuple(a for a, _ in ordered), tuple(d for _, d in ordered))
    if bundle is not None:
        unagreed = follow_latest_missing(result.approvals, bundle, manifest)
        if unagreed:
            raise SignatureError("approvals: " + "; ".join(
                f"{owner} has not agreed that {name!r} follows new uploads"
                for name, owner in unagreed))
    return result


def follow_latest_missing(
    approvals: Sequence[Approval], bundle: Bundle, manifest: Manifest
) -> list[tuple[str, str]]:
    """The ``(dataset, owner)`` pairs of the bundle's ``follow_latest`` inputs whose owner's
    approval does not name the dataset in its own ``follow_latest`` (approving the bundle is
    not enough: the owner must agree that runs read uploads made after the approval)."""
    agreed = {(a.party, name) for a in approvals if a.decision == APPROVE
              for name in a.follow_latest}
    out = []
    for item in bundle.inputs:
        if item.follow_latest:
            owner = manifest.dataset(item.dataset).owner
            if (owner, item.dataset) not in agreed:
                out.append((item.dataset, owner))
    return out


@dataclass(frozen=True)
class ApprovalStatus:
    """Where a bundle stands, party by party, from the statements held.

    ``approved`` maps a party to the expiry of its valid approval; ``revoked`` maps a party to
    its reason; ``expired`` lists parties whose only approvals have expired; ``missing`` lists
    parties with no valid statement; ``invalid`` holds one short message per statement that
    failed its checks. ``runnable`` is the rule itself.
    """

    approved: dict[str, str] = field(default_factory=dict)
    revoked: dict[str, str] = field(default_factory=dict)
    expired: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)

    @property
    def runnable(self) -> bool:
        return not self.revoked and not self.missing and not self.expired and bool(self.approved)


def approval_status(
    envelopes: Sequence[Envelope],
    manifest: Manifest,
    manifest_digest: str,
    bundle_digest: str,
    *,
    now: datetime,
) -> ApprovalStatus:
    """The approval state of a bundle per party; never raises (a statement that fails its
    checks is reported in ``invalid``, and counts for nobody)."""
    status = ApprovalStatus()
    expired: set[str] = set()
    stamp = format_time(now)
    for envelope in envelopes:
        try:
            approval = _signed_and_bound(envelope, manifest, manifest_digest, bundle_digest)
        except SealroomError as exc:
            status.invalid.append(exc.message)
            continue
        if approval.issued_at > stamp:
            status.invalid.append("approval: issued in the future")
        elif approval.decision == REVOKE:
            status.revoked[approval.party] = approval.reason
            status.approved.pop(approval.party, None)
        elif approval.party in status.revoked:
            continue
        elif approval.expires <= stamp:
            expired.add(approval.party)
        else:
            status.approved[approval.party] = max(
                approval.expires, status.approved.get(approval.party, ""))
    for party in manifest.parties:
        name = party.name
        if name not in status.approved and name not in status.revoked:
            (status.expired if name in expired else status.missing).append(name)
    return status


class StoredStatement(Protocol):
    """What job selection reads of a stored approval or revocation."""

    @property
    def party(self) -> str: ...
    @property
    def decision(self) -> str: ...
    @property
    def issued_at(self) -> str: ...
    @property
    def expires(self) -> str: ...


S = TypeVar("S", bound=StoredStatement)


def select_for_job(statements: Sequence[S], *, now: datetime) -> list[S]:
    """What a job carries: every revocation, then each party's latest unexpired approval.

    The worker re-verifies all of it (:func:`verify_approvals`); selection only keeps the job
    small and lets a revocation always reach the worker.
    """
    stamp = format_time(now)
    revocations = [s for s in statements if s.decision == REVOKE]
    latest: dict[str, S] = {}
    for item in statements:
        if item.decision == APPROVE and item.expires > stamp:
            if item.party not in latest or item.issued_at >= latest[item.party].issued_at:
                latest[item.party] = item
    return [*revocations, *latest.values()]
