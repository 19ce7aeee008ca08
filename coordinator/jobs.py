"""Building a job directory (docs/job-protocol.md) and checking the worker's result document.

The coordinator relays; the worker verifies. Still, nothing the worker returns is stored
before it is checked here: the receipt, checkpoint and entries must be signed by the worker
the job was given, name this run, and the new checkpoint must extend the log head the job was
built on (RFC 9162 consistency). Anything else fails the run without touching the log.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordinator.bundles import approvals_of, get_bundle, job_approvals
from coordinator.context import Services
from coordinator.logstore import LogHead, head
from coordinator.rooms import RoomView, active_room, envelope_of
from coordinator.storage.models import RunRow, UploadRow, Worker
from sdk.errors import (
    AttestationError,
    ConfigError,
    ConflictError,
    InputError,
    LogError,
    SealroomError,
    SignatureError,
)
from sdk.protocol import merkle
from sdk.protocol.fields import expect_mapping
from sdk.protocol.canonical import canonical_json, parse_json
from sdk.protocol.dsse import Envelope, open_envelope
from sdk.protocol.models import Bundle
from sdk.protocol.records import RUN_STATUSES, LogEntry, Receipt, log_origin
from sdk.protocol.verify import (
    log_leaf_hashes,
    receipt_core_digest,
    verify_attestation,
    verify_checkpoint,
    verify_log_entries,
)

RESULT_KEYS = {"status", "error_code", "receipt", "checkpoint", "log_entries", "outputs"}


class ResultError(SealroomError):
    """The worker's result document cannot be accepted (the run fails with ``code``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code  # type: ignore[misc]


@dataclass
class JobInputs:
    """Everything one job is built from."""

    run_id: str
    room: RoomView
    worker: Worker
    attestations: list[Envelope]
    bundle: Envelope
    approvals: list[Envelope]
    uploads: list[UploadRow]
    log: LogHead

    @property
    def worker_key(self) -> bytes:
        payload = parse_json(self.attestations[0].payload)
        assert isinstance(payload, dict)
        return bytes.fromhex(str(payload["worker_signing_key"]))


def current_worker(services: Services) -> Worker:
    """The current provisioned worker. Raises ``ConflictError`` when none is provisioned."""
    from sqlalchemy import select

    with services.db.read() as s:
        worker = s.scalars(select(Worker).where(Worker.current.is_(True))).first()
    if worker is None:
        raise ConflictError("no worker is provisioned yet (operator: provision one)")
    return worker


def room_attestations(services: Services, room: RoomView, first: Worker) -> list[Envelope]:
    """``first``'s attestation, then every other stored one the room's manifest accepts.

    Raises ``AttestationError`` when ``first`` is not accepted by the manifest.
    """
    from sqlalchemy import select

    head_env = Envelope.from_json(first.attestation.encode())
    verify_attestation(head_env, room.manifest)
    out = [head_env]
    with services.db.read() as s:
        others = list(s.scalars(select(Worker).where(
            Worker.attestation_digest != first.attestation_digest).order_by(Worker.created_at)))
    for worker in others:
        env = Envelope.from_json(worker.attestation.encode())
        try:
            verify_attestation(env, room.manifest)
        except AttestationError:
            continue
        out.append(env)
    return out


def select_uploads(services: Services, room_id: str, bundle: Bundle) -> list[UploadRow]:
    """The complete upload each input reads (pinned version, or the latest).

    Raises ``ConflictError`` when an input has no complete upload.
    """
    from sqlalchemy import select

    chosen = []
    with services.db.read() as s:
        for item in bundle.inputs:
            query = select(UploadRow).where(
                UploadRow.room_id == room_id, UploadRow.dataset == item.dataset,
                UploadRow.complete.is_(True))
            if item.version is not None:
                query = query.where(UploadRow.version == item.version)
            row = s.scalars(query.order_by(UploadRow.version.desc()).limit(1)).first()
            if row is None:
                raise ConflictError(f"no complete upload of dataset {item.dataset!r} yet")
            chosen.append(row)
    return chosen


def gather(services: Services, run: RunRow) -> JobInputs:
    """Collect a run's job inputs from storage. Raises domain errors (the run fails)."""
    room = active_room(services, run.room_id)
    worker = current_worker(services)
    if services.launcher.isolation == "container":
        from coordinator.worker import worker_image_id

        if worker_image_id(services.launcher) != worker.image_id:
            raise ConfigError("the worker image changed since provisioning: provision again")
    attestations = room_attestations(services, room, worker)
    bundle_row = get_bundle(services, run.room_id, run.bundle_digest)
    bundle_env = envelope_of(bundle_row.envelope)
    payload, _ = open_envelope(bundle_env, Bundle.KIND, room.manifest.signing_keys())
    bundle = Bundle.from_dict(payload)
    approvals = job_approvals(approvals_of(services, run.room_id, run.bundle_digest))
    uploads = select_uploads(services, run.room_id, bundle)
    with services.db.read() as s:
        log = head(s, run.room_id)
    return JobInputs(run.run_id, room, worker, attestations, bundle_env, approvals, uploads, log)


def _write(path: Path, value: object) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.fchmod(fd, 0o644)  # whatever the umask
    with os.fdopen(fd, "wb") as handle:
        handle.write(canonical_json(value))


def write_job_dir(services: Services, inputs: JobInputs, job: Path) -> None:
    """Lay out the job directory exactly as docs/job-protocol.md says (no secrets: the launcher
    writes those after its isolation check). Files 0644, directories 0755 (readable by the
    worker's uid); ciphertexts are hard links to the blob store."""
    job.mkdir(mode=0o755, parents=True)
    for sub in (job, job / "data", job / "log"):
        sub.mkdir(mode=0o755, exist_ok=True)
        os.chmod(sub, 0o755)  # noqa: S103 - the worker uid (65534) must read the job
    _write(job / "job.json", {"run_id": inputs.run_id, "room_id": inputs.room.room_id})
    _write(job / "manifest.json", inputs.room.envelope.to_dict())
    _write(job / "attestations.json", [a.to_dict() for a in inputs.attestations])
    _write(job / "bundle.json", inputs.bundle.to_dict())
    _write(job / "approvals.json", [a.to_dict() for a in inputs.approvals])
    _write(job / "uploads.json", [envelope_of(u.envelope).to_dict() for u in inputs.uploads])
    for upload in inputs.uploads:
        target = job / "data" / f"{upload.ciphertext_digest}.sealed"
        if not target.exists():
            services.blobs.link_into(upload.ciphertext_digest, target)
    _write(job / "log" / "entries.json", [e.to_dict() for e in inputs.log.entries])
    _write(job / "log" / "checkpoint.json",
           None if inputs.log.checkpoint is None else inputs.log.checkpoint.to_dict())


@dataclass
class Outcome:
    """A checked result: the terminal state and what to store."""

    status: str
    error_code: str | None
    message: str = ""
    receipt: Envelope | None = None
    parsed_receipt: Receipt | None = None
    checkpoint: Envelope | None = None
    tree_size: int = 0
    root_hash: str = ""
    entries: list[Envelope] = field(default_factory=list)
    parsed_entries: list[LogEntry] = field(default_factory=list)
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
    room_id = inputs.room.room_id
    worker = {inputs.worker.attestation_digest: inputs.worker_key}
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
            or receipt.bundle_digest != inputs.bundle.digest() or receipt.status != status
            or receipt.error_code != code
            or receipt.attestation_digest != inputs.worker.attestation_digest
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
    return Outcome(status, code, message if isinstance(message, str) else "", receipt_env,
                   receipt, checkpoint_env, checkpoint.tree_size, checkpoint.root_hash,
                   entries, parsed, outputs)


def _check_extends(log: LogHead, entries: list[Envelope], tree_size: int, root_hash: str) -> None:
    """The new checkpoint must be the old head plus exactly these entries (consistency)."""
    old_size = log.size
    leaves = [*log.leaves, *log_leaf_hashes(entries)]
    if tree_size != len(leaves) or merkle.root(leaves).hex() != root_hash:
        raise ResultError("E_LOG", "result: the new checkpoint does not extend the log head")
    try:
        merkle.verify_consistency(old_size, tree_size, merkle.root(log.leaves),
                                  bytes.fromhex(root_hash),
                                  merkle.consistency_proof(leaves, old_size))
    except LogError as exc:
        raise ResultError("E_LOG", f"result: {exc.message}") from exc


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
