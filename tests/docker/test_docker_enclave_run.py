"""A full enclave job in a real hardened container, through the production entrypoint.

The worker is provisioned inside a container (keys generated there, sealed to the container's
measurement), a two-party room is set up with the test kit, and one aggregate job runs through
``DockerLauncher`` with the secrets handed over after inspection. The same job directory run
through ``ProcessLauncher`` with the same sealed key and measurement must give the same receipt
contents, apart from timings and what depends on fresh randomness or the clock (per-recipient
ciphertexts, hence log entries and the checkpoint's root hash).
"""

from __future__ import annotations

import base64
import copy
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from coordinator.launchers import DockerLauncher, LaunchResult, ProcessLauncher
from sdk.party.statements import sign_manifest
from sdk.protocol import merkle
from sdk.protocol.canonical import parse_json
from sdk.protocol.dsse import Envelope
from sdk.protocol.models import Manifest, Measurement
from sdk.protocol.verify import log_leaf_hashes, verify_receipt
from tests.kit import CANARY, Room, demo_tables

pytestmark = pytest.mark.docker

AGG = {"mode": "aggregate", "privacy_unit": "uid",
       "group_by": [{"column": "exposed", "domain": ["0", "1"]}]}
SQL = "SELECT c.uid, v.exposed FROM crm c JOIN visits v USING (uid)"


def document(result: LaunchResult) -> dict[str, Any]:
    assert result.exit_code == 0 and not result.timed_out and not result.oom_killed
    doc = parse_json(result.stdout, max_bytes=1 << 30)
    assert isinstance(doc, dict)
    return doc


def readable(path: Path) -> Path:
    """Make a job directory readable by the worker user (uid 65534) through the bind mount."""
    for p in [path, *path.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return path


@dataclass
class ContainerRoom(Room):
    """The kit's room, but with its worker provisioned inside a hardened container."""

    launcher: Any = None
    image_id: str = ""

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        prov = self.root / "provision"
        prov.mkdir()
        doc = document(self.launcher.launch(
            readable(prov),
            ["provision", "--job", "/job", "--image-id", self.image_id,
             "--isolation", "container"],
            {"platform.key": self.platform_seed}, deadline_s=120))
        assert doc["status"] == "succeeded", doc
        self.attestation = Envelope.from_dict(doc["attestation"])
        self.sealed_worker_key = base64.b64decode(doc["sealed_worker_key"])
        att = json.loads(self.attestation.payload)
        self.worker_encryption_key = bytes.fromhex(att["worker_encryption_key"])
        self.measurement = Measurement(att["measurement"]["image_id"],
                                       att["measurement"]["code_digest"])
        manifest = Manifest.from_dict(self.manifest_dict())
        self.manifest_envelope = sign_manifest(sign_manifest(manifest, self.alice), self.bob)
        self.manifest = manifest
        self.manifest_digest = self.manifest_envelope.digest()


@pytest.fixture
def room(worker_launcher: DockerLauncher, process_launcher: ProcessLauncher,
         tmp_path: Path) -> ContainerRoom:
    image_id = worker_launcher.measurement_id()  # the image's tree digest, not its Docker id
    measure = tmp_path / "measure"
    measure.mkdir()
    in_image = document(worker_launcher.launch(readable(measure), ["measure"]))
    on_host = document(process_launcher.launch(measure, ["measure"]))
    if in_image != on_host:
        reason = ("the worker image holds other enclave/sdk code than this checkout: "
                  "rebuild it (python -m coordinator.images build)")
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    r = ContainerRoom(tmp_path / "room", launcher=worker_launcher, image_id=image_id)
    crm, visits = demo_tables()
    r.upload(r.alice, "crm", crm)
    r.upload(r.bob, "visits", visits)
    return r


def comparable(receipt: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(receipt)
    out.pop("timings_ms")
    # Log entries carry times and ciphertext digests, so the tree's root differs; its size not.
    out["checkpoint"].pop("issued_at", None)
    out["checkpoint"].pop("root_hash")
    for o in out["outputs"]:
        o.pop("ciphertext_digest")
    return out


def test_full_job_in_container_matches_process_run(
        room: ContainerRoom, worker_launcher: DockerLauncher,
        process_launcher: ProcessLauncher) -> None:
    bundle = room.bundle(SQL, AGG)
    job = readable(room.job_dir(bundle, room.approvals(bundle), secrets=False))
    twin = job.with_name(job.name + "-process")
    shutil.copytree(job, twin)
    args = ["run", "--job", "/job", "--image-id", room.image_id, "--isolation", "container"]
    secrets = {"platform.key": room.platform_seed, "worker.sealed": room.sealed_worker_key}

    in_container = worker_launcher.launch(job, args, secrets, deadline_s=300)
    doc = document(in_container)
    assert doc["status"] == "succeeded", doc
    assert CANARY not in in_container.stdout.decode()
    receipt = Envelope.from_dict(doc["receipt"])
    body = json.loads(receipt.payload)
    assert body["isolation"] == "container"
    assert body["outputs"] and body["outputs"][0]["recipient"] == "alice"

    entries = [*(Envelope.from_dict(e) for e in room.log_entries),
               *(Envelope.from_dict(e) for e in doc["log_entries"])]
    proof = merkle.inclusion_proof(log_leaf_hashes(entries), body["log_index"])
    verify_receipt(receipt, room.manifest, [room.attestation],
                   log_entry=entries[body["log_index"]], inclusion=proof)

    twin_doc = document(process_launcher.launch(twin, args, secrets, deadline_s=300))
    twin_body = json.loads(Envelope.from_dict(twin_doc["receipt"]).payload)
    assert comparable(twin_body) == comparable(body)
    assert kinds(twin_doc) == kinds(doc)


def kinds(doc: dict[str, Any]) -> list[str]:
    return [json.loads(Envelope.from_dict(e).payload)["kind"] for e in doc["log_entries"]]


def test_a_warm_container_serves_the_next_run_after_seeing_nothing(
        room: ContainerRoom, docker_client: Any, worker_image: str) -> None:
    """With ``warm=True`` a run starts the next run's container: created, inspected and started
    with an empty job directory, waiting for the go file. The next run (same arguments) is
    handed to it: its result verifies, its isolation digest is a cold run's, and ``close``
    leaves no container behind. Other arguments get a cold container."""
    from coordinator.launchers.docker import WARM_PREFIX
    from coordinator.launchers.profile import LABEL_INSTANCE, LABEL_OWNER, OWNER

    launcher = DockerLauncher(worker_image, client=docker_client, instance="pytest-warm",
                              warm=True)
    args = ["run", "--job", "/job", "--image-id", room.image_id, "--isolation", "container"]
    secrets = {"platform.key": room.platform_seed, "worker.sealed": room.sealed_worker_key}
    jobs = room.root / "jobs"
    jobs.mkdir()
    try:
        digests = []
        for i in range(3):
            bundle = room.bundle(SQL, AGG)
            job = jobs / f"run{i}"
            shutil.copytree(room.job_dir(bundle, room.approvals(bundle), secrets=False), job)
            readable(job)
            if i:
                assert launcher.warm_ready(120)
                waiting = [p for p in jobs.iterdir() if p.name.startswith(WARM_PREFIX)]
                assert len(waiting) == 1
                # before its run, the waiting worker's directory holds no job, key or data
                assert [p.relative_to(waiting[0]).as_posix()
                        for p in waiting[0].rglob("*")] == ["secrets"]
            result = launcher.launch(job, args, secrets, run_id=f"run{i}", deadline_s=300)
            doc = document(result)
            assert doc["status"] == "succeeded", doc
            assert CANARY not in result.stdout.decode()
            receipt = Envelope.from_dict(doc["receipt"])
            body = json.loads(receipt.payload)
            entries = [*(Envelope.from_dict(e) for e in room.log_entries),
                       *(Envelope.from_dict(e) for e in doc["log_entries"])]
            proof = merkle.inclusion_proof(log_leaf_hashes(entries), body["log_index"])
            verify_receipt(receipt, room.manifest, [room.attestation],
                           log_entry=entries[body["log_index"]], inclusion=proof)
            digests.append(result.settings_digest)
        assert len(set(digests)) == 1  # the first run was cold: the same hardening
        assert launcher.warm_ready(120)
        other = jobs / "other"
        other.mkdir()
        measured = document(launcher.launch(readable(other), ["measure"]))
        assert "code_digest" in measured
        assert launcher.warm_ready(1)  # measure is not a run: the waiting one stays
    finally:
        launcher.close()
    left = docker_client.api.containers(
        all=True, filters={"label": [f"{LABEL_OWNER}={OWNER}", f"{LABEL_INSTANCE}=pytest-warm"]})
    assert left == []
    assert not [p for p in jobs.iterdir() if p.name.startswith(WARM_PREFIX)]
