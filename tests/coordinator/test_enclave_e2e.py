"""End to end with the real worker (``python -m enclave`` through the unisolated
ProcessLauncher, and the hardened DockerLauncher): provision, sealed uploads, an approved DP
plan bundle (privacy by construction), the receipt verified offline and the output decrypted
by its recipient, no canary anywhere; then a run over budget is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from coordinator.app import create_app
from coordinator.launchers import Launcher, ProcessLauncher
from sdk.client import Client
from sdk.party.statements import sign_manifest
from sdk.protocol.canonical import parse_json
from sdk.protocol.dsse import Envelope
from sdk.protocol.models import Manifest, Measurement
from sdk.protocol.sealing import open_bytes
from sdk.protocol.verify import verify_receipt
from tests.coordinator.conftest import ADMIN, BASE, make_settings

pytest.importorskip("pyarrow")
from sdk.protocol.sqlplan import plan_from_sql  # noqa: E402
from tests.kit import CANARY, Room, demo_tables, seed  # noqa: E402

SQL = ("SELECT v.exposed AS exposed, COUNT(*) AS people, "
       "SUM(LEAST(GREATEST(c.converted, 0), 1)) AS conv "
       "FROM crm c JOIN visits v ON c.uid = v.uid GROUP BY 1")


def test_real_worker_end_to_end(tmp_path: Path) -> None:
    end_to_end(tmp_path, ProcessLauncher())


@pytest.mark.docker
def test_real_worker_in_docker_end_to_end(tmp_path: Path) -> None:
    """The same through the hardened DockerLauncher (job dir mounted read-only, uid 65534)."""
    import os

    from coordinator.launchers import DockerLauncher, EngineUnavailableError

    launcher = DockerLauncher(os.environ.get("SEALROOM_WORKER_IMAGE", "sealroom-worker:latest"))
    try:
        launcher.image_id_and_env()
    except EngineUnavailableError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"docker worker image needed under CI=true: {exc.message}")
        pytest.skip(exc.message)
    end_to_end(tmp_path, launcher)


def end_to_end(tmp_path: Path, launcher: Launcher) -> None:
    settings = make_settings(tmp_path, run_deadline_s=300)
    settings.platform_key_file.write_bytes(seed("platform"))  # the kit room's platform key
    app = create_app(settings, launcher)
    with TestClient(app, base_url=BASE, raise_server_exceptions=False) as tc:
        room = Room(tmp_path / "kit", epsilon_budget="1.5")
        admin = Client(BASE, admin_token=ADMIN, transport=tc._transport)
        attestation = admin.provision_worker()
        payload = json.loads(attestation.payload)
        room.attestation = attestation
        room.worker_encryption_key = bytes.fromhex(payload["worker_encryption_key"])
        room.measurement = Measurement(**payload["measurement"])  # the worker we provisioned
        # a container worker is measured by its image's tree digest, never its Docker id
        assert room.measurement.image_id == launcher.measurement_id()
        room.manifest = Manifest.from_dict(room.manifest_dict())
        room.manifest_envelope = sign_manifest(sign_manifest(room.manifest, room.alice), room.bob)
        room.manifest_digest = room.manifest_envelope.digest()
        alice = Client(BASE, room.alice, transport=tc._transport)
        bob = Client(BASE, room.bob, transport=tc._transport)
        alice.submit_manifest(room.manifest_envelope)
        crm, visits = demo_tables()
        for client, key, name, table in ((alice, room.alice, "crm", crm),
                                         (bob, room.bob, "visits", visits)):
            statement = room.upload(key, name, table)
            digest = json.loads(statement.payload)["ciphertext_digest"]
            assert client.upload("room1", statement, room.sealed_files[digest])["complete"]
        columns = {d.name: d.plan_columns() for d in room.manifest.datasets}
        plan = plan_from_sql(SQL, columns, domains={"exposed": ("0", "1")})
        bundle = room.plan_bundle(plan, kind="sql", code=SQL, dp={"epsilon": "1"})
        alice.submit_bundle("room1", bundle)
        for client, approval in zip((alice, bob), room.approvals(bundle), strict=True):
            client.submit_approval("room1", approval)
        run = alice.create_run("room1", bundle.digest(), idempotency_key="e2e")
        done = alice.wait_run("room1", run["run_id"], timeout=300)
        assert done["status"] == "succeeded", (done["error_code"], done["message"])
        info = alice.receipt_info("room1", run["run_id"])
        sealed = alice.output("room1", run["run_id"])
        verified = verify_receipt(info.receipt, room.manifest, alice.attestations("room1"),
                                  log_entry=info.log_entry, inclusion=info.inclusion_proof,
                                  outputs={"alice": sealed})
        assert verified.receipt.isolation == launcher.isolation
        # the run's log entry records the digest of the isolation settings the launcher checked
        started = [json.loads(e.payload) for e in alice.log_entries("room1")]
        started = [e for e in started if e["kind"] == "run_started"]
        assert len(started[0]["details"]["isolation_settings"]) == 64
        result = parse_json(open_bytes(sealed, room.alice.encryption_private))
        assert isinstance(result, dict) and result["columns"] == ["exposed", "people", "conv"]
        assert verified.receipt.privacy is not None
        assert verified.receipt.privacy.guarantee == "by construction"
        assert CANARY not in json.dumps(result) and CANARY.encode() not in info.receipt.payload
        # the budget (1.5) does not cover a second run of epsilon 1: the worker refuses
        again = alice.create_run("room1", bundle.digest(), idempotency_key="e2e-2")
        refused = alice.wait_run("room1", again["run_id"], timeout=300)
        assert refused["status"] == "refused" and refused["error_code"] == "E_PRIVACY", (refused["error_code"], refused["message"])
        status = alice.room_status("room1")
        crm_posture = next(d for d in status["privacy"]["datasets"] if d["dataset"] == "crm")
        assert crm_posture["epsilon_spent"] == "1" and crm_posture["epsilon_left"] == "0.5"
        assert isinstance(alice.checkpoint("room1"), Envelope)
