"""The trusted state of one job, built in a fixed order (python-tuf's TrustedMetadataSet).

manifest → attestation → bundle → approvals → log → budget → decrypt → run → privacy → seal →
receipt. Each step verifies its input against what the earlier steps established; asking for a
step before the one it depends on is a programming error and raises ``RuntimeError``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from enclave.ledger import RoomLog
from enclave.worker_keys import WorkerKeys
from sdk.errors import AttestationError, InputError, PrivacyError
from sdk.protocol.approvals import ApprovalSet, verify_approvals
from sdk.protocol.dsse import Envelope
from sdk.protocol.models import Attestation, Bundle, Manifest, Measurement, Upload
from sdk.protocol.policy import effective_min_group_size
from sdk.protocol.records import InputRecord, MatchRecord
from sdk.protocol.verify import (
    verify_attestation,
    verify_bundle,
    verify_manifest,
    verify_upload,
)

STEPS = (
    "manifest",
    "attestation",
    "bundle",
    "approvals",
    "log",
    "budget",
    "decrypt",
    "run",
    "privacy",
    "seal",
    "receipt",
)


@dataclass(frozen=True)
class BudgetCheck:
    """Per dataset read: budget, spent so far, this run's cost, and what is left after it."""

    dataset: str
    budget: Decimal
    spent: Decimal
    cost: Decimal
    delta_budget: Decimal
    delta_spent: Decimal
    delta_cost: Decimal

    @property
    def left_after(self) -> Decimal:
        return self.budget - self.spent - self.cost


class TrustedJobState:
    """Holds what has been verified so far; each ``verify_*`` moves one step forward."""

    def __init__(self, *, now: datetime) -> None:
        self.now = now
        self._done: list[str] = []
        self.manifest: Manifest
        self.manifest_digest: str
        self.attestation: Attestation
        self.attestation_digest: str
        self.attested_workers: dict[str, bytes]
        self.bundle: Bundle
        self.known_match: tuple[MatchRecord, ...] | None = None
        self.bundle_digest: str
        self.approvals: ApprovalSet
        self.log: RoomLog
        self.uploads: dict[str, tuple[Upload, str]]
        self.budget: list[BudgetCheck]

    @property
    def done(self) -> tuple[str, ...]:
        return tuple(self._done)

    def _enter(self, step: str) -> None:
        index = STEPS.index(step)
        if len(self._done) != index:
            expected = STEPS[len(self._done)] if len(self._done) < len(STEPS) else "none"
            raise RuntimeError(f"job step {step!r} out of order; next step is {expected!r}")

    def _leave(self, step: str) -> None:
        self._done.append(step)

    def require(self, step: str) -> None:
        """Raise ``RuntimeError`` unless ``step`` has been completed."""
        if step not in self._done:
            raise RuntimeError(f"job step {step!r} has not been completed")

    def verify_manifest(self, envelope: Envelope) -> None:
        self._enter("manifest")
        self.manifest = verify_manifest(envelope, now=self.now)
        self.manifest_digest = envelope.digest()
        self._leave("manifest")

    def verify_attestation(
        self,
        own: Envelope,
        others: Sequence[Envelope],
        keys: WorkerKeys,
        measurement: Measurement,
    ) -> None:
        """This worker's attestation must be accepted and bind exactly its keys and measurement;
        the other attestations of the room are accepted ones whose keys may sign log entries."""
        self._enter("attestation")
        attestation = verify_attestation(own, self.manifest)
        if (
            attestation.worker_signing_key != keys.signer.public_key
            or attestation.worker_encryption_key != keys.encryption_public
        ):
            raise AttestationError("attestation: does not bind this worker's keys")
        if attestation.measurement != measurement:
            raise AttestationError("attestation: measurement differs from this worker's")
        self.attestation = attestation
        self.attestation_digest = own.digest()
        workers = {own.digest(): attestation.worker_signing_key}
        for envelope in others:
            try:
                other = verify_attestation(envelope, self.manifest)
            except AttestationError:
                continue  # an attestation the manifest no longer accepts signs nothing new
            workers[envelope.digest()] = other.worker_signing_key
        self.attested_workers = workers
        self._leave("attestation")

    def verify_bundle(self, envelope: Envelope) -> None:
        self._enter("bundle")
        self.bundle = verify_bundle(envelope, self.manifest, self.manifest_digest, now=self.now)
        self.bundle_digest = envelope.digest()
        self._leave("bundle")

    def verify_approvals(self, envelopes: Sequence[Envelope]) -> None:
        self._enter("approvals")
        self.approvals = verify_approvals(
            envelopes, self.manifest, self.manifest_digest, self.bundle_digest, now=self.now,
            bundle=self.bundle,
        )
        self._leave("approvals")

    def verify_log(self, entries: Sequence[Envelope], checkpoint: Envelope | None) -> None:
        self._enter("log")
        self.log = RoomLog.verify(self.manifest.room_id, entries, checkpoint, self.attested_workers)
        if self.log.runs_of(self.bundle_digest) >= self.bundle.max_runs:
            raise PrivacyError("bundle: its maximum number of runs is reached")
        self._leave("log")

    def check_budget_and_inputs(
        self, uploads: Sequence[Envelope], epsilon: Decimal, delta: Decimal
    ) -> None:
        """Pick the upload of every input, verify it, and check every dataset's budget covers
        this run's cost. Raises before anything is decrypted."""
        self._enter("budget")
        candidates: dict[str, list[tuple[Upload, str]]] = {}
        for envelope in uploads:
            upload = verify_upload(envelope, self.manifest, self.manifest_digest)
            if upload.attestation_digest not in self.attested_workers:
                raise InputError(f"upload: {upload.dataset!r} was sealed to an unknown worker")
            candidates.setdefault(upload.dataset, []).append((upload, envelope.digest()))
        chosen: dict[str, tuple[Upload, str]] = {}
        for item in self.bundle.inputs:
            options = candidates.get(item.dataset, [])
            if item.upload is not None:  # pinned: exactly the statement every approval bound
                options = [o for o in options
                           if o[1] == item.upload and o[0].version == item.version]
            if not options:
                raise InputError(f"upload: no upload of {item.dataset!r} for this bundle")
            chosen[item.dataset] = max(options, key=lambda o: o[0].version)
        checks = []
        for name in self.bundle.datasets:
            dataset = self.manifest.dataset(name)
            spent, delta_spent = self.log.spent(name)
            check = BudgetCheck(
                dataset=name,
                budget=Decimal(dataset.epsilon_budget),
                spent=spent,
                cost=epsilon,
                delta_budget=Decimal(dataset.delta_budget),
                delta_spent=delta_spent,
                delta_cost=delta,
            )
            if check.left_after < 0 or delta_spent + delta > check.delta_budget:
                raise PrivacyError(f"budget: {name!r} cannot cover this run")
            checks.append(check)
        self.uploads = chosen
        self.budget = checks
        known = self.log.measured_match([chosen[item.dataset][1] for item in self.bundle.inputs])
        if known is not None and set(known) == set(self.bundle.datasets):
            self.known_match = tuple(known[name] for name in self.bundle.datasets)
        self._leave("budget")

    def one_row_inputs(self) -> tuple[frozenset[str], list[str]]:
        """(after the ``budget`` step) The inputs whose upload statements say one row per
        person, and those of them no earlier run has checked (bundle order): the run checks
        these before its plan."""
        declared = [item.dataset for item in self.bundle.inputs
                    if self.uploads[item.dataset][0].one_row_per_person]
        checked = self.log.checked_one_row() if declared else set()
        return frozenset(declared), [d for d in declared if self.uploads[d][1] not in checked]

    def input_records(self) -> tuple[InputRecord, ...]:
        """What the receipt says each input read (bundle order): the upload statement, its
        version and signed row count (after the ``budget`` step)."""
        return tuple(
            InputRecord(item.dataset, self.uploads[item.dataset][0].version,
                        self.uploads[item.dataset][0].row_count, self.uploads[item.dataset][1],
                        item.follow_latest)
            for item in self.bundle.inputs
        )

    def mark(self, step: str) -> None:
        """Record that an untyped step (decrypt, run, privacy, seal, receipt) completed."""
        self._enter(step)
        self._leave(step)

    def min_group_size(self) -> int:
        """The strictest minimum group size of the datasets read, the room and the bundle
        (:func:`sdk.protocol.policy.effective_min_group_size`, the number review shows)."""
        self.require("bundle")
        return effective_min_group_size(self.manifest, self.bundle)

    def row_counts(self) -> dict[str, int]:
        """Rows each chosen input's owner signed (checked against the decrypted file)."""
        self.require("budget")
        return {name: upload.row_count for name, (upload, _digest) in self.uploads.items()}

    def budget_left(self) -> Mapping[str, str]:
        self.require("budget")
        return {c.dataset: str(c.left_after) for c in self.budget}
