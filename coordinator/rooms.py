"""Rooms: accepting a manifest, merging party signatures, and reading the verified manifest.

The coordinator keeps, per room, one manifest payload and every *valid* party signature it
has received for it (invalid or foreign signatures are dropped, not stored). The room is
``complete`` once every party listed has signed; only then are uploads, bundles and runs
accepted, and every use re-verifies it with :func:`sdk.protocol.verify.verify_manifest`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete

from coordinator.context import Caller, Services
from coordinator.errors import Forbidden
from coordinator.storage.db import utcnow
from coordinator.storage.models import Room, RoomParty
from sdk.errors import ConflictError, InputError, NotFoundError, SignatureError
from sdk.protocol import clock
from sdk.protocol.canonical import canonical_json, parse_json
from sdk.protocol.dsse import Envelope, Signature, pae, payload_type
from sdk.protocol.keys import ed25519_verifies, keyid
from sdk.protocol.models import Manifest
from sdk.protocol.verify import MAX_MANIFEST_BYTES, verify_manifest


def envelope_text(envelope: Envelope) -> str:
    """Canonical JSON of an envelope, as stored."""
    return envelope.to_json().decode("utf-8")


def envelope_of(text: str) -> Envelope:
    """A stored envelope."""
    return Envelope.from_json(text.encode("utf-8"), max_bytes=64 * 1024 * 1024)


def now_utc() -> datetime:
    """Aware UTC now (for the protocol verifiers): the one clock, :func:`sdk.protocol.clock.utcnow`."""
    return clock.utcnow()


@dataclass(frozen=True)
class RoomView:
    """A room as stored: its envelope, parsed (unverified unless ``complete``) manifest and
    which parties have signed."""

    room_id: str
    envelope: Envelope
    manifest: Manifest
    digest: str
    complete: bool
    signed: tuple[str, ...]

    @property
    def missing(self) -> tuple[str, ...]:
        """The parties whose signature the room still lacks, in manifest order."""
        return tuple(p.name for p in self.manifest.parties if p.name not in self.signed)

    def party_with_key(self, signing_key: str | None) -> str | None:
        """The name of the party whose signing key is ``signing_key`` (hex), or None."""
        return next((p.name for p in self.manifest.parties
                     if p.identity.signing_key.hex() == signing_key), None)


def _parse_manifest(envelope: Envelope) -> Manifest:
    if envelope.payload_type != payload_type(Manifest.KIND):
        raise InputError("manifest: wrong payload type")
    payload = parse_json(envelope.payload, max_bytes=MAX_MANIFEST_BYTES)
    if canonical_json(payload) != envelope.payload:
        raise InputError("manifest: payload is not canonical JSON")
    return Manifest.from_dict(payload)


def valid_signatures(envelope: Envelope, manifest: Manifest) -> dict[str, Signature]:
    """Party name → one signature of that party's key that verifies over the payload."""
    message = pae(envelope.payload_type, envelope.payload)
    out: dict[str, Signature] = {}
    for sig in envelope.signatures:
        for party in manifest.parties:
            key = party.identity.signing_key
            if party.name in out or keyid(key) != sig.keyid:
                continue
            if ed25519_verifies(key, sig.sig, message):
                out[party.name] = sig
    return out


def _stored_view(row: Room) -> RoomView:
    """The room as stored: the manifest parsed, each signature verified once to say who signed."""
    envelope = envelope_of(row.envelope)
    manifest = _parse_manifest(envelope)
    signed = tuple(valid_signatures(envelope, manifest))
    return RoomView(row.room_id, envelope, manifest, row.manifest_digest, row.complete, signed)


def _verified_view(row: Room) -> RoomView:
    """A complete room, its manifest verified once by :func:`verify_manifest` (every party
    signed, unexpired, the stored digest)."""
    envelope = envelope_of(row.envelope)
    manifest = verify_manifest(envelope, now=now_utc(), expected_digest=row.manifest_digest)
    return RoomView(row.room_id, envelope, manifest, row.manifest_digest, True,
                    tuple(p.name for p in manifest.parties))


def submit_manifest(
    services: Services, envelope: Envelope, caller: Caller, room_id: str | None = None
) -> tuple[RoomView, bool]:
    """Accept a manifest envelope or more signatures for a room's manifest.

    Returns the room and whether it was created. The caller must be a party the manifest
    lists; at least one valid party signature is required; a different manifest for an
    existing room is a conflict.

    Raises:
        InputError: malformed, non-canonical or expired manifest, or another room's.
        SignatureError: no valid party signature.
        Forbidden: the caller is not one of the manifest's parties.
        ConflictError: the room exists with a different manifest.
    """
    manifest = _parse_manifest(envelope)
    if room_id is not None and manifest.room_id != room_id:
        raise InputError("manifest: of another room")
    if caller.key is None or caller.key not in {
        p.identity.signing_key.hex() for p in manifest.parties
    }:
        raise Forbidden("the submitter must be one of the manifest's parties")
    if manifest.expires <= now_utc().strftime("%Y-%m-%dT%H:%M:%SZ"):
        raise InputError("manifest: expired")
    new_sigs = valid_signatures(envelope, manifest)
    if not new_sigs:
        raise SignatureError("manifest: carries no valid party signature")
    digest = envelope.digest()
    with services.db.write() as s:
        row = s.get(Room, manifest.room_id, with_for_update=True)
        created = row is None
        if row is not None:
            if row.manifest_digest != digest:
                raise ConflictError("room exists with a different manifest")
            old = valid_signatures(envelope_of(row.envelope), manifest)
            new_sigs = {**old, **{k: v for k, v in new_sigs.items() if k not in old}}
        elif room_id is not None:
            raise NotFoundError(f"no room {room_id!r}")
        signed = tuple(p.name for p in manifest.parties if p.name in new_sigs)
        merged = Envelope(envelope.payload_type, envelope.payload,
                          tuple(new_sigs[name] for name in signed))
        complete = len(signed) == len(manifest.parties)
        if complete:
            verify_manifest(merged, now=now_utc(), expected_digest=digest)
        now = utcnow()
        if row is None:
            row = Room(room_id=manifest.room_id, manifest_digest=digest, submitter="",
                       created_at=now, envelope="", complete=False, updated_at=now)
            row.submitter = next(p.name for p in manifest.parties
                                 if p.identity.signing_key.hex() == caller.key)
            s.add(row)
            s.execute(delete(RoomParty).where(RoomParty.room_id == manifest.room_id))
            s.flush()
            for p in manifest.parties:
                s.add(RoomParty(room_id=manifest.room_id, name=p.name,
                                signing_key=p.identity.signing_key.hex()))
        row.envelope = envelope_text(merged)
        row.complete = complete
        row.updated_at = now
    return RoomView(manifest.room_id, merged, manifest, digest, complete, signed), created


def _room_row(services: Services, room_id: str) -> Room:
    with services.db.read() as s:
        row = s.get(Room, room_id)
    if row is None:
        raise NotFoundError(f"no room {room_id!r}")
    return row


def load_room(services: Services, room_id: str) -> RoomView:
    """The stored room, complete or not (for reading and signing). Raises ``NotFoundError``."""
    return _stored_view(_room_row(services, room_id))


def active_room(services: Services, room_id: str) -> RoomView:
    """The room, re-verified as fully signed and unexpired (what uploads, bundles and runs need).

    Every signature is verified once, by :func:`verify_manifest`; build the view once per
    request and pass it on rather than asking again.

    Raises ``NotFoundError``, ``ConflictError`` (not yet signed by every party), or the
    verifier's errors.
    """
    row = _room_row(services, room_id)
    if not row.complete:
        raise ConflictError(
            "the room's manifest is not signed by every party yet (missing: "
            + ", ".join(_stored_view(row).missing) + ")"
        )
    return _verified_view(row)
