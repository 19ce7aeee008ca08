"""Sealing a worker's secret keys at rest to the platform secret and the worker's measurement.

The simulated attestation provider (DESIGN §2) keeps the worker keys between runs as a blob only
a worker with the same platform secret *and the same measurement* can open — the shape of SGX
sealing to MRENCLAVE, with the operator's root trusted instead of hardware. This module is the
one recipe for that blob, so that only :mod:`sdk.protocol` touches ``cryptography.hazmat``.

Format (stable; existing blobs must keep opening)::

    nonce (12 random bytes) || AES-256-GCM(kek, nonce, secret, aad = context)

where ``context = canonical_json(measurement)`` and the key-encryption key is
``kek = HKDF-SHA256(ikm = platform seed, salt = none, info = "sealroom-worker-seal-v1" ||
context, length = 32)``.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sdk.errors import DecryptionError, InputError
from sdk.protocol.canonical import canonical_json
from sdk.protocol.models import Measurement

SEAL_INFO = b"sealroom-worker-seal-v1"
NONCE_SIZE = 12
TAG_SIZE = 16
PLATFORM_SEED_SIZE = 32


def _context(measurement: Measurement) -> bytes:
    return canonical_json(measurement.to_dict())


def _key_encryption_key(platform_seed: bytes, context: bytes) -> AESGCM:
    if len(platform_seed) != PLATFORM_SEED_SIZE:
        raise InputError("worker key sealing: the platform secret must be 32 bytes")
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=SEAL_INFO + context
    ).derive(platform_seed)
    return AESGCM(key)


def seal_to_measurement(secret: bytes, platform_seed: bytes, measurement: Measurement) -> bytes:
    """Seal ``secret`` so that only :func:`open_for_measurement` with the same platform seed
    and the same measurement opens it. A fresh random nonce each call.

    Raises ``InputError`` when the platform seed is not 32 bytes.
    """
    context = _context(measurement)
    aead = _key_encryption_key(platform_seed, context)
    nonce = os.urandom(NONCE_SIZE)
    return nonce + aead.encrypt(nonce, secret, context)


def open_for_measurement(sealed: bytes, platform_seed: bytes, measurement: Measurement) -> bytes:
    """The secret :func:`seal_to_measurement` sealed for exactly this platform seed and
    measurement.

    Raises:
        InputError: the platform seed is not 32 bytes.
        DecryptionError: another platform seed or measurement, or a truncated or altered blob
            (always the same opaque error).
    """
    context = _context(measurement)
    aead = _key_encryption_key(platform_seed, context)
    if len(sealed) < NONCE_SIZE + TAG_SIZE:
        raise DecryptionError()
    try:
        return aead.decrypt(sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], context)
    except InvalidTag as exc:
        raise DecryptionError() from exc
