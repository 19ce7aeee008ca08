"""The worker's own keys: generated at provisioning, sealed to the platform and measurement.

Simulated provider (DESIGN §2): the operator's platform secret (an Ed25519 seed whose public key
the manifest pins) signs the attestation, and a key derived from it *and the measurement* seals
the worker keys, so a worker with other code or another image cannot unseal them — the same
shape as SGX sealing to MRENCLAVE, with the operator's root trusted instead of hardware.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sdk.errors import AttestationError, DecryptionError, InputError
from sdk.protocol.attestation import key_binding
from sdk.protocol.clock import now
from sdk.protocol.dsse import Envelope, sign_envelope
from sdk.protocol.keys import PartyKey, Signer
from sdk.protocol.keywrap import open_key_pair, seal_key_pair
from sdk.protocol.models import Attestation, Measurement

WORKER_KEY_NAME = "worker"
MAX_SEALED_BYTES = 4096


@dataclass(frozen=True)
class WorkerKeys:
    """The worker's signing key and encryption key (never leave the supervisor): a key pair of
    the same shape as a party's (:class:`sdk.protocol.keys.PartyKey`)."""

    pair: PartyKey

    @classmethod
    def generate(cls) -> WorkerKeys:
        """Fresh keys (provisioning)."""
        return cls(PartyKey.generate(WORKER_KEY_NAME))

    @property
    def signer(self) -> Signer:
        return self.pair.signer

    @property
    def encryption_public(self) -> bytes:
        """The raw X25519 public key parties seal their uploads to."""
        return self.pair.identity.encryption_key


def seal_worker_keys(keys: WorkerKeys, platform_seed: bytes, measurement: Measurement) -> bytes:
    """Seal the worker keys to the platform secret and the measurement
    (:func:`sdk.protocol.keywrap.seal_key_pair`).

    Raises ``InputError`` when the platform secret is not 32 bytes.
    """
    return seal_key_pair(keys.pair, platform_seed, measurement)


def unseal_worker_keys(sealed: bytes, platform_seed: bytes, measurement: Measurement) -> WorkerKeys:
    """Unseal keys sealed for this exact measurement.

    Raises:
        AttestationError: wrong platform secret, other measurement, or corrupted blob.
    """
    if len(sealed) < 28 or len(sealed) > MAX_SEALED_BYTES or len(platform_seed) != 32:
        raise AttestationError("worker key: sealed blob or platform secret malformed")
    try:
        pair = open_key_pair(sealed, platform_seed, measurement, name=WORKER_KEY_NAME)
    except (DecryptionError, InputError) as exc:
        raise AttestationError("worker key: cannot unseal for this measurement") from exc
    return WorkerKeys(pair)


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


def make_hardware_attestation(
    keys: WorkerKeys,
    provider: str,
    measurement: Measurement,
    isolation: str,
    collect: Callable[[str, bytes], tuple[bytes, dict[str, bytes]]],
) -> Envelope:
    """A hardware provider's attestation: the TEE's evidence over the key binding of these
    keys (``collect``: :func:`enclave.evidence.collect_evidence`), in a statement the worker
    signs with the key it names (:func:`sdk.protocol.verify.verify_attestation`)."""
    evidence, collateral = collect(
        provider, key_binding(keys.signer.public_key, keys.encryption_public)
    )
    statement = Attestation(
        provider=provider,
        isolation=isolation,
        worker_signing_key=keys.signer.public_key,
        worker_encryption_key=keys.encryption_public,
        measurement=measurement,
        issued_at=now(),
        evidence=evidence,
        collateral=tuple(sorted(collateral.items())),
    )
    return sign_envelope(Attestation.KIND, statement.to_dict(), [keys.signer])
