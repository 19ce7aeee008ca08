"""Verifiers: the checks every relying party (worker, SDK, auditor) runs, in a fixed order.

Each verifier takes envelopes as they arrived, verifies the signatures against keys it already
trusts, checks the payload type, parses exactly the verified bytes and then checks the bindings
(room, manifest digest, bundle digest, expiry). Each raises a typed ``SealroomError``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sdk.errors import AttestationError, InputError, LogError, SignatureError
from sdk.protocol import merkle
from sdk.protocol.admission import admit_bundle
from sdk.protocol.attestation import EvidencePolicy, key_binding, verify_evidence
from sdk.protocol.canonical import canonical_json, parse_json
from sdk.protocol.clock import parse_time
from sdk.protocol.dsse import Envelope, open_envelope, payload_type
from sdk.protocol.models import Attestation, Bundle, Manifest, Upload
from sdk.protocol.records import Checkpoint, LogEntry, Receipt

MAX_MANIFEST_BYTES = 1024 * 1024


def digest_bytes(data: bytes) -> str:
    """Hex SHA-256."""
    return hashlib.sha256(data).hexdigest()


def verify_manifest(
    envelope: Envelope, *, now: datetime, expected_digest: str | None = None
) -> Manifest:
    """Verify a room manifest: every party it lists must have signed it.

    The manifest is its own trust root; a party should also pin the digest it signed
    (``expected_digest``). The payload is parsed to learn the parties, and only accepted when
    every one of their keys verifies over exactly those bytes.

    Raises:
        InputError: wrong type, malformed, expired, or not the expected digest.
        SignatureError: a party has not signed (the message names who).
    """
    if envelope.payload_type != payload_type(Manifest.KIND):
        raise InputError("manifest: wrong payload type")
    if expected_digest is not None and envelope.digest() != expected_digest:
        raise InputError("manifest: digest differs from the one pinned")
    manifest = Manifest.from_dict(parse_json(envelope.payload, max_bytes=MAX_MANIFEST_BYTES))
    keys = manifest.signing_keys()
    payload, _ = open_envelope(envelope, Manifest.KIND, keys, threshold=len(keys))
    manifest = Manifest.from_dict(payload)
    if parse_time(manifest.expires, "manifest.expires") <= now:
        raise InputError("manifest: expired")
    return manifest


def verify_attestation(
    envelope: Envelope, manifest: Manifest, *, at: datetime | None = None
) -> Attestation:
    """Verify a worker attestation against the manifest's accepted providers and measurements.

    ``simulated``: the statement must be signed by a platform key the manifest pins.

    Hardware providers (``aws-nitro``, ``amd-sev-snp``, ``intel-tdx``): the statement names
    the worker's keys, so, as with a manifest, its capped payload is parsed to learn them; it is
    accepted only when (in order) the manifest accepts the provider; the envelope is signed by
    the worker signing key it names (the worker holds it); the evidence verifies with
    :func:`sdk.protocol.attestation.verify_evidence` at ``at`` (default: the statement's
    ``issued_at``, so an auditor can check old evidence whose certificates have since
    expired) against the manifest's pinned registers, with the key binding of exactly these
    two keys as report data; and evidence that carries its own time (Nitro) was produced
    within :data:`MAX_EVIDENCE_SKEW` of ``issued_at``.

    Then, for every provider: the measurement is one the manifest accepts, and an unisolated
    worker only where the manifest allows it.

    Raises:
        AttestationError: any failed check; for evidence, ``error.step`` names the step.
    """
    claimed = _claimed_attestation(envelope)
    if claimed.provider not in manifest.workers.providers:
        raise AttestationError(f"attestation: provider {claimed.provider!r} not accepted")
    if claimed.is_hardware:
        attestation = _verify_hardware(envelope, claimed, manifest, at)
    else:
        attestation = _verify_simulated(envelope, manifest)
    if attestation.measurement not in manifest.workers.measurements:
        raise AttestationError("attestation: measurement not accepted by the manifest")
    if attestation.isolation == "none" and not manifest.workers.allow_unisolated:
        raise AttestationError("attestation: unisolated worker not accepted by the manifest")
    return attestation


MAX_ATTESTATION_BYTES = 2 * 1024 * 1024
MAX_EVIDENCE_SKEW = timedelta(minutes=10)


def _claimed_attestation(envelope: Envelope) -> Attestation:
    """The statement as it claims to be, not yet verified: parsed (capped) only to learn its
    provider and, for hardware, the key that must have signed it."""
    if envelope.payload_type != payload_type(Attestation.KIND):
        raise AttestationError("attestation: wrong payload type", step="parse")
    try:
        return Attestation.from_dict(parse_json(envelope.payload, max_bytes=MAX_ATTESTATION_BYTES))
    except InputError as exc:
        raise AttestationError(
            f"attestation: malformed ({exc.message[:80]})", step="parse"
        ) from exc


def _verify_simulated(envelope: Envelope, manifest: Manifest) -> Attestation:
    trusted = {f"platform-{i}": k for i, k in enumerate(manifest.workers.platform_keys)}
    if not trusted:
        raise AttestationError("attestation: the manifest accepts no platform key")
    try:
        payload, _ = open_envelope(envelope, Attestation.KIND, trusted, threshold=1)
    except SignatureError as exc:
        raise AttestationError("attestation: not signed by an accepted platform key") from exc
    attestation = Attestation.from_dict(payload)
    if attestation.provider != "simulated":
        raise AttestationError("attestation: a platform key vouches only for simulated workers")
    return attestation


def _verify_hardware(
    envelope: Envelope, claimed: Attestation, manifest: Manifest, at: datetime | None
) -> Attestation:
    policy = manifest.workers.hardware_policy(claimed.provider)
    return verify_hardware_statement(envelope, registers=dict(policy.registers), at=at)


def verify_hardware_statement(
    envelope: Envelope,
    *,
    registers: Mapping[str, tuple[str, ...]],
    at: datetime | None = None,
) -> Attestation:
    """Verify a hardware provider's attestation statement on its own (no manifest): signed by
    the worker key it names, its evidence verified at ``at`` (default: its ``issued_at``) with
    the key binding of its two keys as report data and ``registers`` pinned, and evidence that
    carries a time within :data:`MAX_EVIDENCE_SKEW` of ``issued_at``. The operator's
    provisioning calls it with no registers (the parties' manifest pins them later).

    Raises:
        AttestationError: a simulated or malformed statement, a signature by another key, or
            any failed step of the evidence (``error.step``).
    """
    claimed = _claimed_attestation(envelope)
    if not claimed.is_hardware:
        raise AttestationError("attestation: not a hardware provider's statement", step="parse")
    try:
        payload, _ = open_envelope(
            envelope,
            Attestation.KIND,
            {"worker": claimed.worker_signing_key},
            threshold=1,
            max_payload_bytes=MAX_ATTESTATION_BYTES,
        )
    except SignatureError as exc:
        raise AttestationError(
            "attestation: not signed by the worker key it names", step="signature"
        ) from exc
    attestation = Attestation.from_dict(payload)
    if attestation != claimed:
        raise AttestationError("attestation: the signed statement differs", step="parse")
    issued = parse_time(attestation.issued_at, "attestation.issued_at")
    binding = key_binding(attestation.worker_signing_key, attestation.worker_encryption_key)
    claims = verify_evidence(
        attestation.provider,
        attestation.evidence,
        policy=EvidencePolicy(measurements=registers, report_data=binding),
        now=at or issued,
        collateral=dict(attestation.collateral),
    )
    if claims.issued_at is not None and abs(claims.issued_at - issued) > MAX_EVIDENCE_SKEW:
        raise AttestationError(
            "attestation: the evidence's time is far from the statement's", step="expiry"
        )
    return attestation


def verify_upload(envelope: Envelope, manifest: Manifest, manifest_digest: str) -> Upload:
    """Verify an upload statement: signed by the dataset's owner, bound to this room.

    Raises:
        SignatureError: not signed by the owner of the dataset it names.
        InputError: another room or manifest, unknown dataset, schema mismatch.
    """
    payload, result = open_envelope(envelope, Upload.KIND, manifest.signing_keys(), threshold=1)
    upload = Upload.from_dict(payload)
    if upload.room_id != manifest.room_id or upload.manifest_digest != manifest_digest:
        raise InputError("upload: bound to another room or manifest")
    dataset = manifest.dataset(upload.dataset)
    if dataset.owner not in result.signed:
        raise SignatureError(f"upload: not signed by the owner of {upload.dataset!r}")
    if upload.schema_digest != dataset.schema_digest():
        raise InputError(f"upload: schema of {upload.dataset!r} differs from the manifest")
    return upload


def verify_bundle(
    envelope: Envelope, manifest: Manifest, manifest_digest: str, *, now: datetime
) -> Bundle:
    """Verify a query bundle: signed by its author (a party), bound to this room, in time,
    and admitted by the room's column policies (:func:`sdk.protocol.admission.admit_bundle`).

    Raises:
        SignatureError: not signed by the party it names as author.
        InputError: another room/manifest, unknown datasets or recipients, outside its window,
            a template bundle its template does not generate.
        QueryRejectedError: a plan outside the column roles, or custom code over a dataset
            whose owner did not allow it.
    """
    payload, result = open_envelope(envelope, Bundle.KIND, manifest.signing_keys(), threshold=1)
    bundle = Bundle.from_dict(payload)
    if bundle.author not in result.signed:
        raise SignatureError("bundle: not signed by its author")
    if bundle.room_id != manifest.room_id or bundle.manifest_digest != manifest_digest:
        raise InputError("bundle: bound to another room or manifest")
    for name in bundle.datasets:
        manifest.dataset(name)
    for recipient in bundle.recipients:
        manifest.party(recipient)
    if (
        not parse_time(bundle.not_before, "bundle.not_before")
        <= now
        < parse_time(bundle.expires, "bundle.expires")
    ):
        raise InputError("bundle: outside its validity window")
    if (bundle.kind == "template") != (bundle.template is not None):
        raise InputError("bundle: template kind and template name go together")
    admit_bundle(manifest, bundle)
    return bundle


def worker_keys(attestations: Sequence[Attestation]) -> dict[str, bytes]:
    """The trusted set of worker signing keys from verified attestations."""
    return {f"worker-{i}": a.worker_signing_key for i, a in enumerate(attestations)}


def verify_checkpoint(
    envelope: Envelope, trusted_workers: Mapping[str, bytes], origin: str
) -> Checkpoint:
    """Verify a worker-signed checkpoint of the log named ``origin``. Raises ``LogError``."""
    try:
        payload, _ = open_envelope(envelope, Checkpoint.KIND, trusted_workers, threshold=1)
    except SignatureError as exc:
        raise LogError("checkpoint: not signed by an attested worker") from exc
    checkpoint = Checkpoint.from_dict(payload)
    if checkpoint.origin != origin:
        raise LogError("checkpoint: of another log")
    return checkpoint


def verify_log_entries(
    entries: Sequence[Envelope], trusted_workers: Mapping[str, bytes], room_id: str
) -> list[LogEntry]:
    """Verify every log entry's signature and room. Raises ``LogError``."""
    parsed = []
    for i, envelope in enumerate(entries):
        try:  # one signature check per entry (open_envelope verifies before parsing)
            payload, _ = open_envelope(envelope, LogEntry.KIND, trusted_workers, threshold=1)
        except SignatureError as exc:
            raise LogError(f"log: entry {i} is not signed by an attested worker") from exc
        entry = LogEntry.from_dict(payload)
        if entry.room_id != room_id:
            raise LogError(f"log: entry {i} belongs to another room")
        parsed.append(entry)
    return parsed


def log_leaf_hashes(entries: Sequence[Envelope]) -> list[bytes]:
    """Leaf hashes of log entries: a leaf is the canonical JSON of the entry's envelope."""
    return [merkle.leaf_hash(e.to_json()) for e in entries]


def verify_log_against_checkpoint(entries: Sequence[Envelope], checkpoint: Checkpoint) -> None:
    """The entries must be exactly the tree the checkpoint signs. Raises ``LogError``."""
    if len(entries) != checkpoint.tree_size:
        raise LogError("log: number of entries differs from the checkpoint")
    if merkle.root(log_leaf_hashes(entries)).hex() != checkpoint.root_hash:
        raise LogError("log: entries do not match the checkpoint root")


@dataclass(frozen=True)
class VerifiedReceipt:
    """A receipt whose signature, worker binding, outputs and log inclusion were checked."""

    receipt: Receipt
    attestation: Attestation
    log_entry: LogEntry


def verify_receipt(
    envelope: Envelope,
    manifest: Manifest,
    attestation_envelopes: Sequence[Envelope],
    *,
    log_entry: Envelope,
    inclusion: Sequence[bytes],
    outputs: Mapping[str, bytes] | None = None,
    bundle_digest: str | None = None,
    manifest_digest: str | None = None,
) -> VerifiedReceipt:
    """Verify a receipt offline, with nothing but the manifest and published statements.

    Checks, in order: the receipt is signed by a worker key that an accepted attestation binds
    to an accepted measurement (the attestation it names); it belongs to this room and
    manifest (and bundle, when given); each output given (recipient → sealed bytes) matches
    its ciphertext digest; its log entry is signed by the same worker, names this run, and is
    included at ``log_index`` in the tree its checkpoint signs.

    Raises:
        AttestationError, SignatureError, InputError, LogError.
    """
    by_digest = {e.digest(): e for e in attestation_envelopes}
    attestations = {d: verify_attestation(e, manifest) for d, e in by_digest.items()}
    trusted = {d: a.worker_signing_key for d, a in attestations.items()}
    try:
        payload, result = open_envelope(envelope, Receipt.KIND, trusted, threshold=1)
    except SignatureError as exc:
        raise AttestationError("receipt: not signed by an attested worker") from exc
    receipt = Receipt.from_dict(payload)
    # compare keys, not names: two accepted attestations of one worker key (a re-attestation)
    # share a key, and only one of their names is credited with its signature
    attestation = attestations.get(receipt.attestation_digest)
    signed_keys = {trusted[name] for name in result.signed}
    if attestation is None or attestation.worker_signing_key not in signed_keys:
        raise AttestationError("receipt: signed by a worker other than the one it names")
    if manifest_digest is None:
        manifest_digest = hashlib.sha256(manifest_payload_bytes(manifest)).hexdigest()
    if receipt.room_id != manifest.room_id:
        raise InputError("receipt: of another room")
    if receipt.manifest_digest != manifest_digest:
        raise InputError("receipt: of another manifest")
    if bundle_digest is not None and receipt.bundle_digest != bundle_digest:
        raise InputError("receipt: of another bundle")
    if receipt.attestation != attestation.provider or receipt.isolation != attestation.isolation:
        raise AttestationError("receipt: attestation labels differ from the attestation")
    if outputs:
        declared = {o.recipient: o for o in receipt.outputs}
        for recipient, data in outputs.items():
            record = declared.get(recipient)
            if record is None or digest_bytes(data) != record.ciphertext_digest:
                raise InputError(f"receipt: output for {recipient} does not match its digest")
    worker = {receipt.attestation_digest: attestation.worker_signing_key}
    entry = verify_log_entries([log_entry], worker, manifest.room_id)[0]
    if entry.run_id != receipt.run_id or entry.kind not in ("run_finished", "run_refused"):
        raise LogError("receipt: the log entry is not this run's result")
    if entry.details.get("receipt_core") != receipt_core_digest(receipt):
        raise LogError("receipt: the log entry records a different result")
    cp = receipt.checkpoint
    merkle.verify_inclusion(
        merkle.leaf_hash(log_entry.to_json()),
        receipt.log_index,
        cp.tree_size,
        inclusion,
        bytes.fromhex(cp.root_hash),
    )
    return VerifiedReceipt(receipt, attestation, entry)


def manifest_payload_bytes(manifest: Manifest) -> bytes:
    """The canonical payload bytes of a manifest (what its digest is computed over)."""
    return canonical_json(manifest.to_dict())


def receipt_core_digest(receipt: Receipt) -> str:
    """Digest of a receipt's result fields, recorded in its log entry before the receipt
    (which names the entry's index and checkpoint) can be signed."""
    core = receipt.to_dict()
    for key in ("log_index", "checkpoint", "timings_ms"):
        core.pop(key)
    return digest_bytes(canonical_json(core))
