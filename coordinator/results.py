"""Checking the worker's result document before anything of it is stored.

The coordinator relays; the worker verifies. Still, nothing the worker returns is stored
before it is checked here: the receipt, checkpoint and entries must be signed by the worker
the job was given and name this run, and the new checkpoint must be the tree of the log head
the job was built on plus exactly the returned entries (so it extends that head). Anything else
fails the run without touching the log.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from coordinator.jobs import JobInputs
from coordinator.logstore import LogHead
from sdk.errors import InputError, LogError, SealroomError, SignatureError
from sdk.protocol import merkle
from sdk.protocol.canonical import parse_json
from sdk.protocol.dsse import Envelope, open_envelope
from sdk.protocol.fields import expect_mapping
from sdk.protocol.records import RUN_STATUSES, LogEntry, Receipt, log_origin
from sdk.protocol.verify import (
    log_leaf_hashes,
    receipt_core_digest,
    verify_checkpoint,
    verify_log_entries,
)

RESULT_KEYS = {"status", "error_code", "receipt", "checkpoint", "log_entries", "outputs"}


class ResultError(SealroomError):
    """The worker's result document cannot be accepted (the run fails with ``error_code``)."""

    def __init__(self, error_code: str, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code


@dataclass(frozen=True)
class SignedResult:
    """The worker-signed part of a checked result: its receipt and the log entries and
    checkpoint that extend the head."""

    receipt: Envelope
    parsed_receipt: Receipt
    checkpoint: Envelope
    tree_size: int
    root_hash: str
    entries: list[Envelope]
    parsed_entries: list[LogEntry]


@dataclass(frozen=True)
class Outcome:
    """A checked result: the terminal state and what to store (``signed`` is None for a
    failure no worker signed)."""

    status: str
    error_code: str | None
    message: str = ""
    signed: SignedResult | None = None
    outputs: dict[str, bytes] = field(default_factory=dict)


def _envelope(value: object, what: str) -> Envelope:
    try:
        return Envelope.from_dict(value)
    except InputError as exc:
        raise ResultError("E_INTERNAL", f"result: malformed {what}") from exc


def check_result(stdout: bytes, inputs: JobInputs, max_bytes: int) -> Outcome:
    """Parse and check the worker's result document strictly.

    Raises ``ResultError`` (E_INTERNAL malformed, E_LOG not extending the head or not the
    worker's, E_ATTESTATION signed by another key).
    """
    try:
        doc = expect_mapping(parse_json(stdout, max_bytes=max_bytes), "result")
    except InputError as exc:
        raise ResultError("E_INTERNAL", "the worker's output is not a result document") from exc
    if set(doc) != RESULT_KEYS or doc["status"] not in RUN_STATUSES:
        raise ResultError("E_INTERNAL", "result: unexpected fields or status")
    status, code = str(doc["status"]), doc["error_code"]
    if code is not None and (not isinstance(code, str) or not code.startswith("E_")
                             or len(code) > 32):
        raise ResultError("E_INTERNAL", "result: malformed error code")
    if doc["receipt"] is None:
        if status != "failed" or code is None or doc["checkpoint"] is not None \
                or doc["log_entries"] != [] or doc["outputs"] != {}:
            raise ResultError("E_INTERNAL", "result: no receipt but not a bare failure")
        return Outcome("failed", code, "the worker failed before it could sign a receipt")
    return _check_signed(doc, status, code, inputs)


def _check_signed(doc: Mapping[str, Any], status: str, code: str | None,
                  inputs: JobInputs) -> Outcome:
    sources = inputs.sources
    room_id = sources.room.room_id
    worker = {sources.worker.attestation_digest: sources.worker_key}
    receipt_env = _envelope(doc["receipt"], "receipt")
    checkpoint_env = _envelope(doc["checkpoint"], "checkpoint")
    raw_entries = doc["log_entries"]
    if not isinstance(raw_entries, list) or not raw_entries:
        raise ResultError("E_INTERNAL", "result: no log entries")
    entries = [_envelope(e, "log entry") for e in raw_entries]
    try:
        payload, _ = open_envelope(receipt_env, Receipt.KIND, worker)
        receipt = Receipt.from_dict(payload)
        checkpoint = verify_checkpoint(checkpoint_env, worker, log_origin(room_id))
        parsed = verify_log_entries(entries, worker, room_id)
    except SignatureError as exc:
        raise ResultError("E_ATTESTATION", "result: not signed by the job's worker") from exc
    except (InputError, LogError) as exc:
        raise ResultError("E_LOG", f"result: {exc.message}") from exc
    if (receipt.run_id != inputs.run_id or receipt.room_id != room_id
            or receipt.bundle_digest != sources.bundle_envelope.digest()
            or receipt.status != status or receipt.error_code != code
            or receipt.attestation_digest != sources.worker.attestation_digest
            or any(e.run_id != inputs.run_id for e in parsed)):
        raise ResultError("E_INTERNAL", "result: receipt or entries of another run")
    _check_extends(inputs.log, entries, checkpoint.tree_size, checkpoint.root_hash)
    last = parsed[-1]
    if (receipt.checkpoint != checkpoint or receipt.log_index != checkpoint.tree_size - 1
            or last.kind not in ("run_finished", "run_refused")
            or last.details.get("receipt_core") != receipt_core_digest(receipt)):
        raise ResultError("E_LOG", "result: receipt is not bound to its log entry")
    outputs = _outputs(doc["outputs"], receipt)
    message = receipt.details.get("message", "")
    signed = SignedResult(receipt_env, receipt, checkpoint_env, checkpoint.tree_size,
                          checkpoint.root_hash, entries, parsed)
    return Outcome(status, code, message if isinstance(message, str) else "", signed, outputs)


def _check_extends(log: LogHead, entries: list[Envelope], tree_size: int, root_hash: str) -> None:
    """The new checkpoint must be the tree of the old head's leaves plus exactly these entries.

    Recomputing the new root from the head's stored leaves and the returned entries settles
    it; an RFC 9162 consistency proof built from those same leaves could not fail, so none is
    checked. Raises ``ResultError`` (E_LOG) otherwise.
    """
    leaves = [*log.leaves, *log_leaf_hashes(entries)]
    if tree_size != len(leaves) or merkle.root(leaves).hex() != root_hash:
        raise ResultError("E_LOG", "result: the new checkpoint does not extend the log head")


def _outputs(raw: object, receipt: Receipt) -> dict[str, bytes]:
    if not isinstance(raw, dict):
        raise ResultError("E_INTERNAL", "result: outputs must be an object")
    declared = {o.recipient: o.ciphertext_digest for o in receipt.outputs}
    if set(raw) != set(declared):
        raise ResultError("E_INTERNAL", "result: outputs differ from the receipt's")
    out: dict[str, bytes] = {}
    for recipient, text in raw.items():
        try:
            data = base64.b64decode(str(text).encode("ascii"), validate=True)
        except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
            raise ResultError("E_INTERNAL", "result: output is not base64") from exc
        if hashlib.sha256(data).hexdigest() != declared[recipient]:
            raise ResultError("E_INTERNAL", "result: output does not match its receipt digest")
        out[recipient] = data
    return out
