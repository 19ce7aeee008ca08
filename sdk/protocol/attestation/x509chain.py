"""Certificate chains of attestation evidence, verified to a root pinned by fingerprint.

Attestation chains are not web PKI (no host names, odd key usages, AMD's serial number 0), so
this checks what attestation needs and nothing more: the root is one of the pinned DER
fingerprints and signs itself; each certificate is directly issued (name and signature) by the
one before it, which must be a CA; every certificate is valid at ``now``.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Collection, Sequence
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding

from sdk.errors import AttestationError

MAX_CERTIFICATE_BYTES = 16 * 1024

# what cryptography raises for malformed certificates besides ValueError
X509_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)

_LINK_ERRORS: tuple[type[Exception], ...] = (InvalidSignature, *X509_ERRORS)


def load_certificate(data: bytes, *, provider: str, what: str) -> x509.Certificate:
    """Parse one certificate, PEM or DER.

    Raises ``AttestationError`` (step ``parse``) when it is oversized or not a certificate.
    """
    if not data or len(data) > MAX_CERTIFICATE_BYTES:
        raise AttestationError(f"{provider}: parse: {what} certificate size", step="parse")
    try:
        with warnings.catch_warnings():
            # AMD's VCEKs have serial number 0, which cryptography warns about
            warnings.simplefilter("ignore")
            if data.lstrip().startswith(b"-----BEGIN"):
                return x509.load_pem_x509_certificate(data)
            return x509.load_der_x509_certificate(data)
    except X509_ERRORS as exc:  # e.g. InvalidVersion, which is not a ValueError
        raise AttestationError(
            f"{provider}: parse: {what} is not a certificate", step="parse"
        ) from exc


def fingerprint(certificate: x509.Certificate) -> str:
    """Hex SHA-256 of the DER encoding (how trust anchors are pinned)."""
    return hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest()


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    except X509_ERRORS:  # malformed extensions
        return False
    return constraints.value.ca


def verify_chain(
    chain: Sequence[x509.Certificate],
    *,
    roots: Collection[str],
    now: datetime,
    provider: str,
) -> x509.Certificate:
    """Verify ``chain`` (root first, leaf last) and return the leaf.

    Raises:
        AttestationError: step ``chain`` when the root is not pinned or a link does not verify
            (issuer name, signature, or an issuer that is not a CA); step ``expiry`` when a
            certificate is not valid at ``now`` (timezone-aware).
    """
    if not chain:
        raise AttestationError(f"{provider}: chain: no certificates", step="chain")
    root = chain[0]
    if fingerprint(root) not in roots:
        raise AttestationError(f"{provider}: chain: the root is not a pinned root", step="chain")
    issuer = root
    for depth, certificate in enumerate(chain):
        if depth > 0 and not _is_ca(issuer):
            raise AttestationError(
                f"{provider}: chain: certificate {depth - 1} is not a CA", step="chain"
            )
        try:
            certificate.verify_directly_issued_by(issuer)
        except _LINK_ERRORS as exc:
            raise AttestationError(
                f"{provider}: chain: certificate {depth} is not issued by the one before it",
                step="chain",
            ) from exc
        issuer = certificate
    for depth, certificate in enumerate(chain):
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise AttestationError(
                f"{provider}: expiry: certificate {depth} is not valid at "
                f"{now.isoformat(timespec='seconds')}",
                step="expiry",
            )
    return chain[-1]
