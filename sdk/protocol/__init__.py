"""The protocol core of sealroom: the single source of truth for formats and checks.

Depends on the standard library, ``cryptography`` and ``PyNaCl`` only; never imports the
enclave, the coordinator, pandas, FastAPI or docker.
"""

from sdk.protocol.canonical import canonical_json, parse_json
from sdk.protocol.dsse import (
    Envelope,
    VerificationResult,
    open_envelope,
    pae,
    payload_type,
    sign_envelope,
    verify_signatures,
)
from sdk.protocol.keys import PartyKey, PublicIdentity, Signer, keyid
from sdk.protocol.models import Approval, Attestation, Bundle, Dataset, Manifest, Upload
from sdk.protocol.records import Checkpoint, LogEntry, Receipt
from sdk.protocol.spec import OutputSpec

__all__ = [
    "Approval",
    "Attestation",
    "Bundle",
    "Checkpoint",
    "Dataset",
    "Envelope",
    "LogEntry",
    "Manifest",
    "OutputSpec",
    "PartyKey",
    "PublicIdentity",
    "Receipt",
    "Signer",
    "Upload",
    "VerificationResult",
    "canonical_json",
    "keyid",
    "open_envelope",
    "pae",
    "parse_json",
    "payload_type",
    "sign_envelope",
    "verify_signatures",
]
