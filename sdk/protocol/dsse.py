"""DSSE envelopes: sign and verify with thresholds over distinct trusted keys.

An envelope is ``{"payloadType", "payload" (base64), "signatures": [{"keyid", "sig"}]}`` and
each signature is Ed25519 over ``PAE(payloadType, payload)``. Verification follows the
"verify, then check the type, then parse the verified bytes" order: :func:`open_envelope`
is the only supported way to read a payload.

Thresholds count distinct trusted *public keys*. A keyid is only a hint for which key to try;
the same key listed under two names, or one signature repeated, still counts once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sdk.errors import InputError, SignatureError
from sdk.protocol.canonical import canonical_json, parse_json
from sdk.protocol.fields import check_keys, expect_mapping
from sdk.protocol.keys import Signer, keyid

MAX_ENVELOPE_BYTES = 8 * 1024 * 1024
MAX_SIGNATURES = 64
PAYLOAD_TYPE_PREFIX = "application/vnd.sealroom."
PAYLOAD_TYPE_SUFFIX = ".v1+json"


def payload_type(kind: str) -> str:
    """The payload type of a kind of signed object: ``application/vnd.sealroom.<kind>.v1+json``."""
    return f"{PAYLOAD_TYPE_PREFIX}{kind}{PAYLOAD_TYPE_SUFFIX}"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: ``DSSEv1 SP LEN(type) SP type SP LEN(body) SP body``."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(type_bytes), type_bytes, len(payload), payload)


@dataclass(frozen=True)
class Signature:
    """One signature in an envelope; ``keyid`` is an unauthenticated hint."""

    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    """A DSSE envelope. Build with :func:`sign_envelope`; read with :func:`open_envelope`."""

    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "payloadType": self.payload_type,
            "payload": base64.b64encode(self.payload).decode("ascii"),
            "signatures": [
                {"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode("ascii")}
                for s in self.signatures
            ],
        }

    def to_json(self) -> bytes:
        """Canonical JSON of the envelope (what is stored, sent and hashed into the log)."""
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, data: object) -> Envelope:
        """Parse the envelope structure (not its payload). Raises ``InputError``."""
        d = expect_mapping(data, "envelope")
        check_keys(d, "envelope", ["payloadType", "payload", "signatures"])
        ptype = d["payloadType"]
        if not isinstance(ptype, str) or len(ptype) > 200:
            raise InputError("envelope.payloadType: expected a short string")
        sigs_raw = d["signatures"]
        if not isinstance(sigs_raw, list):
            raise InputError("envelope.signatures: expected a list")
        if len(sigs_raw) > MAX_SIGNATURES:
            raise InputError(f"envelope.signatures: more than {MAX_SIGNATURES}")
        signatures = []
        for raw in sigs_raw:
            s = expect_mapping(raw, "envelope.signatures[]")
            check_keys(s, "envelope.signatures[]", ["keyid", "sig"])
            if not isinstance(s["keyid"], str) or len(s["keyid"]) > 128:
                raise InputError("envelope.signatures[].keyid: expected a short string")
            signatures.append(Signature(s["keyid"], _b64decode(s["sig"], "signature")))
        return cls(ptype, _b64decode(d["payload"], "payload"), tuple(signatures))

    @classmethod
    def from_json(cls, data: bytes, *, max_bytes: int = MAX_ENVELOPE_BYTES) -> Envelope:
        """Parse an envelope from JSON bytes, size-capped before parsing."""
        return cls.from_dict(parse_json(data, max_bytes=max_bytes))

    def digest(self) -> str:
        """SHA-256 (hex) of the payload bytes: how other objects refer to this one."""
        return hashlib.sha256(self.payload).hexdigest()


def _b64decode(text: object, where: str) -> bytes:
    if not isinstance(text, str):
        raise InputError(f"envelope.{where}: expected base64 text")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise InputError(f"envelope.{where}: invalid base64") from exc


def sign_envelope(kind: str, payload: Mapping[str, Any], signers: list[Signer]) -> Envelope:
    """Canonicalize ``payload`` and sign it with every signer."""
    body = canonical_json(payload)
    ptype = payload_type(kind)
    message = pae(ptype, body)
    return Envelope(ptype, body, tuple(Signature(s.keyid, s.sign(message)) for s in signers))


def add_signature(envelope: Envelope, signer: Signer) -> Envelope:
    """A copy of ``envelope`` with one more signature (replacing this signer's older one)."""
    sig = Signature(signer.keyid, signer.sign(pae(envelope.payload_type, envelope.payload)))
    kept = tuple(s for s in envelope.signatures if s.keyid != signer.keyid)
    return Envelope(envelope.payload_type, envelope.payload, (*kept, sig))


@dataclass(frozen=True)
class VerificationResult:
    """Who signed and who is missing, by trusted name (python-tuf's model)."""

    threshold: int
    signed: frozenset[str] = field(default_factory=frozenset)
    unsigned: frozenset[str] = field(default_factory=frozenset)

    @property
    def verified(self) -> bool:
        """True when at least ``threshold`` distinct trusted keys signed."""
        return len(self.signed) >= self.threshold


def verify_signatures(
    envelope: Envelope, trusted: Mapping[str, bytes], threshold: int
) -> VerificationResult:
    """Check the envelope's signatures against ``trusted`` (name → raw Ed25519 public key).

    Counts each distinct public key once, whatever keyids or duplicates the envelope carries;
    names that share one public key count once in total. Never raises for bad signatures: it
    reports them as missing.
    """
    if threshold < 1:
        raise ValueError("threshold must be at least 1")
    message = pae(envelope.payload_type, envelope.payload)
    by_keyid: dict[str, list[tuple[str, bytes]]] = {}
    for name, key in trusted.items():
        by_keyid.setdefault(keyid(key), []).append((name, key))
    good_keys: set[bytes] = set()
    for signature in envelope.signatures:
        candidates = by_keyid.get(signature.keyid, [])
        for _name, key in candidates:
            if key in good_keys:
                continue
            try:
                Ed25519PublicKey.from_public_bytes(key).verify(signature.sig, message)
            except (InvalidSignature, ValueError):
                continue
            good_keys.add(key)
    # distinct keys: when two names share a key, only the first name (sorted) is credited
    signed: set[str] = set()
    credited: set[bytes] = set()
    for name in sorted(trusted):
        key = trusted[name]
        if key in good_keys and key not in credited:
            credited.add(key)
            signed.add(name)
    unsigned = frozenset(set(trusted) - signed)
    return VerificationResult(threshold, frozenset(signed), unsigned)


def open_envelope(
    envelope: Envelope,
    kind: str,
    trusted: Mapping[str, bytes],
    threshold: int = 1,
    *,
    max_payload_bytes: int = MAX_ENVELOPE_BYTES,
) -> tuple[dict[str, Any], VerificationResult]:
    """Verify, then check the payload type, then parse exactly the verified bytes.

    Returns the parsed payload and the verification result.

    Raises:
        SignatureError: fewer than ``threshold`` distinct trusted keys signed (the message
            names who is missing).
        InputError: wrong payload type (e.g. a receipt presented as an approval) or a payload
            that is not strict JSON.
    """
    result = verify_signatures(envelope, trusted, threshold)
    if not result.verified:
        missing = ", ".join(sorted(result.unsigned)) or "none"
        raise SignatureError(
            f"{kind}: {len(result.signed)} of {threshold} required signatures; missing: {missing}"
        )
    expected = payload_type(kind)
    if envelope.payload_type != expected:
        raise InputError(f"{kind}: wrong payload type (expected {expected})")
    payload = parse_json(envelope.payload, max_bytes=max_payload_bytes)
    if not isinstance(payload, dict):
        raise InputError(f"{kind}: payload must be an object")
    if canonical_json(payload) != envelope.payload:
        raise InputError(f"{kind}: payload is not canonical JSON")
    return payload, result
