"""The login message, defined once: what a party signs to trade a coordinator's challenge for
a bearer token, and what the coordinator verifies.

``b"sealroom-auth-v1\\n" + nonce + b"\\n" + audience``, where the audience is the coordinator's
public origin (the URL the party was told to use).
"""

from __future__ import annotations

AUTH_PREFIX = b"sealroom-auth-v1\n"


def auth_message(nonce: bytes, audience: str) -> bytes:
    """The bytes a party signs to authenticate to ``audience`` with ``nonce``."""
    return AUTH_PREFIX + nonce + b"\n" + audience.encode("utf-8")
