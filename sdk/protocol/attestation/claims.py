"""What hardware evidence proves once verified, and the checks every provider ends with.

A provider (``nitro``, ``snp``, ``tdx``) turns raw evidence into :class:`VerifiedClaims` only
after its signature, certificate chain and times have been verified; :func:`check_claims` then
applies the parties' :class:`EvidencePolicy`: debug refused, every pinned measurement register
matched, and the key binding present. The step names are stable: they are what
``AttestationError.step`` carries and what the CLI prints.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sdk.errors import AttestationError

# The verification steps, in the order a provider runs them.
STEPS = (
    "size",  # evidence or collateral over its cap
    "parse",  # not the structure the provider's specification defines
    "algorithm",  # a signature algorithm other than the one the specification fixes
    "signature",  # the evidence's own signature does not verify
    "chain",  # a certificate link, the pinned root, or a platform binding fails
    "expiry",  # a certificate or collateral is not valid at the given time
    "collateral",  # collateral missing, malformed or revoked (TDX, SNP)
    "tcb",  # the platform's TCB status is not acceptable
    "debug",  # the evidence comes from a debug-mode enclave or guest
    "measurement",  # a measurement register differs from what the policy pins
    "report_data",  # the evidence does not bind the expected worker keys
)

MAX_EVIDENCE_BYTES = 64 * 1024
MAX_COLLATERAL_BYTES = 1024 * 1024  # every collateral file together

KEY_BINDING_CONTEXT = b"sealroom-worker-keys-v1\x00"


def key_binding(signing_key: bytes, encryption_key: bytes) -> bytes:
    """The 64 bytes a worker puts in its evidence's report data (Nitro ``user_data``, SNP
    ``REPORT_DATA``, TDX ``REPORTDATA``): SHA-512 over a context string, the raw Ed25519
    signing key and the raw X25519 encryption key. Evidence carrying these bytes was produced
    by a TEE that held (or was given) exactly these keys.

    Raises ``AttestationError`` (step ``report_data``) for keys that are not 32 bytes each.
    """
    if len(signing_key) != 32 or len(encryption_key) != 32:
        raise AttestationError("key binding: keys must be 32 bytes each", step="report_data")
    return hashlib.sha512(KEY_BINDING_CONTEXT + signing_key + encryption_key).digest()


@dataclass(frozen=True)
class EvidencePolicy:
    """What the parties require of a provider's evidence.

    ``measurements`` maps a register name as the provider reports it (``PCR0``,
    ``MEASUREMENT``, ``MRTD``, ``RTMR0``, ...) to the accepted lowercase hex values; every
    listed register must be present and hold one of them. ``report_data``, when set, is the key
    binding (:func:`key_binding`) the evidence must carry. Debug-mode evidence is always refused.
    """

    measurements: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    report_data: bytes | None = None


@dataclass(frozen=True)
class VerifiedClaims:
    """The facts verified evidence establishes.

    * ``provider``: ``aws-nitro``, ``amd-sev-snp`` or ``intel-tdx``;
    * ``measurements``: register name to lowercase hex (all registers the evidence carries);
    * ``report_data``: the fields that can carry the key binding, in the provider's order
      (Nitro: ``user_data`` then ``public_key``; SNP: ``REPORT_DATA``; TDX: ``REPORTDATA``);
    * ``platform``: the platform's identity (module id, chip id, TCB, FMSPC, ...), as text;
    * ``debug``: whether the evidence says debug mode (refused by :func:`check_claims`);
    * ``issued_at``: the evidence's own time, when it has one (Nitro), else ``None``.
    """

    provider: str
    measurements: Mapping[str, str]
    report_data: tuple[bytes, ...]
    platform: Mapping[str, str]
    debug: bool
    issued_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (``attestation verify --json``)."""
        return {
            "provider": self.provider,
            "measurements": dict(self.measurements),
            "report_data": [value.hex() for value in self.report_data],
            "platform": dict(self.platform),
            "debug": self.debug,
            "issued_at": None if self.issued_at is None else self.issued_at.isoformat(),
        }


def check_claims(claims: VerifiedClaims, policy: EvidencePolicy) -> VerifiedClaims:
    """Apply the parties' policy to cryptographically verified claims.

    Returns the claims unchanged when they pass.

    Raises:
        AttestationError: step ``debug`` for debug-mode evidence, ``measurement`` for a pinned
            register that is missing or holds another value, ``report_data`` when the
            expected key binding is in none of the report-data fields.
    """
    where = claims.provider
    if claims.debug:
        raise AttestationError(f"{where}: debug: evidence from a debug-mode TEE", step="debug")
    for register, accepted in sorted(policy.measurements.items()):
        value = claims.measurements.get(register)
        if value is None or value.lower() not in {a.lower() for a in accepted}:
            raise AttestationError(
                f"{where}: measurement: {register} is not a value the policy accepts",
                step="measurement",
            )
    if policy.report_data is not None and policy.report_data not in claims.report_data:
        raise AttestationError(
            f"{where}: report_data: the evidence does not bind the expected worker keys",
            step="report_data",
        )
    return claims
