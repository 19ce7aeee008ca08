"""The worker's own keys: generated at provisioning, sealed to the platform and measurement.

Simulated provider (DESIGN §2): the operator's platform secret (an Ed25519 seed whose public key
the manifest pins) signs the attestation, and a key derived from it *and the measurement* seals
the worker keys, so a worker with other code or another image cannot unseal them — the same
shape as SGX sealing to MRENCLAVE, with the operator's root trusted instead of hardware.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl.public import PrivateKey

from sdk.errors import AttestationError
from sdk.protocol.clock import now
from sdk.protocol.canonical import canonical_json, parse_json
from sdk.protocol.dsse import Envelope, sign_envelope
from sdk.protocol.keys import Signer
from sdk.protocol.models import Attestation, Measurement


@dataclass(frozen=True)
class WorkerKeys:
    """The worker's signing key and encryption key (never leave the supervisor)."""

    signer: Signer
    encryption: PrivateKey

    @classmethod
    def generate(cls) -> WorkerKeys:
        return cls(Signer.generate(), PrivateKey.generate())

    @property
    def encryption_public(self) -> bytes:
        return bytes(self.encryption.public_key)


def _sealing_key(platform_seed: bytes, measurement: Measurement) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=b"sealroom-worker-seal-v1" + canonical_json(measurement.to_dict()),
    ).derive(platform_seed)


def seal_worker_keys(keys: WorkerKeys, platform_seed: bytes, measurement: Measurement) -> bytes:
    """Seal the worker keys to the platform secret and the measurement."""
    nonce = os.urandom(12)
    secret = canonical_json(
        {
            "signing_seed": base64.b64encode(keys.signer.seed()).decode(),
            "encryption_seed": base64.b64encode(bytes(keys.encryption)).decode(),
        }
    )
    aad = canonical_json(measurement.to_dict())
    return nonce + AESGCM(_sealing_key(platform_seed, measurement)).encrypt(nonce, secret, aad)


def unseal_worker_keys(sealed: bytes, platform_seed: bytes, measurement: Measurement) -> WorkerKeys:
    """Unseal keys sealed for this exact measurement.

    Raises:
        AttestationError: wrong platform secret, other measurement, or corrupted blob.
    """
    if len(sealed) < 28 or len(sealed) > 4096 or len(platform_seed) != 32:
        raise AttestationError("worker key: sealed blob or platform secret malformed")
    aad = canonical_json(measurement.to_dict())
    try:
        secret = AESGCM(_sealing_key(platform_seed, measurement)).decrypt(
            sealed[:12], sealed[12:], aad
        )
    except InvalidTag as exc:
        raise AttestationError("worker key: cannot unseal for this measurement") from exc
    data = parse_json(secret, max_bytes=4096)
    assert isinstance(data, dict)
    return WorkerKeys(
        Signer.from_seed(base64.b64decode(data["signing_seed"])),
        PrivateKey(base64.b64decode(data["encryption_seed"])),
    )


def make_attestation(
    keys: WorkerKeys, platform_seed: bytes, measurement: Measurement, isolation: str
) -> Envelope:
    """The simulated provider's attestation, signed with the platform key."""
    statement = Attestation(
        provider="simulated",
        isolation=isolation,
        worker_signing_key=keys.signer.public_key,
        worker_encryption_key=keys.encryption_public,
        measurement=measurement,
        issued_at=now(),
    )
    return sign_envelope(Attestation.KIND, statement.to_dict(), [Signer.from_seed(platform_seed)])
