"""Synthetic Nitro attestation documents, signed by a throwaway CA, for the verifier's tests.

``make_pki`` builds root -> intermediate -> leaf (P-384 unless told otherwise, SHA-384
signatures, valid around ``T0``); ``fields`` builds a well-formed payload map for it;
``sign`` wraps a payload in an ES384 COSE_Sign1 exactly as the NSM does.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from sdk.protocol.attestation import x509chain

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)  # inside every forged certificate's validity
DROP = object()  # a ``fields`` override that removes the field

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@functools.cache
def make_key(kind: str = "p384", label: str = "") -> PrivateKey:
    """A cached private key: ``p384``, ``p256`` or ``rsa`` (``label`` tells keys apart)."""
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP384R1() if kind == "p384" else ec.SECP256R1())


def make_cert(
    name: str,
    key: PrivateKey,
    issuer: tuple[x509.Certificate, PrivateKey] | None,
    *,
    ca: bool,
    hours: tuple[int, int] = (-1, 2),
) -> x509.Certificate:
    """A certificate for ``key``, self-signed when ``issuer`` is None, valid ``T0`` + hours."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, signer = (subject, key) if issuer is None else (issuer[0].subject, issuer[1])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(T0 + timedelta(hours=hours[0]))
        .not_valid_after(T0 + timedelta(hours=hours[1]))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    return builder.sign(signer, hashes.SHA384())


def der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(Encoding.DER)


@dataclass(frozen=True)
class Pki:
    root: x509.Certificate
    intermediate: x509.Certificate
    intermediate_key: PrivateKey
    leaf: x509.Certificate
    leaf_key: PrivateKey

    @property
    def fingerprint(self) -> str:
        return x509chain.fingerprint(self.root)


@functools.cache
def make_pki(name: str = "forge", leaf_kind: str = "p384") -> Pki:
    """Root -> intermediate -> leaf; each ``name`` gets its own keys (cached)."""
    root_key, intermediate_key = make_key("p384", f"{name} root"), make_key("p384", f"{name} ca")
    leaf_key = make_key(leaf_kind, f"{name} leaf")
    root = make_cert(f"{name} root", root_key, None, ca=True, hours=(-24, 24))
    intermediate = make_cert(
        f"{name} intermediate", intermediate_key, (root, root_key), ca=True, hours=(-12, 12)
    )
    leaf = make_cert(f"{name} leaf", leaf_key, (intermediate, intermediate_key), ca=False)
    return Pki(root, intermediate, intermediate_key, leaf, leaf_key)


def fields(pki: Pki, **overrides: Any) -> dict[str, Any]:
    """A well-formed payload map for ``pki``'s leaf; ``DROP`` as a value removes a field."""
    document: dict[str, Any] = {
        "module_id": "i-0123456789abcdef0-enc0123456789abcdef",
        "digest": "SHA384",
        "timestamp": int(T0.timestamp() * 1000),
        "pcrs": {i: bytes([i]) * 48 for i in range(16)},
        "certificate": der(pki.leaf),
        "cabundle": [der(pki.root), der(pki.intermediate)],
        "public_key": None,
        "user_data": bytes(64),
        "nonce": None,
    }
    document.update(overrides)
    return {key: value for key, value in document.items() if value is not DROP}


def sign(
    payload: dict[str, Any] | bytes,
    key: PrivateKey,
    *,
    alg: int = -35,
    tagged: bool = False,
) -> bytes:
    """An ES384 COSE_Sign1 over ``payload`` (a map, or raw bytes used as they are).

    A non-P-384 key still yields 96 signature bytes (zero-padded r || s, or zeros for RSA)
    so the document reaches the check under test.
    """
    protected = cbor2.dumps({1: alg})
    payload_bytes = payload if isinstance(payload, bytes) else cbor2.dumps(payload)
    to_be_signed = cbor2.dumps(["Signature1", protected, b"", payload_bytes])
    if isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(to_be_signed, ec.ECDSA(hashes.SHA384())))
        signature = r.to_bytes(48, "big") + s.to_bytes(48, "big")
    else:
        signature = bytes(96)
    cose = cbor2.dumps([protected, {}, payload_bytes, signature])
    return b"\xd2" + cose if tagged else cose
