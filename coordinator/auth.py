"""Authentication (challenge–response with the party's Ed25519 key → short-lived bearer token;
an admin token from the settings for the operator) and the room membership check.

A party posts its signing key and gets a random single-use nonce; it signs
``b"sealroom-auth-v1\\n" + nonce + b"\\n" + audience`` (the audience is the coordinator's
configured public origin, ``Settings.origin``: never taken from the request's ``Host`` or
``X-Forwarded-*`` headers, so a signature made for another coordinator is worthless here), and
trades the signature for a random token. Only the token's SHA-256 is stored, with its expiry;
``POST /v1/auth/logout`` deletes it. A token names a key, not a room: what the key may do is
decided per room from the manifest's parties.

Challenges are bounded: the signing key must be an acceptable Ed25519 key
(:func:`sdk.protocol.keys.check_signing_key`), :class:`ChallengeLimiter` rate-limits them per key
and per client address, a key keeps at most ``challenges_per_key`` outstanding (the oldest are
purged) and the table at most ``max_challenges`` (likewise).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select

from coordinator.context import Caller, Services
from coordinator.errors import Unauthenticated
from coordinator.settings import Settings
from coordinator.storage.db import utcnow
from coordinator.storage.models import Challenge, Token
from sdk.errors import ConfigError, ResourceError
from sdk.protocol.keys import check_signing_key, ed25519_verifies
from sdk.protocol.login import auth_message


def iso(moment: datetime) -> str:
    """A stored (naive UTC) time as RFC 3339."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def audience_of(services: Services) -> str:
    """What parties must sign: the configured public origin (``create_app`` refuses to build a
    coordinator without one)."""
    origin = services.settings.origin
    if origin is None:
        raise ConfigError("no public origin configured")
    return origin


class RateLimited(ResourceError):
    """Too many requests from this key or address (HTTP 429, with ``Retry-After``)."""

    status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class TokenBuckets:
    """Token buckets of ``per_minute`` requests (burst ``per_minute``) per name, for at most
    ``max_names`` names (the least recently used are forgotten: a forgotten bucket is a full
    one, so memory stays bounded whatever names callers invent). Not thread-safe on its own."""

    def __init__(self, per_minute: int, max_names: int = 20_000) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.max_names = max_names
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def wait(self, name: str, now: float) -> float:
        """Seconds until ``name`` may make a request (0 when it may now)."""
        bucket = self._buckets.get(name)
        if bucket is None:
            return 0.0
        tokens = min(self.capacity, bucket.tokens + (now - bucket.stamp) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def take(self, name: str, now: float) -> None:
        """Spend one request of ``name`` (call after :meth:`wait` said 0)."""
        bucket = self._buckets.pop(name, None)
        if bucket is None:
            bucket = _Bucket(self.capacity, now)
        bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.stamp) * self.rate) - 1
        bucket.stamp = now
        self._buckets[name] = bucket
        while len(self._buckets) > self.max_names:
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)


def address_key(host: str | None) -> str:
    """The rate-limit name of a client address: an IPv4 address, an IPv6 /64 (one host's
    usual allocation), or at most 64 characters of whatever else the server reported."""
    if not host:
        return "-"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class ChallengeLimiter:
    """The rate limits of ``POST /v1/auth/challenge``: per client address, then per signing
    key (a request refused for its address does not spend its key's allowance)."""

    def __init__(self, settings: Settings,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_address = TokenBuckets(settings.challenge_rate_per_address)
        self.per_key = TokenBuckets(settings.challenge_rate_per_key)
        self._clock = clock
        self._lock = threading.Lock()

    def check(self, address: str | None, signing_key: str) -> None:
        """Spend one challenge of ``address`` and ``signing_key``. Raises ``RateLimited``."""
        where = address_key(address)
        with self._lock:
            now = self._clock()
            for buckets, name, whose in ((self.per_address, where, "from this address"),
                                         (self.per_key, signing_key, "for this signing key")):
                wait = buckets.wait(name, now)
                if wait > 0:
                    seconds = max(1, math.ceil(wait))
                    raise RateLimited(f"too many login challenges {whose}: retry in {seconds} s",
                                      seconds)
            self.per_address.take(where, now)
            self.per_key.take(signing_key, now)


def issue_challenge(services: Services, signing_key: str) -> tuple[str, str, datetime]:
    """A fresh single-use nonce (hex) for ``signing_key``, the audience to sign with it, and
    its expiry. Keeps at most ``challenges_per_key`` outstanding for the key and
    ``max_challenges`` in all (the oldest are purged).

    Raises ``InputError`` for a key that is not an acceptable Ed25519 public key.
    """
    check_signing_key(_unhex_key(signing_key), "signing_key")
    settings = services.settings
    audience = audience_of(services)
    nonce = secrets.token_hex(32)
    now = utcnow()
    expires = now + timedelta(seconds=settings.challenge_ttl)
    with services.db.write() as s:
        s.execute(delete(Challenge).where(Challenge.expires_at < now))
        mine = list(s.scalars(
            select(Challenge.nonce).where(Challenge.signing_key == signing_key)
            .order_by(Challenge.expires_at.desc(), Challenge.nonce)))
        stale = mine[settings.challenges_per_key - 1:]
        if stale:
            s.execute(delete(Challenge).where(Challenge.nonce.in_(stale)))
        # a full table drops its oldest challenges rather than refusing new ones: a flood then
        # has to outpace a login's own round trip to get in the way of one
        excess = (s.scalar(select(func.count()).select_from(Challenge)) or 0) \
            - settings.max_challenges + 1
        if excess > 0:
            oldest = select(Challenge.nonce).order_by(Challenge.expires_at, Challenge.nonce) \
                .limit(excess)
            s.execute(delete(Challenge).where(Challenge.nonce.in_(oldest.scalar_subquery())))
        s.add(Challenge(nonce=nonce, signing_key=signing_key, audience=audience,
                        expires_at=expires))
    return nonce, audience, expires


def _unhex_key(signing_key: str) -> bytes:
    try:
        return bytes.fromhex(signing_key)
    except ValueError:
        return b""


def issue_token(
    services: Services, signing_key: str, nonce: str, signature: bytes
) -> tuple[str, datetime]:
    """Trade a signed nonce for a bearer token. The nonce is consumed whatever the outcome.

    Raises ``InputError`` for a key that is not an acceptable Ed25519 public key, and
    ``Unauthenticated`` for an unknown, expired or foreign nonce or a bad signature.
    """
    check_signing_key(_unhex_key(signing_key), "signing_key")
    with services.db.write() as s:
        challenge = s.get(Challenge, nonce)
        if challenge is not None:
            s.delete(challenge)
    if challenge is None or challenge.expires_at < utcnow():
        raise Unauthenticated("unknown or expired challenge")
    if not hmac.compare_digest(challenge.signing_key, signing_key):
        raise Unauthenticated("challenge was issued to another key")
    if challenge.audience != audience_of(services):
        raise Unauthenticated("challenge was issued for another origin")
    try:
        public_key, nonce_bytes = bytes.fromhex(signing_key), bytes.fromhex(nonce)
    except ValueError as exc:
        raise Unauthenticated("signature over the challenge does not verify") from exc
    # a small-order or non-canonical key never verifies (ed25519_verifies refuses it)
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


def revoke_token(services: Services, token: str) -> bool:
    """Delete the party token ``token`` (logout); True when it existed. The admin token is
    configuration, not issued, and cannot be revoked here."""
    if len(token) > 200:
        return False
    with services.db.write() as s:
        row = s.get(Token, _hash(token))
        if row is None:
            return False
        s.delete(row)
    return True


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

