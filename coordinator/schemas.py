"""Request and response models of the HTTP API (what the OpenAPI schema documents).

Signed objects travel as DSSE envelopes; requests carrying them are read as raw bytes and
parsed by the protocol core's strict parser, so their schema is documented by hand
(:data:`ENVELOPE_BODY`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

HEX64 = r"^[0-9a-f]{64}$"


class Strict(BaseModel):
    """Models reject unknown fields."""

    model_config = ConfigDict(extra="forbid")


class SignatureModel(Strict):
    keyid: str
    sig: str


class EnvelopeModel(Strict):
    """A DSSE envelope: ``payload`` is base64 of canonical JSON."""

    payloadType: str
    payload: str
    signatures: list[SignatureModel]


ENVELOPE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["payloadType", "payload", "signatures"],
    "additionalProperties": False,
    "properties": {
        "payloadType": {"type": "string", "maxLength": 200},
        "payload": {"type": "string", "contentEncoding": "base64"},
        "signatures": {
            "type": "array",
            "maxItems": 64,
            "items": {
                "type": "object",
                "required": ["keyid", "sig"],
                "additionalProperties": False,
                "properties": {"keyid": {"type": "string", "maxLength": 128},
                               "sig": {"type": "string", "contentEncoding": "base64"}},
            },
        },
    },
}
ENVELOPE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": ENVELOPE_SCHEMA}},
    }
}
BINARY_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
        },
    }
}


class ErrorDetail(Strict):
    code: str = Field(description="stable error code, E_...")
    message: str


class ErrorBody(Strict):
    error: ErrorDetail


#: 415: a body route given another ``Content-Type``; 429: too many bodies held at once
ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorBody} for s in (400, 401, 403, 404, 409, 413, 415, 422, 429)
}


class ChallengeRequest(Strict):
    signing_key: str = Field(pattern=HEX64, description="raw Ed25519 public key, hex")


class ChallengeResponse(Strict):
    nonce: str = Field(description="hex; sign b'sealroom-auth-v1\\n' + nonce + b'\\n' + audience")
    audience: str
    expires_at: str


class TokenRequest(Strict):
    signing_key: str = Field(pattern=HEX64)
    nonce: str = Field(pattern=HEX64)
    signature: str = Field(max_length=200, description="Ed25519 signature, base64")


class TokenResponse(Strict):
    token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the scheme name
    expires_at: str


class RoomInfo(Strict):
    room_id: str
    manifest_digest: str
    complete: bool
    signed: list[str]
    missing: list[str]
    parties: list[str]
    you: str | None = Field(default=None, description="the caller's party name")
    manifest: EnvelopeModel


class RoomSummary(Strict):
    room_id: str
    manifest_digest: str
    complete: bool


class AttestationInfo(Strict):
    digest: str
    current: bool
    image_id: str
    isolation: str
    envelope: EnvelopeModel


class UploadInfo(Strict):
    digest: str
    room_id: str
    dataset: str
    version: int
    owner: str
    ciphertext_digest: str
    ciphertext_size: int
    complete: bool
    created_at: str
    statement: EnvelopeModel


class BundleInfo(Strict):
    digest: str
    room_id: str
    author: str
    sequence: int
    title: str
    created_at: str
    envelope: EnvelopeModel


class ApprovalInfo(Strict):
    digest: str
    bundle_digest: str
    party: str
    decision: str
    expires: str
    envelope: EnvelopeModel


class RunRequest(Strict):
    bundle_digest: str = Field(pattern=HEX64)


RunStatus = Literal["queued", "running", "succeeded", "refused", "failed"]
RUN_STATUSES: tuple[RunStatus, ...] = ("queued", "running", "succeeded", "refused", "failed")


def run_status(state: str) -> RunStatus:
    """A stored run state as the API reports it. Raises ``ValueError`` for any other text."""
    for status in RUN_STATUSES:
        if status == state:
            return status
    raise ValueError(f"unknown run state {state!r}")


class RunInfo(Strict):
    run_id: str
    room_id: str
    bundle_digest: str
    requested_by: str
    status: RunStatus
    has_receipt: bool
    error_code: str | None
    message: str
    log_index: int | None
    recipients: list[str]
    created_at: str
    started_at: str | None
    finished_at: str | None


class ReceiptInfo(Strict):
    run_id: str
    receipt: EnvelopeModel
    log_index: int
    log_entry: EnvelopeModel
    inclusion_proof: list[str] = Field(description="hex hashes, RFC 9162 audit path")
    checkpoint: EnvelopeModel


class FeedbackRequest(Strict):
    changed_decision: bool
    note: str = Field(default="", max_length=2000)


class FeedbackInfo(Strict):
    run_id: str
    party: str
    changed_decision: bool


class LogEntries(Strict):
    room_id: str
    start: int
    tree_size: int
    entries: list[EnvelopeModel]


class CheckpointInfo(Strict):
    room_id: str
    tree_size: int
    root_hash: str
    envelope: EnvelopeModel | None


class InclusionProof(Strict):
    index: int
    tree_size: int
    leaf_hash: str
    root_hash: str
    proof: list[str]


class ConsistencyProof(Strict):
    first: int
    second: int
    first_root: str
    second_root: str
    proof: list[str]


class Health(Strict):
    status: Literal["ok"]
    database: bool
    worker_provisioned: bool
