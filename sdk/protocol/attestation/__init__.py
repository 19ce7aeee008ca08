"""Hardware attestation evidence, verified offline: AWS Nitro Enclaves, AMD SEV-SNP, Intel TDX.

One interface for every provider::

    claims = verify_evidence("aws-nitro", evidence, policy=EvidencePolicy(...), now=when)

A provider module (``nitro``, ``snp``, ``tdx``) exposes
``verify(evidence, policy, now, collateral) -> VerifiedClaims``. It caps sizes, parses the
structure its specification defines, verifies the signature and the certificate chain to a
root pinned by fingerprint at the given time, and ends with :func:`check_claims` (debug
refused, measurements, key binding). Every failure is one ``AttestationError`` whose ``step``
names what failed. ``now`` is always a parameter: certificates and collateral expire, so an
auditor verifies old evidence at the time it was produced.

The simulated provider (the operator's platform key signs the attestation) is verified in
:func:`sdk.protocol.verify.verify_attestation`; it has no evidence to parse.

Provider modules are imported on first use: the TDX verifier needs a native library
(``dcap-qvl``), which a worker never loads.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from datetime import datetime
from typing import Protocol

from sdk.errors import AttestationError
from sdk.protocol.attestation.claims import (
    MAX_COLLATERAL_BYTES,
    MAX_EVIDENCE_BYTES,
    STEPS,
    EvidencePolicy,
    VerifiedClaims,
    check_claims,
    key_binding,
)

__all__ = [
    "HARDWARE_PROVIDERS",
    "REQUIRED_REGISTERS",
    "STEPS",
    "EvidencePolicy",
    "VerifiedClaims",
    "check_claims",
    "key_binding",
    "verify_evidence",
]

# manifest provider name -> module under sdk.protocol.attestation
HARDWARE_PROVIDERS: Mapping[str, str] = {
    "aws-nitro": "nitro",
    "amd-sev-snp": "snp",
    "intel-tdx": "tdx",
}

# the registers a manifest must pin for each provider (more may be pinned): Nitro's enclave
# image, kernel and application (PCR0-2); SNP's launch measurement and guest policy bits;
# TDX's TD measurement and the firmware, OS and command-line runtime registers
REQUIRED_REGISTERS: Mapping[str, tuple[str, ...]] = {
    "aws-nitro": ("PCR0", "PCR1", "PCR2"),
    "amd-sev-snp": ("MEASUREMENT", "POLICY"),
    "intel-tdx": ("MRTD", "RTMR0", "RTMR1", "RTMR2"),
}


class _Provider(Protocol):
    def verify(
        self,
        evidence: bytes,
        policy: EvidencePolicy,
        now: datetime,
        collateral: Mapping[str, bytes],
    ) -> VerifiedClaims: ...


def verify_evidence(
    provider: str,
    evidence: bytes,
    *,
    policy: EvidencePolicy,
    now: datetime,
    collateral: Mapping[str, bytes] | None = None,
) -> VerifiedClaims:
    """Verify one provider's evidence at ``now`` (timezone-aware) against ``policy``.

    ``collateral`` maps a file name to its bytes: SNP takes ``vcek`` (DER or PEM) and
    optionally ``ask`` and ``ark`` (which must be the pinned ones); TDX takes
    ``collateral.json`` (dcap-qvl's ``QuoteCollateralV3``).

    Raises:
        AttestationError: an unknown provider, evidence or collateral over its cap, a naive
            ``now``, or any failed step of the provider (``error.step`` names it); and only
            it: anything else a provider raises becomes step ``parse``.
    """
    module_name = HARDWARE_PROVIDERS.get(provider)
    if module_name is None:
        raise AttestationError(f"attestation: unknown provider {provider[:32]!r}", step="parse")
    if now.tzinfo is None:
        raise AttestationError("attestation: the verification time needs a timezone", step="expiry")
    if len(evidence) > MAX_EVIDENCE_BYTES:
        raise AttestationError(
            f"{provider}: size: evidence over {MAX_EVIDENCE_BYTES} bytes", step="size"
        )
    collateral = dict(collateral or {})
    if not all(isinstance(k, str) and isinstance(v, bytes) for k, v in collateral.items()):
        raise AttestationError(f"{provider}: collateral: names and bytes only", step="collateral")
    if sum(len(v) for v in collateral.values()) > MAX_COLLATERAL_BYTES:
        raise AttestationError(
            f"{provider}: size: collateral over {MAX_COLLATERAL_BYTES} bytes", step="size"
        )
    module: _Provider = importlib.import_module(f"sdk.protocol.attestation.{module_name}")
    try:
        return module.verify(evidence, policy, now, collateral)
    except AttestationError:
        raise
    except Exception as exc:  # fail closed, for every provider: only AttestationError leaves
        raise AttestationError(
            f"{provider}: parse: malformed input ({type(exc).__name__})", step="parse"
        ) from exc
