"""AWS Nitro Enclaves attestation documents, verified offline.

An NSM attestation document is a COSE_Sign1 (RFC 9052) signed with ES384 by a short-lived
leaf certificate; the payload is a CBOR map (module id, timestamp, PCRs, the leaf, the CA
bundle, and the optional ``public_key``, ``user_data`` and ``nonce``). The chain runs from
the AWS Nitro Enclaves Root G1, pinned here by the SHA-256 of its DER, through
``cabundle[1:]`` to the leaf.

Accepted forms: an untagged COSE_Sign1, a tag-18 COSE_Sign1, or dstack's SCALE wrapper
(``VersionedAttestation::V0`` holding ``AttestationQuote::DstackNitroEnclave``), whose own
fields after the document are parsed but not trusted: Nitro does not sign them.

Checks, in order (the step of each failure in brackets): size [size]; the COSE structure,
its protected header ``{1: -35}`` and a 96-byte signature [parse, algorithm]; the payload's
fields [parse]; the chain to the pinned root at ``now`` [chain, expiry] and a P-384 leaf key
[algorithm]; the COSE signature [signature]; then :func:`check_claims` [debug, measurement,
report_data].
"""

from __future__ import annotations

import io
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NoReturn

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from sdk.errors import AttestationError
from sdk.protocol.attestation import x509chain
from sdk.protocol.attestation.claims import (
    MAX_EVIDENCE_BYTES,
    EvidencePolicy,
    VerifiedClaims,
    check_claims,
)

PROVIDER = "aws-nitro"

# CN=aws.nitro-enclaves, OU=AWS, O=Amazon, C=US; P-384; valid 2019-10-28 to 2049-10-28.
# Published by AWS (https://aws-nitro-enclaves.amazonaws.com/AWS_NitroEnclaves_Root-G1.zip).
AWS_NITRO_ROOT_G1_PEM = """\
-----BEGIN CERTIFICATE-----
MIICETCCAZagAwIBAgIRAPkxdWgbkK/hHUbMtOTn+FYwCgYIKoZIzj0EAwMwSTEL
MAkGA1UEBhMCVVMxDzANBgNVBAoMBkFtYXpvbjEMMAoGA1UECwwDQVdTMRswGQYD
VQQDDBJhd3Mubml0cm8tZW5jbGF2ZXMwHhcNMTkxMDI4MTMyODA1WhcNNDkxMDI4
MTQyODA1WjBJMQswCQYDVQQGEwJVUzEPMA0GA1UECgwGQW1hem9uMQwwCgYDVQQL
DANBV1MxGzAZBgNVBAMMEmF3cy5uaXRyby1lbmNsYXZlczB2MBAGByqGSM49AgEG
BSuBBAAiA2IABPwCVOumCMHzaHDimtqQvkY4MpJzbolL//Zy2YlES1BR5TSksfbb
48C8WBoyt7F2Bw7eEtaaP+ohG2bnUs990d0JX28TcPQXCEPZ3BABIeTPYwEoCWZE
h8l5YoQwTcU/9KNCMEAwDwYDVR0TAQH/BAUwAwEB/zAdBgNVHQ4EFgQUkCW1DdkF
R+eWw5b6cp3PmanfS5YwDgYDVR0PAQH/BAQDAgGGMAoGCCqGSM49BAMDA2kAMGYC
MQCjfy+Rocm9Xue4YnwWmNJVA44fA0P5W2OpYow9OYCVRaEevL8uO1XYru5xtMPW
rfMCMQCi85sWBbJwKKXdS6BptQFuZbT73o/gBh1qUxl/nNr12UO8Yfwr6wPLb+6N
IwLz3/Y=
-----END CERTIFICATE-----
"""
AWS_NITRO_ROOT_G1_SHA256 = "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"

ES384 = -35  # COSE algorithm identifier
_SIGNATURE_BYTES = 96  # r || s, 48 bytes each, big-endian
_PCR_BYTES = 48  # SHA-384
_MAX_OPTIONAL_BYTES = 1024  # public_key, user_data, nonce
_MAX_CBOR_DEPTH = 8  # the document nests 3 deep
_REQUIRED = {"module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle"}
_OPTIONAL = {"public_key", "user_data", "nonce"}
_DSTACK_NITRO = b"\x00\x02"  # VersionedAttestation::V0, AttestationQuote::DstackNitroEnclave
_DSTACK_REPORT_DATA_BYTES = 64
_COMPACT_MINIMUM = (0, 1 << 6, 1 << 14)  # smallest value of each canonical compact mode
# What cryptography raises for malformed certificates besides AttestationError's own checks.


def _fail(step: str, message: str) -> NoReturn:
    raise AttestationError(f"{PROVIDER}: {step}: {message}", step=step)


@dataclass(frozen=True)
class _Document:
    """The payload's fields, well-typed but not yet authenticated."""

    module_id: str
    issued_at: datetime
    pcrs: Mapping[int, bytes]
    certificate: bytes
    cabundle: tuple[bytes, ...]
    public_key: bytes | None
    user_data: bytes | None


def verify(
    evidence: bytes,
    policy: EvidencePolicy,
    now: datetime,
    collateral: Mapping[str, bytes],
) -> VerifiedClaims:
    """Verify an NSM attestation document to the pinned AWS root at ``now``.

    ``collateral`` is ignored: a Nitro document carries its whole chain.

    Raises:
        AttestationError: the first failed step (see the module docstring).
    """
    return verify_document(evidence, policy, now, roots={AWS_NITRO_ROOT_G1_SHA256})


def verify_document(
    evidence: bytes, policy: EvidencePolicy, now: datetime, *, roots: Collection[str]
) -> VerifiedClaims:
    """Verify a document whose ``cabundle[0]`` must be one of ``roots`` (hex SHA-256 of the
    DER), then apply ``policy``. Returns the claims when every check passes.

    Raises:
        AttestationError: the first failed step (see the module docstring).
    """
    return check_claims(_signed_claims(evidence, now, roots=roots), policy)


def _signed_claims(evidence: bytes, now: datetime, *, roots: Collection[str]) -> VerifiedClaims:
    """The claims of a document whose structure, chain and signature verify, before any
    policy (debug documents included: callers must go through :func:`check_claims`).

    Raises:
        AttestationError: steps ``size`` to ``signature``.
    """
    if len(evidence) > MAX_EVIDENCE_BYTES:
        _fail("size", f"evidence over {MAX_EVIDENCE_BYTES} bytes")
    if now.tzinfo is None:
        _fail("expiry", "the verification time needs a timezone")
    try:
        protected, payload, signature = _parse_cose(_unwrap(evidence))
        document = _parse_payload(payload)
    except (cbor2.CBORError, ValueError, TypeError, KeyError, OverflowError, IndexError) as exc:
        raise AttestationError(f"{PROVIDER}: parse: malformed document", step="parse") from exc
    leaf_key = _verify_chain(document, now, roots)
    _verify_signature(leaf_key, protected, payload, signature)
    return VerifiedClaims(
        provider=PROVIDER,
        measurements={f"PCR{i}": value.hex() for i, value in sorted(document.pcrs.items())},
        report_data=(document.user_data or b"", document.public_key or b""),
        platform={"module_id": document.module_id, "digest": "SHA384"},
        debug=all(not any(document.pcrs[i]) for i in (0, 1, 2)),
        issued_at=document.issued_at,
    )


class _Scale:
    """A bounded reader of the few SCALE encodings dstack's wrapper uses."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, count: int) -> bytes:
        if count > len(self.data) - self.at:
            _fail("parse", "dstack wrapper truncated")
        self.at += count
        return self.data[self.at - count : self.at]

    def compact(self) -> int:
        """A canonical compact integer in the 1-, 2- or 4-byte mode (all that fit 64 KiB)."""
        mode = self.data[self.at] & 3 if self.at < len(self.data) else 0
        if mode == 3:
            _fail("parse", "dstack wrapper length out of range")
        value = int.from_bytes(self.take(1 << mode), "little") >> 2
        if value < _COMPACT_MINIMUM[mode]:
            _fail("parse", "dstack wrapper length not canonical")
        return value

    def vector(self) -> bytes:
        return self.take(self.compact())

    def text(self) -> str:
        return self.vector().decode("utf-8")


def _unwrap(evidence: bytes) -> bytes:
    """The COSE_Sign1 bytes: the evidence itself, or the document inside dstack's wrapper,
    whose remaining fields (runtime events, report data, config) must fill the rest exactly.
    """
    if not evidence.startswith(b"\x00"):
        return evidence
    reader = _Scale(evidence)
    if reader.take(2) != _DSTACK_NITRO:
        _fail("parse", "not a dstack Nitro Enclave wrapper")
    cose = reader.vector()
    for _ in range(reader.compact()):  # runtime events: (name, payload)
        reader.text()
        reader.vector()
    reader.take(_DSTACK_REPORT_DATA_BYTES)
    reader.text()  # config
    if reader.at != len(evidence):
        _fail("parse", "trailing bytes after the dstack wrapper")
    return cose


def _decode(data: bytes, what: str) -> object:
    """Exactly one CBOR item filling ``data``, with no duplicate map keys.

    Raises ``AttestationError`` (step ``parse``) for trailing bytes, ``cbor2.CBORError`` for
    malformed CBOR.
    """
    stream = io.BytesIO(data)
    decoder = cbor2.CBORDecoder(stream, max_depth=_MAX_CBOR_DEPTH, allow_duplicate_keys=False)
    item = decoder.decode()
    if stream.tell() != len(data):
        _fail("parse", f"trailing bytes after the {what}")
    return item


def _parse_cose(data: bytes) -> tuple[bytes, bytes, bytes]:
    """``(protected, payload, signature)`` of an ES384 COSE_Sign1 (untagged or tag 18) with
    an empty unprotected header.

    Raises ``AttestationError``: step ``parse`` for another structure, ``algorithm`` for an
    algorithm other than ES384.
    """
    if data.startswith(b"\xd2"):  # tag 18, COSE_Sign1
        data = data[1:]
    item = _decode(data, "COSE_Sign1")
    if type(item) is not list or len(item) != 4:
        _fail("parse", "not a COSE_Sign1 array of 4 items")
    protected, unprotected, payload, signature = item
    if not (
        type(protected) is bytes
        and type(unprotected) is dict
        and type(payload) is bytes
        and type(signature) is bytes
    ):
        _fail("parse", "COSE_Sign1 items of the wrong types")
    if unprotected:
        _fail("parse", "the unprotected header is not empty")
    header = _decode(protected, "protected header")
    if type(header) is not dict or any(type(label) is not int for label in header):
        _fail("parse", "the protected header is not a map of integer labels")
    algorithm = header.get(1)
    if type(algorithm) is not int or algorithm != ES384:
        _fail("algorithm", "the COSE algorithm is not ES384")
    if len(header) != 1:
        _fail("parse", "unexpected protected header parameters")
    if len(signature) != _SIGNATURE_BYTES:
        _fail("parse", f"the ES384 signature is not {_SIGNATURE_BYTES} bytes")
    return protected, payload, signature


def _optional_bytes(document: Mapping[str, object], key: str) -> bytes | None:
    value = document.get(key)
    if value is None:
        return None
    if type(value) is not bytes or len(value) > _MAX_OPTIONAL_BYTES:
        _fail("parse", f"{key} is not bytes of at most {_MAX_OPTIONAL_BYTES}")
    return value


def _parse_payload(payload: bytes) -> _Document:
    """The attestation document's fields, each of its specified type.

    Raises ``AttestationError`` (step ``parse``) for a missing, unknown or ill-typed field.
    """
    document = _decode(payload, "payload")
    if type(document) is not dict or any(type(key) is not str for key in document):
        _fail("parse", "the payload is not a map of text keys")
    if not _REQUIRED <= document.keys() <= _REQUIRED | _OPTIONAL:
        _fail("parse", "missing or unknown payload fields")
    module_id, timestamp = document["module_id"], document["timestamp"]
    pcrs, certificate, cabundle = document["pcrs"], document["certificate"], document["cabundle"]
    if type(module_id) is not str or not module_id:
        _fail("parse", "module_id is not text")
    if type(document["digest"]) is not str or document["digest"] != "SHA384":
        _fail("parse", "digest is not SHA384")
    if type(timestamp) is not int or not 0 < timestamp < 1 << 64:
        _fail("parse", "timestamp is not an unsigned integer")
    if (
        type(pcrs) is not dict
        or not {0, 1, 2} <= pcrs.keys()
        or any(type(i) is not int or not 0 <= i < 32 for i in pcrs)
        or any(type(v) is not bytes or len(v) != _PCR_BYTES for v in pcrs.values())
    ):
        _fail(
            "parse", f"pcrs is not a map of indexes 0..31 (0, 1, 2 included) to {_PCR_BYTES} bytes"
        )
    if type(certificate) is not bytes:
        _fail("parse", "certificate is not bytes")
    if type(cabundle) is not list or not cabundle or any(type(c) is not bytes for c in cabundle):
        _fail("parse", "cabundle is not a non-empty list of bytes")
    _optional_bytes(document, "nonce")
    return _Document(
        module_id=module_id,
        issued_at=datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=timestamp),
        pcrs=pcrs,
        certificate=certificate,
        cabundle=tuple(cabundle),
        public_key=_optional_bytes(document, "public_key"),
        user_data=_optional_bytes(document, "user_data"),
    )


def _verify_chain(
    document: _Document, now: datetime, roots: Collection[str]
) -> ec.EllipticCurvePublicKey:
    """The leaf's P-384 key, once ``cabundle + [certificate]`` verifies from a pinned root.

    Raises ``AttestationError``: step ``parse`` for a certificate that is not DER, ``chain``
    or ``expiry`` from :func:`x509chain.verify_chain`, ``algorithm`` for another leaf key.
    """
    named = [(f"cabundle[{i}]", der) for i, der in enumerate(document.cabundle)]
    chain: list[x509.Certificate] = []
    for what, der in [*named, ("leaf", document.certificate)]:
        if not der.startswith(b"\x30"):  # DER SEQUENCE; the loader would also take PEM
            _fail("parse", f"{what} is not a DER certificate")
        chain.append(x509chain.load_certificate(der, provider=PROVIDER, what=what))
    leaf = x509chain.verify_chain(chain, roots=roots, now=now, provider=PROVIDER)
    try:
        key = leaf.public_key()
    except x509chain.X509_ERRORS as exc:
        raise AttestationError(
            f"{PROVIDER}: algorithm: unusable leaf key", step="algorithm"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        _fail("algorithm", "the leaf key is not EC P-384")
    return key


def _verify_signature(
    key: ec.EllipticCurvePublicKey, protected: bytes, payload: bytes, signature: bytes
) -> None:
    """Check the ES384 signature (r || s) over the COSE Sig_structure.

    Raises ``AttestationError`` (step ``signature``) when it does not verify.
    """
    to_be_signed = cbor2.dumps(["Signature1", protected, b"", payload])
    half = _SIGNATURE_BYTES // 2
    der = encode_dss_signature(
        int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
    )
    try:
        key.verify(der, to_be_signed, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature as exc:
        raise AttestationError(
            f"{PROVIDER}: signature: the COSE signature does not verify", step="signature"
        ) from exc
