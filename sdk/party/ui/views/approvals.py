"""Pending approvals: the bundles that wait for this party, each bundle reviewed as
``sealroom bundle review`` reviews it, the confirmation page, and the signature.

* ``GET /bundles``: every bundle of the room, verified, those waiting for this party first;
* ``GET /bundles/DIGEST``: the plan in words, the columns it reads with their owners' roles,
  the inputs as the bundle pins them (a version number, or ``latest``), the output spec, the
  privacy cost against each dataset's budget left (verified log), the risk report, the
  approvals so far (verified), the code, and the difference from the bundle it replaces;
* ``GET /bundles/DIGEST/approve`` (or ``/revoke``): the confirmation, showing the exact digest
  that will be signed;
* ``POST /bundles/DIGEST/approve`` (or ``/revoke``): the form repeats that digest; it must be
  the digest in the URL and the digest of the bundle as loaded and verified again now, or
  nothing is signed. Then :func:`sdk.party.bundles.decide` signs and sends the statement, the
  same function ``sealroom bundle approve`` calls.

All facts come from :mod:`sdk.party.review` (risks, budget lines, plan in words, columns,
output spec, approvals) over verified objects.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any

from sdk.errors import SealroomError
from sdk.party.bundles import decide, load_bundle, own_follow_latest
from sdk.party.events import step
from sdk.party.review import (
    approval_states,
    budget_lines,
    columns_used,
    input_lines,
    plan_lines,
    risk_report,
    spec_lines,
    verified_uploads,
)
from sdk.party.trust import load_room
from sdk.party.ui.changes import Changes, changes, predecessor
from sdk.party.ui.render import Response, redirect
from sdk.party.ui.request import Request
from sdk.party.ui.state import BundleView, Snapshot, room_bundles, snapshot, verified_bundle
from sdk.protocol.admission import guarantee_of
from sdk.protocol.models import Dataset

DECISIONS = {"approve": "approval", "revoke": "revocation"}
DIGEST = re.compile(r"[0-9a-f]{64}")
MAX_REASON = 2000
DONE = {
    "approve": "Your approval was signed and sent.",
    "revoke": "Your revocation was signed and sent.",
}


def pending_page(req: Request) -> Response:
    """GET /bundles"""
    snap = snapshot(req.session, req.room_id)
    views = room_bundles(req.session, snap)
    waiting = [v for v in views if v.mine(snap.me) in ("pending", "expired")]
    others = [v for v in views if v not in waiting]
    return req.page("bundles.html", "bundles", snap=snap, waiting=waiting, others=others)


def _changes(req: Request, snap: Snapshot, view: BundleView) -> Changes | None:
    if view.bundle is None:
        return None
    bundle = view.bundle
    candidates = [
        b
        for b in req.session.client().bundles(snap.room.room_id)
        if isinstance(b, dict)
        and b.get("title") == bundle.title
        and b.get("author") == bundle.author
        and b.get("digest") != view.digest
    ]
    verified = []
    for listed in candidates[-20:]:
        other = verified_bundle(req.session, snap, str(listed.get("digest", "")), listed)
        if other.bundle is not None:
            verified.append((other.digest, other.bundle))
    found = predecessor(bundle, view.digest, verified)
    return None if found is None else changes(found[0], found[1], bundle)


def _review(req: Request, snap: Snapshot, view: BundleView) -> dict[str, object]:
    """Everything ``bundle review`` shows, for a verified bundle."""
    bundle = view.bundle
    assert bundle is not None
    room = snap.room
    budget = [] if snap.log is None else budget_lines(room, bundle, snap.log)
    return {
        "guarantee": guarantee_of(bundle),
        "plan": plan_lines(room, bundle),
        "columns": columns_used(room, bundle),
        "spec": spec_lines(room, bundle),
        "budget": budget,
        "risks": risk_report(room, bundle, snap.log),
        "states": approval_states(
            room, view.digest, req.session.client().approvals(room.room_id, view.digest)
        ),
        "runs": None if snap.log is None else snap.log.runs_of(view.digest),
        "inputs": [(line.dataset, line.reads, line.owner)
                   for line in input_lines(room, bundle, verified_uploads(
                       room, req.session.client().uploads(room.room_id)))],
        "follow_latest": own_follow_latest(room, bundle, req.me),
        "input_roles": {i.dataset: _roles(room.manifest.dataset(i.dataset)) for i in bundle.inputs},
    }


def _roles(dataset: Dataset) -> list[tuple[str, str, str]]:
    """(column, type, role) of every column but the id column, as its owner signed them."""
    return [
        (c.name, c.type, dataset.role(c.name))
        for c in dataset.schema
        if c.name != dataset.id_column
    ]


def _unverified(req: Request, snap: Any, view: Any) -> Response:
    """The bundle page without a bundle: the coordinator's answer did not verify (502)."""
    return req.page(
        "bundle.html",
        "bundles",
        HTTPStatus.BAD_GATEWAY,
        snap=snap,
        view=view,
        review=None,
        diff=None,
        done=None,
    )


def bundle_page(req: Request, digest: str) -> Response:
    """GET /bundles/DIGEST"""
    snap = snapshot(req.session, req.room_id)
    view = verified_bundle(req.session, snap, digest)
    if view.bundle is None:
        return _unverified(req, snap, view)
    done = DONE.get(req.query.get("done", ""))
    return req.page(
        "bundle.html",
        "bundles",
        snap=snap,
        view=view,
        review=_review(req, snap, view),
        diff=_changes(req, snap, view),
        done=done,
    )


def confirm_page(req: Request, digest: str, decision: str) -> Response:
    """GET /bundles/DIGEST/approve (or /revoke): what will be signed, and the form."""
    snap = snapshot(req.session, req.room_id)
    view = verified_bundle(req.session, snap, digest)
    if view.bundle is None or view.digest != digest:
        return _unverified(req, snap, view)
    return req.page(
        "confirm.html",
        "bundles",
        snap=snap,
        view=view,
        decision=decision,
        statement=DECISIONS[decision],
        review=_review(req, snap, view),
    )


def refused(req: Request, status: HTTPStatus, message: str) -> Response:
    """A page saying nothing was signed, and why."""
    return req.page("refused.html", "bundles", status, message=message)


def decide_post(req: Request, digest: str, decision: str) -> Response:
    """POST /bundles/DIGEST/approve (or /revoke): sign, after checking the confirmed digest."""
    confirmed = req.form.get("digest", "")
    if not DIGEST.fullmatch(confirmed) or confirmed != digest:
        return refused(
            req,
            HTTPStatus.CONFLICT,
            "the digest you confirmed is not the digest of this page's bundle: nothing was signed",
        )
    reason = req.form.get("reason", "")
    if len(reason) > MAX_REASON:
        return refused(req, HTTPStatus.BAD_REQUEST, "the reason is too long: nothing was signed")
    room = load_room(req.session, req.room_id)
    try:
        envelope, parsed = load_bundle(req.session, room, digest)
    except SealroomError as exc:
        return refused(
            req,
            HTTPStatus.BAD_GATEWAY,
            f"the bundle no longer verifies ({exc.diagnostics()}): nothing was signed",
        )
    if envelope.digest() != confirmed:
        return refused(
            req,
            HTTPStatus.CONFLICT,
            "the pending bundle's digest differs from the one you confirmed: nothing was signed",
        )
    try:
        decide(req.session, room, envelope, parsed, decision, reason=reason,
               follow_latest=req.form.get("follow_latest") == "yes")
    except SealroomError as exc:
        return refused(req, HTTPStatus.BAD_GATEWAY, exc.diagnostics())
    req.session.emit(
        step(f"{req.me} signed the {DECISIONS[decision]} of bundle {confirmed} (sealroom ui)")
    )
    return redirect(f"/bundles/{confirmed}?done={decision}")
