"""Rooms and pending manifests: accepting manifests, merging party signatures, invitations,
membership, and reading the verified manifest.

A **room** exists only once a manifest that *every* party it lists has signed arrives (whole,
or by merging signatures): only then is its id reserved, and only then are uploads, bundles
and runs accepted. Until then a manifest is **pending**: any number of pending manifests may
coexist for one room id (keyed by manifest digest), none reserves the id, and each expires
(``Settings.pending_manifest_ttl_s``, and never after the manifest's own expiry). A party a
pending manifest lists sees it only as an **invitation** naming who has signed it
(:func:`invitations`), fetches it (:func:`room_or_invitation`), signs it and sends its
signature (:func:`submit_manifest`, as ``POST /v1/rooms/{id}/signatures``). The first manifest
for an id that every listed party signs becomes the room; the other pending manifests of that
id are dropped. Only valid party signatures are ever stored.

A caller that is not a party of a room gets the same answer whether or not the id exists:
:func:`member_of` refuses it with one message, and a manifest it submits under an id that is
taken is kept as a pending manifest like any other (only a manifest *every* listed party
signed learns that the id is taken, since it would otherwise become the room).

A complete room never changes, so its manifest is verified with
:func:`sdk.protocol.verify.verify_manifest` once per process and kept (:func:`complete_room`);
every use still checks it has not expired since.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from coordinator.context import Caller, Services
from coordinator.errors import Forbidden
from coordinator.storage.db import Database, utcnow
from coordinator.storage.models import PendingManifest, PendingParty, Room, RoomParty
from sdk.errors import (
    ConflictError,
    InputError,
    NotFoundError,
    ResourceError,
    SealroomError,
    SignatureError,
)
from sdk.protocol import clock
from sdk.protocol.canonical import canonical_json, parse_json
from sdk.protocol.dsse import Envelope, Signature, pae, payload_type
from sdk.protocol.keys import ed25519_verifies, keyid
from sdk.protocol.models import Manifest
from sdk.protocol.verify import MAX_MANIFEST_BYTES, verify_manifest

#: the one answer to a caller that is not a party of a room, whether or not the room exists
NOT_A_PARTY = "not a party of this room"
#: complete rooms kept verified in memory per database, and the bytes of their manifests
MAX_CACHED_ROOMS = 10_000
MAX_CACHED_BYTES = 64 * 1024 * 1024


class TooManyPending(ResourceError):
    """A signing key has submitted as many pending manifests as it may (HTTP 429)."""

    status = 429


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
    """A room (``complete``: every party signed, verified) or a pending manifest: its envelope
    with the valid signatures received, the parsed manifest, and who has signed."""

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


@dataclass(frozen=True)
class InvitedParty:
    """A party a pending manifest lists: its name, key id and whether it has signed."""

    name: str
    keyid: str
    signed: bool


@dataclass(frozen=True)
class Invitation:
    """A pending manifest as a party it lists sees it: who is invited and who has signed."""

    room_id: str
    digest: str
    parties: tuple[InvitedParty, ...]
    you: str | None
    submitted_by: str
    created_at: datetime
    expires_at: datetime

    @property
    def signed(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parties if p.signed)

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parties if not p.signed)


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


def _stored_view(room_id: str, text: str, digest: str, complete: bool) -> RoomView:
    """A stored manifest: parsed, each signature verified once to say who signed."""
    envelope = envelope_of(text)
    manifest = _parse_manifest(envelope)
    signed = tuple(valid_signatures(envelope, manifest))
    return RoomView(room_id, envelope, manifest, digest, complete, signed)


# -- complete rooms, verified once -----------------------------------------------------------


@dataclass(frozen=True)
class _Verified:
    view: RoomView
    members: dict[str, str]  # signing key (hex) -> party name
    expires_at: datetime


class _RoomCache:
    """The complete rooms of one database, each verified once (a complete room never changes:
    its manifest, signatures and parties are fixed when it is created). At most
    :data:`MAX_CACHED_ROOMS` rooms of :data:`MAX_CACHED_BYTES` of payload are kept (the least
    recently used go)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rooms: OrderedDict[str, _Verified] = OrderedDict()
        self.size = 0

    def get(self, room_id: str) -> _Verified | None:
        with self.lock:
            hit = self.rooms.get(room_id)
            if hit is not None:
                self.rooms.move_to_end(room_id)
            return hit

    def put(self, room_id: str, entry: _Verified) -> None:
        with self.lock:
            old = self.rooms.pop(room_id, None)
            self.size += len(entry.view.envelope.payload) - (
                0 if old is None else len(old.view.envelope.payload))
            self.rooms[room_id] = entry
            while len(self.rooms) > MAX_CACHED_ROOMS or self.size > MAX_CACHED_BYTES:
                _, gone = self.rooms.popitem(last=False)
                self.size -= len(gone.view.envelope.payload)


_CACHES: weakref.WeakKeyDictionary[Database, _RoomCache] = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def _cache(services: Services) -> _RoomCache:
    with _CACHES_LOCK:
        cache = _CACHES.get(services.db)
        if cache is None:
            cache = _CACHES[services.db] = _RoomCache()
        return cache


def _verified(room_id: str, row: Room) -> _Verified | None:
    """A stored complete room verified by :func:`verify_manifest` (every party signed, the
    stored digest, unexpired), or None when it does not verify now (expired, or altered)."""
    envelope = envelope_of(row.envelope)
    try:
        manifest = verify_manifest(envelope, now=now_utc(), expected_digest=row.manifest_digest)
    except SealroomError:
        return None
    view = RoomView(room_id, envelope, manifest, row.manifest_digest, True,
                    tuple(p.name for p in manifest.parties))
    return _Verified(view, {p.identity.signing_key.hex(): p.name for p in manifest.parties},
                     clock.parse_time(manifest.expires, "manifest.expires"))


def _complete(services: Services, room_id: str) -> tuple[_Verified | None, Room | None]:
    """(the verified room, its row): the row is read only when the room is not cached; a
    room that does not verify now comes back as (None, row)."""
    cache = _cache(services)
    hit = cache.get(room_id)
    if hit is not None:
        return hit, None
    with services.db.read() as s:
        row = s.get(Room, room_id)
    if row is None or not row.complete:
        return None, None
    entry = _verified(room_id, row)
    if entry is not None:
        cache.put(room_id, entry)
    return entry, row


def peek_room(services: Services, room_id: str) -> RoomView | None:
    """The complete room if this process has verified it already (no database access)."""
    hit = _cache(services).get(room_id)
    return None if hit is None else hit.view


def complete_room(services: Services, room_id: str) -> RoomView | None:
    """The complete room ``room_id`` (its manifest verified once, then kept), or None."""
    entry, row = _complete(services, room_id)
    if entry is not None:
        return entry.view
    if row is None:
        return None
    # stored complete but not verifying now (expired): readable, as stored, never active
    return _stored_view(room_id, row.envelope, row.manifest_digest, True)


def member_of(view: RoomView | None, room_id: str, caller: Caller) -> str | None:
    """The caller's party name in the complete room ``view`` (None for the operator).

    Raises ``Forbidden`` (:data:`NOT_A_PARTY`) for a party key the room does not list and
    for any party key when there is no such room (existence is not revealed);
    ``NotFoundError`` when the operator asks for a missing room.
    """
    if caller.admin:
        if view is None:
            raise NotFoundError(f"no room {room_id!r}")
        return None
    name = None if view is None else view.party_with_key(caller.key)
    if name is None:
        raise Forbidden(NOT_A_PARTY)
    return name


def room_party(services: Services, room_id: str, caller: Caller) -> str | None:
    """:func:`member_of` the room ``room_id`` (verified rooms are kept in memory)."""
    return member_of(complete_room(services, room_id), room_id, caller)


def require_party(services: Services, room_id: str, caller: Caller) -> str:
    """Like :func:`room_party` but the operator is refused too (party-only actions)."""
    name = room_party(services, room_id, caller)
    if name is None:
        raise Forbidden("only a party of the room may do this")
    return name


async def room_party_async(services: Services, room_id: str, caller: Caller) -> str | None:
    """:func:`room_party` for an async route: no thread hop once the room is kept."""
    view = peek_room(services, room_id)
    if view is not None:
        return member_of(view, room_id, caller)
    return await run_in_threadpool(room_party, services, room_id, caller)


def load_room(services: Services, room_id: str) -> RoomView:
    """The complete room (for reading). Raises ``NotFoundError``."""
    view = complete_room(services, room_id)
    if view is None:
        raise NotFoundError(f"no room {room_id!r}")
    return view


def active_room(services: Services, room_id: str) -> RoomView:
    """The room, verified as fully signed and unexpired (what uploads, bundles and runs need).

    Its signatures were verified once, by :func:`verify_manifest`, when this process first
    read it; its expiry is checked on every call. Build the view once per request and pass it
    on rather than asking again.

    Raises ``NotFoundError``, or the verifier's errors (an expired manifest: ``InputError``).
    """
    entry, row = _complete(services, room_id)
    if entry is not None and now_utc() < entry.expires_at:
        return entry.view
    if entry is None and row is None:
        raise NotFoundError(f"no room {room_id!r}")
    if row is None:
        with services.db.read() as s:
            row = s.get(Room, room_id)
        if row is None:
            raise NotFoundError(f"no room {room_id!r}")
    # expired (or altered): the verifier says why
    verify_manifest(envelope_of(row.envelope), now=now_utc(), expected_digest=row.manifest_digest)
    raise InputError("manifest: does not verify")  # pragma: no cover - verify_manifest raised


# -- pending manifests ---------------------------------------------------------------------


def _purge_expired(s: Session, now: datetime) -> None:
    stale = select(PendingManifest.digest).where(PendingManifest.expires_at <= now)
    s.execute(delete(PendingParty).where(PendingParty.digest.in_(stale)))
    s.execute(delete(PendingManifest).where(PendingManifest.expires_at <= now))


def _drop_pending(s: Session, digests: list[str]) -> None:
    if digests:
        s.execute(delete(PendingParty).where(PendingParty.digest.in_(digests)))
        s.execute(delete(PendingManifest).where(PendingManifest.digest.in_(digests)))


def _expiry(services: Services, manifest: Manifest, now: datetime) -> datetime:
    ttl = now + timedelta(seconds=services.settings.pending_manifest_ttl_s)
    own = clock.parse_time(manifest.expires, "manifest.expires").replace(tzinfo=None)
    return min(ttl, own)


def _is_member(s: Session, room_id: str, key: str | None) -> bool:
    return key is not None and s.scalar(select(RoomParty.name).where(
        RoomParty.room_id == room_id, RoomParty.signing_key == key)) is not None


def submit_manifest(
    services: Services, envelope: Envelope, caller: Caller, room_id: str | None = None
) -> tuple[RoomView, bool]:
    """Accept a manifest envelope, or more signatures for a pending manifest.

    The signatures it carries that verify are merged with those received before for the same
    manifest (by digest). Once every listed party has signed, the manifest becomes the room
    (unless a room with its id exists) and every other pending manifest of its id is dropped;
    until then it is stored as a pending manifest. Returns the room or pending manifest and
    whether it was new.

    The answer does not depend on whether a room the caller is not a party of holds the id,
    except for a manifest every listed party has signed (which would otherwise become that
    room).

    Raises:
        InputError: malformed, non-canonical or expired manifest, or another room's.
        Forbidden: the caller is not one of the manifest's parties.
        SignatureError: no valid party signature.
        ConflictError: the caller's room has a different manifest, or a manifest every party
            signed names a room id that is taken.
        TooManyPending: the caller already has ``pending_manifests_per_key`` pending.
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
    try:
        return _submit(services, envelope, manifest, new_sigs, caller.key)
    except IntegrityError:
        # a concurrent submission of the same manifest or room id (PostgreSQL): once more
        return _submit(services, envelope, manifest, new_sigs, caller.key)


def _submit(services: Services, envelope: Envelope, manifest: Manifest,
            new_sigs: dict[str, Signature], key: str) -> tuple[RoomView, bool]:
    digest = envelope.digest()
    room_id = manifest.room_id
    taken = False
    with services.db.write() as s:
        now = utcnow()
        _purge_expired(s, now)
        room = s.get(Room, room_id)
        if room is not None and _is_member(s, room_id, key):
            if room.manifest_digest != digest:
                raise ConflictError("room exists with a different manifest")
            return load_room(services, room_id), False
        pending = s.get(PendingManifest, digest, with_for_update=True)
        if pending is not None:
            old = valid_signatures(envelope_of(pending.envelope), manifest)
            new_sigs = {**old, **{k: v for k, v in new_sigs.items() if k not in old}}
        signed = tuple(p.name for p in manifest.parties if p.name in new_sigs)
        merged = Envelope(envelope.payload_type, envelope.payload,
                          tuple(new_sigs[name] for name in signed))
        complete = len(signed) == len(manifest.parties)
        if complete:
            verify_manifest(merged, now=now_utc(), expected_digest=digest)
            if room is not None:
                # every listed party signed, but the id is taken: it can never be the room
                _drop_pending(s, [digest] if pending is not None else [])
                taken = True
            else:
                submitter = _name_of(manifest, key if pending is None else pending.submitter_key)
                s.add(Room(room_id=room_id, manifest_digest=digest, submitter=submitter,
                           created_at=now, envelope=envelope_text(merged), complete=True,
                           updated_at=now))
                s.flush()
                for p in manifest.parties:
                    s.add(RoomParty(room_id=room_id, name=p.name,
                                    signing_key=p.identity.signing_key.hex()))
                _drop_pending(s, list(s.scalars(
                    select(PendingManifest.digest).where(PendingManifest.room_id == room_id))))
        elif pending is None:
            mine = s.scalar(select(func.count()).select_from(PendingManifest).where(
                PendingManifest.submitter_key == key)) or 0
            if mine >= services.settings.pending_manifests_per_key:
                raise TooManyPending(
                    f"this key has {mine} pending manifests, the most it may have: let some "
                    "expire or be signed by every party")
            s.add(PendingManifest(digest=digest, room_id=room_id, envelope=envelope_text(merged),
                                  submitter_key=key, created_at=now, updated_at=now,
                                  expires_at=_expiry(services, manifest, now)))
            s.flush()
            for p in manifest.parties:
                s.add(PendingParty(digest=digest, name=p.name,
                                   signing_key=p.identity.signing_key.hex(),
                                   signed=p.name in new_sigs))
        else:
            pending.envelope = envelope_text(merged)
            pending.updated_at = now
            for row in s.scalars(select(PendingParty).where(PendingParty.digest == digest)):
                row.signed = row.name in new_sigs
    if taken:
        raise ConflictError("a room with this id exists: choose another room id")
    return RoomView(room_id, merged, manifest, digest, complete, signed), pending is None


def _name_of(manifest: Manifest, key: str) -> str:
    return next((p.name for p in manifest.parties if p.identity.signing_key.hex() == key), "")


def _pending_rows(s: Session, room_id: str | None, caller: Caller,
                  now: datetime) -> list[PendingManifest]:
    """Unexpired pending manifests (of ``room_id``, or all) that list the caller (every one
    for the operator)."""
    query = select(PendingManifest).where(PendingManifest.expires_at > now)
    if room_id is not None:
        query = query.where(PendingManifest.room_id == room_id)
    if not caller.admin:
        query = query.where(PendingManifest.digest.in_(
            select(PendingParty.digest).where(PendingParty.signing_key == caller.key)))
    return list(s.scalars(query.order_by(PendingManifest.room_id, PendingManifest.created_at,
                                         PendingManifest.digest)))


def invitations(services: Services, caller: Caller) -> list[Invitation]:
    """The pending manifests that list the caller (all of them for the operator), except
    those of a room id the caller is already a party of."""
    now = utcnow()
    with services.db.read() as s:
        rows = _pending_rows(s, None, caller, now)
        parties: dict[str, list[PendingParty]] = {r.digest: [] for r in rows}
        if rows:
            for p in s.scalars(select(PendingParty).where(PendingParty.digest.in_(list(parties)))):
                parties[p.digest].append(p)
        mine: set[str] = set()
        if not caller.admin:
            mine = set(s.scalars(select(RoomParty.room_id).where(
                RoomParty.signing_key == caller.key)))
    out = []
    for row in rows:
        if row.room_id in mine:
            continue
        view = _stored_view(row.room_id, row.envelope, row.digest, False)
        stored = {p.name: p for p in parties[row.digest]}
        listed = tuple(InvitedParty(p.name, p.identity.keyid,
                                    p.name in stored and stored[p.name].signed)
                       for p in view.manifest.parties)
        out.append(Invitation(row.room_id, row.digest, listed, view.party_with_key(caller.key),
                              _name_of(view.manifest, row.submitter_key), row.created_at,
                              row.expires_at))
    return out


def room_or_invitation(services: Services, room_id: str, caller: Caller,
                       digest: str | None = None) -> tuple[RoomView, str | None]:
    """What a caller may read under ``room_id``: the complete room it is a party of (any room
    for the operator), else the pending manifest of that id that lists it (``digest`` chooses
    among several). Returns the view and the caller's party name in it.

    Raises ``Forbidden`` (:data:`NOT_A_PARTY`) when there is neither, ``ConflictError`` when
    several pending manifests list the caller and ``digest`` does not choose one,
    ``NotFoundError`` for the operator and a missing room or manifest.
    """
    room = complete_room(services, room_id)
    if room is not None and (caller.admin or room.party_with_key(caller.key) is not None):
        if digest is not None and digest != room.digest:
            raise NotFoundError("this room has another manifest")
        return room, room.party_with_key(caller.key)
    with services.db.read() as s:
        rows = _pending_rows(s, room_id, caller, utcnow())
    if digest is not None:
        rows = [r for r in rows if r.digest == digest]
    if not rows:
        if caller.admin:
            raise NotFoundError(f"no room {room_id!r}")
        raise Forbidden(NOT_A_PARTY)
    if len(rows) > 1:
        raise ConflictError(
            f"{len(rows)} pending manifests of this room id list you: choose one with "
            "?digest= (GET /v1/invitations lists them with who signed each)")
    view = _stored_view(room_id, rows[0].envelope, rows[0].digest, False)
    return view, view.party_with_key(caller.key)


def pending_count(services: Services) -> int:
    """Unexpired pending manifests (for ``/metrics``)."""
    with services.db.read() as s:
        return int(s.scalar(select(func.count()).select_from(PendingManifest).where(
            PendingManifest.expires_at > utcnow())) or 0)
