"""A fake worker launcher for coordinator tests.

It speaks the job protocol (reads the job directory the coordinator wrote, gets its secrets
through the launcher helpers) and answers with result documents built with the protocol core
and a test worker key. Its budget check mirrors the real worker's: spent = sum of the
``budget_charged`` entries of the log it is given.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

from coordinator.launchers.base import (
    DEFAULT_DEADLINE_S,
    Isolation,
    Launcher,
    LaunchResult,
    prepare_job_dir,
    remove_secrets,
    write_secrets,
)
from coordinator.launchers.errors import HardeningError
from sdk.protocol import merkle
from sdk.protocol.admission import guarantee_of
from sdk.protocol.canonical import canonical_json
from sdk.protocol.clock import now
from sdk.protocol.dsse import Envelope, sign_envelope
from sdk.protocol.keys import PartyKey, Signer
from sdk.protocol.models import Attestation, Bundle, Manifest, Measurement
from sdk.protocol.records import (
    Checkpoint,
    InputRecord,
    LogEntry,
    OutputRecord,
    PrivacyRecord,
    Receipt,
)
from sdk.protocol.verify import log_leaf_hashes, receipt_core_digest

CODE_DIGEST = "c0de" * 16
MEASUREMENT = Measurement("unisolated", CODE_DIGEST)
SEALED_KEY = b"fake-sealed-worker-key-" + bytes(16)


def seed(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def _payload(envelope: Envelope) -> dict[str, Any]:
    return json.loads(envelope.payload)


class FakeLauncher(Launcher):
    """``mode``: ok | hang | timeout | oom | refuse | garbage | exit | fork | bare_failure."""

    isolation: ClassVar[Isolation] = "none"

    def __init__(self, mode: str = "ok", worker_label: str = "worker") -> None:
        self.mode = mode
        self.worker = Signer.from_seed(seed(worker_label))
        self.calls: list[list[str]] = []
        self.release = threading.Event()
        self.started = threading.Event()
        self.job_snapshots: list[dict[str, Any]] = []

    def launch(self, job_dir: Path, args: Sequence[str], secrets: Mapping[str, bytes] | None = None,
               *, run_id: str | None = None, deadline_s: float = DEFAULT_DEADLINE_S) -> LaunchResult:
        job = prepare_job_dir(job_dir)
        self.calls.append(list(args))
        if self.mode == "refuse":
            raise HardeningError(["privileged"])
        write_secrets(job, secrets or {}, uid=None, gid=None)
        try:
            if args[0] == "provision":
                return self._result(self._provision(job))
            self.started.set()
            if self.mode == "hang":
                self.release.wait(600)
            if self.mode == "timeout":
                return self._result(b"", timed_out=True)
            if self.mode == "oom":
                return self._result(b"", oom=True, code=137)
            if self.mode == "garbage":
                return self._result(b"{not json")
            if self.mode == "exit":
                return self._result(b"", code=1)
            if self.mode == "bare_failure":
                return self._result(canonical_json({
                    "status": "failed", "error_code": "E_ATTESTATION", "receipt": None,
                    "checkpoint": None, "log_entries": [], "outputs": {}}))
            return self._result(canonical_json(self._run(job)))
        finally:
            remove_secrets(job)

    def _result(self, stdout: bytes, *, timed_out: bool = False, oom: bool = False,
                code: int = 0) -> LaunchResult:
        return LaunchResult(exit_code=code, stdout=stdout, oom_killed=oom, timed_out=timed_out,
                            isolation="none", settings_digest="0" * 64, duration=0.0)

    # -- provision -------------------------------------------------------------------------------

    def _provision(self, job: Path) -> bytes:
        platform = (job / "secrets" / "platform.key").read_bytes()
        statement = Attestation(provider="simulated", isolation="none",
                                worker_signing_key=self.worker.public_key,
                                worker_encryption_key=PartyKey.from_seeds(
                                    "worker", seed("worker"), seed("worker-enc")
                                ).identity.encryption_key,  # a real X25519 key
                                measurement=MEASUREMENT, issued_at=now())
        env = sign_envelope(Attestation.KIND, statement.to_dict(), [Signer.from_seed(platform)])
        return canonical_json({"status": "succeeded", "attestation": env.to_dict(),
                               "sealed_worker_key": base64.b64encode(SEALED_KEY).decode()})

    # -- run -------------------------------------------------------------------------------------

    def _run(self, job: Path) -> dict[str, Any]:
        assert (job / "secrets" / "worker.sealed").read_bytes() == SEALED_KEY
        meta = json.loads((job / "job.json").read_bytes())
        run_id, room_id = meta["run_id"], meta["room_id"]
        manifest_env = Envelope.from_json((job / "manifest.json").read_bytes())
        manifest = Manifest.from_dict(_payload(manifest_env))
        bundle_env = Envelope.from_json((job / "bundle.json").read_bytes())
        bundle = Bundle.from_dict(_payload(bundle_env))
        uploads = [Envelope.from_dict(u) for u in json.loads((job / "uploads.json").read_bytes())]
        for upload in uploads:
            u = _payload(upload)
            data = job / "data" / f"{u['ciphertext_digest']}.sealed"
            assert data.stat().st_size == u["ciphertext_size"]
            assert hashlib.sha256(data.read_bytes()).hexdigest() == u["ciphertext_digest"]
        attestations = json.loads((job / "attestations.json").read_bytes())
        att_digest = Envelope.from_dict(attestations[0]).digest()
        entries = [Envelope.from_dict(e) for e in json.loads((job / "log/entries.json").read_bytes())]
        self.job_snapshots.append({"run_id": run_id, "log_size": len(entries),
                                   "approvals": json.loads((job / "approvals.json").read_bytes())})
        spent: dict[str, Decimal] = {}
        for e in entries:
            p = _payload(e)
            if p["kind"] == "budget_charged":
                d = p["details"]["dataset"]
                spent[d] = spent.get(d, Decimal(0)) + Decimal(p["details"]["epsilon"])
        cost = bundle.output.epsilon
        over = [d for d in bundle.datasets
                if spent.get(d, Decimal(0)) + cost > Decimal(manifest.dataset(d).epsilon_budget)]
        new: list[Envelope] = []

        def add(kind: str, subject: str, details: dict[str, Any]) -> None:
            entry = LogEntry(room_id, kind, run_id, subject, details, now())
            new.append(sign_envelope(LogEntry.KIND, entry.to_dict(), [self.worker]))

        digest = bundle_env.digest()
        outputs: dict[str, bytes] = {}
        if over:
            status, code, privacy = "refused", "E_PRIVACY", None
        else:
            status, code = "succeeded", None
            if not entries:
                add("manifest_accepted", manifest_env.digest(), {})
            add("run_started", digest, {"inputs": [u.digest() for u in uploads]})
            if cost > 0:
                for d in bundle.datasets:
                    add("budget_charged", digest,
                        {"dataset": d, "epsilon": str(cost), "delta": "0"})
            outputs = {r: f"sealed-output-for-{r}-{run_id}".encode() for r in bundle.recipients}
            privacy = PrivacyRecord(
                mode=bundle.output.mode, min_group_size=5, guarantee=guarantee_of(bundle),
                epsilon_charged=str(cost), delta_charged="0",
                budget_left={d: str(Decimal(manifest.dataset(d).epsilon_budget)
                                    - spent.get(d, Decimal(0)) - cost) for d in bundle.datasets})
        records = tuple(OutputRecord(r, hashlib.sha256(b"plain").hexdigest(),
                                     hashlib.sha256(data).hexdigest(), 1)
                        for r, data in outputs.items())
        receipt = Receipt(
            room_id=room_id, manifest_digest=manifest_env.digest(), run_id=run_id,
            bundle_digest=digest, approval_digests=(),
            inputs=tuple(InputRecord(json.loads(u.payload)["dataset"],
                                     json.loads(u.payload)["version"],
                                     json.loads(u.payload)["row_count"], u.digest())
                         for u in uploads),
            outputs=records, privacy=privacy,
            attestation_digest=att_digest, attestation="simulated", isolation="none",
            status=status, error_code=code, timings_ms={},
            log_index=0, checkpoint=Checkpoint("", 0, "0" * 64, "1970-01-01T00:00:00Z"))
        add("run_refused" if over else "run_finished", digest,
            {"status": status, "receipt_core": receipt_core_digest(receipt)})
        leaves = log_leaf_hashes([*entries, *new])
        if self.mode == "fork":
            leaves = log_leaf_hashes(list(reversed([*entries, *new])))  # a forked tree
        checkpoint = Checkpoint(f"sealroom/{room_id}/log", len(leaves),
                                merkle.root(leaves).hex(), now())
        cp_env = sign_envelope(Checkpoint.KIND, checkpoint.to_dict(), [self.worker])
        final = Receipt(**{**receipt.__dict__, "log_index": len(leaves) - 1,
                           "checkpoint": checkpoint, "timings_ms": {"run": 1}})
        receipt_env = sign_envelope(Receipt.KIND, final.to_dict(), [self.worker])
        if self.mode == "slow":
            time.sleep(0.2)
        return {"status": status, "error_code": code, "receipt": receipt_env.to_dict(),
                "checkpoint": cp_env.to_dict(), "log_entries": [e.to_dict() for e in new],
                "outputs": {r: base64.b64encode(d).decode() for r, d in outputs.items()}}
