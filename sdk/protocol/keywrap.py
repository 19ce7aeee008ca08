"""Sealing a worker's secret keys at rest to the platform secret and the worker's measurement.

The simulated attestation provider (DESIGN §2) keeps the worker keys between runs as a blob only
a worker with the same platform secret *and the same measurement* can open — the shape of SGX
sealing to MRENCLAVE, with the operator's root trusted instead of hardware. This module is the
one recipe for that blob, so that only :mod:`sdk.protocol` touches ``cryptography.hazmat``.

Format (stable; existing blobs must keep opening)::

    nonce (12 random bytes) || AES-256-GCM(kek, nonce, secret, aad = context)

where ``context = canonical_json(measurement)`` and the key-encryption key is
``kek = HKDF-SHA256(ikm = platform seed, salt = none, info = "sealroom-worker-seal-v1" ||
context, length = 32)``. For a key pair (:func:`seal_key_pair`), ``secret`` is the canonical
JSON ``{"encryption_seed": base64, "signing_seed": base64}`` of its two 32-byte seeds.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl.public import PrivateKey

from sdk.errors import DecryptionError, InputError
from sdk.protocol.canonical import canonical_json, parse_json
from sdk.protocol.fields import check_keys, expect_mapping
from sdk.protocol.keys import PartyKey, Signer
from sdk.protocol.models import Measurement

SEAL_INFO = b"sealroom-worker-seal-v1"
NONCE_SIZE = 12
TAG_SIZE = 16
PLATFORM_SEED_SIZE = 32
MAX_SECRET_BYTES = 4096


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


def seal_key_pair(keys: PartyKey, platform_seed: bytes, measurement: Measurement) -> bytes:
    """Seal a key pair's two seeds (the worker's keys) to the platform secret and the
    measurement; :func:`open_key_pair` opens it. The key pair's name is not stored.

    Raises ``InputError`` when the platform seed is not 32 bytes.
    """
    secret = canonical_json(
        {
            "signing_seed": base64.b64encode(keys.signer.seed()).decode(),
            "encryption_seed": base64.b64encode(bytes(keys.encryption_private)).decode(),
        }
    )
    return seal_to_measurement(secret, platform_seed, measurement)


def open_key_pair(
    sealed: bytes, platform_seed: bytes, measurement: Measurement, *, name: str
) -> PartyKey:
    """The key pair :func:`seal_key_pair` sealed for exactly this platform seed and
    measurement, under ``name``.

    Raises:
        InputError: the platform seed is not 32 bytes, or the opened secret is not two seeds.
        DecryptionError: another platform seed or measurement, or a truncated or altered blob.
    """
    secret = open_for_measurement(sealed, platform_seed, measurement)
    data = expect_mapping(parse_json(secret, max_bytes=MAX_SECRET_BYTES), "sealed key pair")
    check_keys(data, "sealed key pair", ["signing_seed", "encryption_seed"])
    try:
        signing = base64.b64decode(str(data["signing_seed"]))
        encryption = base64.b64decode(str(data["encryption_seed"]))
    except (binascii.Error, ValueError) as exc:
        raise InputError("sealed key pair: seeds are not base64") from exc
    if len(signing) != 32 or len(encryption) != 32:
        raise InputError("sealed key pair: seeds must be 32 bytes")
    return PartyKey(name, Signer.from_seed(signing), PrivateKey(encryption))
