"""Authentication (challenge–response with the party's Ed25519 key → short-lived bearer token;
an admin token from the settings for the operator) and the room membership check.

A party posts its signing key and gets a random single-use nonce; it signs
``b"sealroom-auth-v1\\n" + nonce + b"\\n" + audience`` (the audience is the coordinator's URL as
the party sees it, or the configured ``SEALROOM_AUDIENCE``), and trades the signature for a
random token. Only the token's SHA-256 is stored, with its expiry. A token names a key, not a
room: what the key may do is decided per room from the manifest's parties.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from coordinator.context import Caller, Services
from coordinator.errors import Forbidden, Unauthenticated
from coordinator.storage.db import utcnow
from coordinator.storage.models import Challenge, Room, RoomParty, Token
from sdk.errors import NotFoundError
from sdk.protocol.keys import ed25519_verifies
from sdk.protocol.login import auth_message


def iso(moment: datetime) -> str:
    """A stored (naive UTC) time as RFC 3339."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def audience_of(services: Services, base_url: str) -> str:
    """What parties must sign: the configured audience, or the base URL the request came to."""
    return services.settings.audience or base_url.rstrip("/")


def issue_challenge(services: Services, signing_key: str, audience: str) -> tuple[str, datetime]:
    """A fresh single-use nonce (hex) for ``signing_key`` and its expiry."""
    nonce = secrets.token_hex(32)
    expires = utcnow() + timedelta(seconds=services.settings.challenge_ttl)
    with services.db.write() as s:
        s.execute(delete(Challenge).where(Challenge.expires_at < utcnow()))
        s.add(Challenge(nonce=nonce, signing_key=signing_key, audience=audience,
                        expires_at=expires))
    return nonce, expires


def issue_token(
    services: Services, signing_key: str, nonce: str, signature: bytes
) -> tuple[str, datetime]:
    """Trade a signed nonce for a bearer token. The nonce is consumed whatever the outcome.

    Raises ``Unauthenticated`` for an unknown, expired or foreign nonce or a bad signature.
    """
    with services.db.write() as s:
        challenge = s.get(Challenge, nonce)
        if challenge is not None:
            s.delete(challenge)
    if challenge is None or challenge.expires_at < utcnow():
        raise Unauthenticated("unknown or expired challenge")
    if not hmac.compare_digest(challenge.signing_key, signing_key):
        raise Unauthenticated("challenge was issued to another key")
    try:
        public_key, nonce_bytes = bytes.fromhex(signing_key), bytes.fromhex(nonce)
    except ValueError as exc:
        raise Unauthenticated("signature over the challenge does not verify") from exc
    if not ed25519_verifies(public_key, signature, auth_message(nonce_bytes, challenge.audience)):
        raise Unauthenticated("signature over the challenge does not verify")
    token = secrets.token_urlsafe(32)
    expires = utcnow() + timedelta(seconds=services.settings.token_ttl)
    with services.db.write() as s:
        s.execute(delete(Token).where(Token.expires_at < utcnow()))
        s.add(Token(token_hash=_hash(token), signing_key=signing_key, expires_at=expires))
    return token, expires


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def caller_of_token(services: Services, token: str) -> Caller:
    """Who presents bearer ``token``: the operator (the admin token) or a party's key.

    Raises ``Unauthenticated`` for an unknown, overlong or expired token.
    """
    admin = services.settings.admin_secret()
    if admin is not None and hmac.compare_digest(token.encode(), admin.encode()):
        return Caller(admin=True)
    if len(token) > 200:
        raise Unauthenticated("invalid token")
    with services.db.read() as s:
        row = s.get(Token, _hash(token))
    if row is None:
        raise Unauthenticated("invalid token")
    if row.expires_at < utcnow():
        raise Unauthenticated("token expired")
    return Caller(key=row.signing_key)


def party_in_room(services: Services, room_id: str, caller: Caller) -> str | None:
    """The caller's party name in ``room_id``; None for the operator.

    Raises ``Forbidden`` when a party key is not listed in the room's manifest (whether or not
    the room exists: existence is not revealed), ``NotFoundError`` when the operator asks for a
    missing room.
    """
    with services.db.read() as s:
        if caller.admin:
            if s.get(Room, room_id) is None:
                raise NotFoundError(f"no room {room_id!r}")
            return None
        name = s.scalar(
            select(RoomParty.name).where(
                RoomParty.room_id == room_id, RoomParty.signing_key == caller.key
            )
        )
    if name is None:
        raise Forbidden("not a party of this room")
    return name


def require_member(services: Services, room_id: str, caller: Caller) -> str:
    """Like :func:`party_in_room` but the operator is refused too (party-only actions)."""
    name = party_in_room(services, room_id, caller)
    if name is None:
        raise Forbidden("only a party of the room may do this")
    return name

