"""A small room builder for tests: parties, a provisioned process worker, a signed manifest,
sealed uploads, bundles, approvals, and job directories in the documented layout."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sdk.party.statements import make_approval, make_bundle, make_upload, sign_manifest
from sdk.protocol.canonical import canonical_json, parse_json
from sdk.protocol.dsse import Envelope
from sdk.protocol.keys import PartyKey, Signer
from sdk.protocol.models import BundleInput, Manifest, Measurement
from sdk.protocol.plan import Plan
from sdk.protocol.planoutput import plan_output
from sdk.protocol.sealing import seal_stream, upload_binding
from sdk.protocol.spec import OutputSpec

CANARY = "CANARY-7f3a9c"


def follow(*names: str) -> list[BundleInput]:
    """Inputs that read the newest upload (the owner's approval must agree: :func:`acks`)."""
    return [BundleInput(n, follow_latest=True) for n in names]


def pin(uploads: list[Envelope], *names: str) -> list[BundleInput]:
    """Inputs pinned to the newest of ``uploads`` for each name (follow-latest without one)."""
    out = []
    for name in names:
        mine = [(json.loads(u.payload)["version"], u.digest()) for u in uploads
                if json.loads(u.payload)["dataset"] == name]
        if mine:
            version, digest = max(mine)
            out.append(BundleInput(name, version, digest))
        else:
            out.append(BundleInput(name, follow_latest=True))
    return out


def acks(bundle: Envelope, key: PartyKey, manifest: Manifest) -> list[str]:
    """The follow-latest inputs of ``bundle`` that ``key``'s party owns (what its approval
    names)."""
    payload = json.loads(bundle.payload)
    owned = {d.name for d in manifest.datasets if d.owner == key.name}
    return [i["dataset"] for i in payload["inputs"]
            if i.get("follow_latest") and i["dataset"] in owned]


def seed(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def run_enclave(args: list[str], timeout: float = 120) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "enclave", *args], capture_output=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    doc = parse_json(proc.stdout, max_bytes=1 << 30)
    assert isinstance(doc, dict)
    return doc


def _one_row_per_person(plain: Path, id_column: str) -> bool:
    """No NULL and no repeated identifier (DuckDB: Arrow's ``unique`` stops at 2 GiB of text)."""
    import duckdb

    col = '"' + id_column.replace('"', '""') + '"'
    row = duckdb.execute(f"SELECT count(*) = count({col}) AND count(*) = count(DISTINCT {col}) "  # noqa: S608 - identifier quoted
                         "FROM read_parquet(?)", [str(plain)]).fetchone()
    return bool(row and row[0])


@dataclass
class Room:
    """A two-party room with a provisioned unisolated worker."""

    root: Path
    alice: PartyKey = field(
        default_factory=lambda: PartyKey.from_seeds("alice", seed("a-s"), seed("a-e"))
    )
    bob: PartyKey = field(
        default_factory=lambda: PartyKey.from_seeds("bob", seed("b-s"), seed("b-e"))
    )
    platform_seed: bytes = field(default_factory=lambda: seed("platform"))
    min_group_size: int = 5
    epsilon_budget: str = "10"
    allow_custom_code: bool = True
    follow_latest: bool = False  # bundles follow the newest upload instead of pinning it
    uploads: list[Envelope] = field(default_factory=list)
    sealed_files: dict[str, Path] = field(default_factory=dict)
    log_entries: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: dict[str, Any] | None = None
    runs: int = 0

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        prov = self.root / "provision"
        (prov / "secrets").mkdir(parents=True)
        (prov / "secrets" / "platform.key").write_bytes(self.platform_seed)
        doc = run_enclave(
            ["provision", "--job", str(prov), "--image-id", "unisolated", "--isolation", "none"]
        )
        assert doc["status"] == "succeeded", doc
        self.attestation = Envelope.from_dict(doc["attestation"])
        self.sealed_worker_key = base64.b64decode(doc["sealed_worker_key"])
        att = json.loads(self.attestation.payload)
        self.worker_encryption_key = bytes.fromhex(att["worker_encryption_key"])
        self.measurement = Measurement(
            att["measurement"]["image_id"], att["measurement"]["code_digest"]
        )
        manifest = Manifest.from_dict(self.manifest_dict())
        env = sign_manifest(manifest, self.alice)
        self.manifest_envelope = sign_manifest(env, self.bob)
        self.manifest = manifest
        self.manifest_digest = self.manifest_envelope.digest()

    def manifest_dict(self) -> dict[str, Any]:
        def party(k: PartyKey) -> dict[str, Any]:
            return {**k.identity.to_dict(), "roles": ["data_owner", "analyst", "recipient"]}

        return {
            "room_id": "room1",
            "version": 1,
            "parties": [party(self.alice), party(self.bob)],
            "datasets": [
                {
                    "name": "crm",
                    "owner": "alice",
                    "schema": [
                        {"name": "uid", "type": "string"},
                        {"name": "converted", "type": "int"},
                        {"name": "spend", "type": "float"},
                        {"name": "note", "type": "string"},
                    ],
                    "id_column": "uid",
                    "id_kind": "sha256",
                    "min_group_size": self.min_group_size,
                    "epsilon_budget": self.epsilon_budget,
                    "delta_budget": "0.001",
                    "roles": {"converted": "measure", "spend": "measure"},
                    "allow_custom_code": self.allow_custom_code,
                },
                {
                    "name": "visits",
                    "owner": "bob",
                    "schema": [
                        {"name": "uid", "type": "string"},
                        {"name": "exposed", "type": "int"},
                        {"name": "segment", "type": "string"},
                    ],
                    "id_column": "uid",
                    "id_kind": "sha256",
                    "min_group_size": self.min_group_size,
                    "epsilon_budget": self.epsilon_budget,
                    "delta_budget": "0.001",
                    "roles": {"exposed": "dimension", "segment": "dimension"},
                    "allow_custom_code": self.allow_custom_code,
                },
            ],
            "workers": {
                "measurements": [self.measurement.to_dict()],
                "providers": ["simulated"],
                "platform_keys": [Signer.from_seed(self.platform_seed).public_key.hex()],
                "allow_unisolated": True,
            },
            "policies": {"min_group_size": self.min_group_size, "max_runs": 100},
            "expires": "2099-01-01T00:00:00Z",
        }

    def upload(self, owner: PartyKey, dataset: str, table: pa.Table, version: int = 1, *,
               one_row: bool | None = None) -> Envelope:
        plain = self.root / f"{dataset}-{version}.parquet"
        pq.write_table(table, plain)
        return self.upload_file(owner, dataset, plain, table.num_rows, version, one_row=one_row)

    def upload_file(
        self, owner: PartyKey, dataset: str, plain: Path, rows: int, version: int = 1, *,
        one_row: bool | None = None,
    ) -> Envelope:
        """Seal ``plain`` and sign its upload statement; ``one_row`` (default: as the SDK
        finds it, every identifier once and none empty) is what the statement says."""
        if one_row is None:
            one_row = _one_row_per_person(plain, self.manifest.dataset(dataset).id_column)
        sealed_tmp = self.root / f"{dataset}-{version}.sealed"
        with open(plain, "rb") as src, open(sealed_tmp, "wb") as dst:
            result = seal_stream(
                src,
                dst,
                self.worker_encryption_key,
                upload_binding("room1", self.manifest_digest, dataset, version),
            )
        env = make_upload(
            owner,
            self.manifest,
            self.manifest_digest,
            dataset,
            version,
            rows,
            result,
            self.attestation.digest(),
            one_row_per_person=one_row,
        )
        self.uploads.append(env)
        self.sealed_files[result.ciphertext_digest] = sealed_tmp
        return env

    def bundle(
        self,
        code: str,
        output: dict[str, Any],
        *,
        kind: str = "sql",
        inputs=("crm", "visits"),
        recipients=("alice",),
        author: PartyKey | None = None,
        **kw: Any,
    ) -> Envelope:
        return make_bundle(
            author or self.alice,
            self.manifest,
            self.manifest_digest,
            sequence=1,
            title="t",
            purpose="p",
            kind=kind,
            code=code,
            output=OutputSpec.from_dict(output),
            inputs=self._inputs(inputs),
            recipients=list(recipients),
            **kw,
        )

    def plan_bundle(
        self,
        plan: Plan,
        *,
        kind: str = "plan",
        code: str = "",
        dp: dict[str, Any] | None = None,
        recipients=("alice",),
        author: PartyKey | None = None,
        min_group_size: int | None = None,
        **kw: Any,
    ) -> Envelope:
        """A bundle carrying ``plan`` with the output spec it implies."""
        like = OutputSpec.from_dict({"mode": "aggregate", "privacy_unit": "person",
                                     "dp": dp, "min_group_size": min_group_size})
        return make_bundle(
            author or self.alice,
            self.manifest,
            self.manifest_digest,
            sequence=1,
            title="t",
            purpose="p",
            kind=kind,
            code=code,
            output=plan_output(plan, like),
            inputs=self._inputs(plan.inputs),
            recipients=list(recipients),
            plan=plan,
            **kw,
        )

    def _inputs(self, names: Any) -> list[BundleInput]:
        return follow(*names) if self.follow_latest else pin(self.uploads, *names)

    def approvals(
        self, bundle: Envelope, parties: tuple[PartyKey, ...] | None = None
    ) -> list[Envelope]:
        return [
            make_approval(k, self.manifest, self.manifest_digest, bundle.digest(),
                          follow_latest=acks(bundle, k, self.manifest))
            for k in (parties or (self.alice, self.bob))
        ]

    def job_dir(
        self,
        bundle: Envelope,
        approvals: list[Envelope],
        *,
        run_id: str | None = None,
        uploads: list[Envelope] | None = None,
        entries: list[dict[str, Any]] | None = None,
        checkpoint: Any = "current",
        manifest: Envelope | None = None,
        attestations: list[Envelope] | None = None,
        secrets: bool = True,
    ) -> Path:
        self.runs += 1
        run_id = run_id or f"run-{self.runs}"
        job = self.root / f"job-{self.runs}"
        (job / "data").mkdir(parents=True)
        (job / "log").mkdir()
        write = lambda p, v: (job / p).write_bytes(canonical_json(v))  # noqa: E731
        write("job.json", {"run_id": run_id, "room_id": "room1"})
        write("manifest.json", (manifest or self.manifest_envelope).to_dict())
        write("attestations.json", [a.to_dict() for a in (attestations or [self.attestation])])
        write("bundle.json", bundle.to_dict())
        write("approvals.json", [a.to_dict() for a in approvals])
        write(
            "uploads.json",
            [u.to_dict() for u in (uploads if uploads is not None else self.uploads)],
        )
        for digest, path in self.sealed_files.items():
            os.link(path, job / "data" / f"{digest}.sealed")
        write("log/entries.json", self.log_entries if entries is None else entries)
        write("log/checkpoint.json", self.checkpoint if checkpoint == "current" else checkpoint)
        if secrets:
            (job / "secrets").mkdir()
            (job / "secrets" / "platform.key").write_bytes(self.platform_seed)
            (job / "secrets" / "worker.sealed").write_bytes(self.sealed_worker_key)
        return job

    def run(self, job: Path, *, commit: bool = True, subprocess: bool = False) -> dict[str, Any]:
        """Run a job through the worker entrypoint: in-process by default (the same code as
        ``python -m enclave run``; the query runner is always its own process)."""
        if subprocess:
            doc = run_enclave(
                ["run", "--job", str(job), "--image-id", "unisolated", "--isolation", "none"]
            )
        else:
            from enclave.job import Job

            result = Job(job, image_id="unisolated", isolation="none").run()
            parsed = parse_json(canonical_json(result), max_bytes=1 << 30)
            assert isinstance(parsed, dict)
            doc = parsed
        if commit and doc.get("checkpoint"):
            self.log_entries = self.log_entries + doc["log_entries"]
            self.checkpoint = doc["checkpoint"]
        return doc


def demo_tables(
    n_crm: int = 400, n_visits: int = 300, overlap: int = 200
) -> tuple[pa.Table, pa.Table]:
    """Deterministic small tables with a known overlap; a canary in a free-text column."""
    ids = [hashlib.sha256(f"user{i}".encode()).hexdigest() for i in range(n_crm + n_visits)]
    crm_ids = ids[:n_crm]
    visit_ids = ids[n_crm - overlap : n_crm - overlap + n_visits]
    crm = pa.table(
        {
            "uid": crm_ids,
            "converted": [i % 3 == 0 for i in range(n_crm)],
            "spend": [float(i % 100) for i in range(n_crm)],
            "note": [CANARY] * n_crm,
        }
    )
    crm = crm.set_column(
        1, "converted", pa.array([int(v) for v in crm.column("converted").to_pylist()], pa.int64())
    )
    visits = pa.table(
        {
            "uid": visit_ids,
            "exposed": pa.array([i % 2 for i in range(n_visits)], pa.int64()),
            "segment": [("a", "b")[i % 2] for i in range(n_visits)],
        }
    )
    return crm, visits
