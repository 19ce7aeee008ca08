"""Runs: terminal states for every launcher failure, budget under concurrency, idempotency,
pre-checks and reconciliation after a restart."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient

from coordinator.app import create_app
from coordinator.runs import INTERRUPTED
from coordinator.storage.db import utcnow
from coordinator.storage.models import RunRow
from sdk.errors import ConflictError, SignatureError
from sdk.party.statements import make_approval
from tests.coordinator.conftest import BASE, Env, make_settings
from tests.coordinator.fake import FakeLauncher


def _run(env: Env, **kw: Any) -> dict[str, Any]:
    env.upload_both()
    bundle = env.ready_bundle(**kw)
    alice = env.client(env.alice)
    run = alice.create_run(env.room_id, bundle.digest())
    return alice.wait_run(env.room_id, run["run_id"], timeout=60)


@pytest.mark.parametrize(("mode", "code"), [
    ("timeout", "E_RESOURCE"), ("oom", "E_RESOURCE"), ("refuse", "E_CONFIG"),
    ("garbage", "E_INTERNAL"), ("exit", "E_INTERNAL"), ("fork", "E_LOG"),
    ("bare_failure", "E_ATTESTATION"),
])
def test_launcher_failures_end_in_one_failed_state(make_env: Any, mode: str, code: str) -> None:
    env: Env = make_env()
    env.setup_room()
    env.launcher.mode = mode
    done = _run(env)
    assert done["status"] == "failed" and done["error_code"] == code
    assert not done["has_receipt"]
    alice = env.client(env.alice)
    assert alice.log_entries(env.room_id) == [] and alice.checkpoint(env.room_id) is None
    assert list(env.services.jobs_dir.iterdir()) == []
    # the coordinator is still healthy and the next run on a good worker succeeds
    env.launcher.mode = "ok"
    again = alice.create_run(env.room_id, done["bundle_digest"])
    assert alice.wait_run(env.room_id, again["run_id"], timeout=60)["status"] == "succeeded"


def test_concurrent_runs_over_budget_exactly_one_succeeds(make_env: Any) -> None:
    env: Env = make_env(budget="1.5", run_concurrency=4)
    env.setup_room()
    env.upload_both()
    bundle = env.ready_bundle(epsilon="1")
    alice = env.client(env.alice)
    runs: list[dict[str, Any]] = []
    barrier = threading.Barrier(2)

    def request(key: str) -> None:
        client = env.client(env.alice)
        client.authenticate()
        barrier.wait()
        runs.append(client.create_run(env.room_id, bundle.digest(), idempotency_key=key))

    threads = [threading.Thread(target=request, args=(k,)) for k in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done = [alice.wait_run(env.room_id, r["run_id"], timeout=60) for r in runs]
    assert sorted(d["status"] for d in done) == ["refused", "succeeded"]
    assert next(d for d in done if d["status"] == "refused")["error_code"] == "E_PRIVACY"
    sizes = sorted(s["log_size"] for s in env.launcher.job_snapshots)
    assert sizes[0] < sizes[1]  # the second job was built on the first one's entries
    status = alice.room_status(env.room_id)
    crm = next(d for d in status["privacy"]["datasets"] if d["dataset"] == "crm")
    assert crm["epsilon_spent"] == "1" and status["privacy"]["log"]["verified_complete"]
    # the refusal is signed and in the log too
    refused = next(d for d in done if d["status"] == "refused")
    assert alice.receipt_info(env.room_id, refused["run_id"]).log_index >= 0


def test_idempotency_key(env: Env) -> None:
    env.upload_both()
    one, two = env.ready_bundle(sequence=1), env.ready_bundle(sequence=2)
    alice = env.client(env.alice)
    first = alice.create_run(env.room_id, one.digest(), idempotency_key="same")
    assert alice.create_run(env.room_id, one.digest(), idempotency_key="same")["run_id"] \
        == first["run_id"]
    with pytest.raises(ConflictError):
        alice.create_run(env.room_id, two.digest(), idempotency_key="same")
    # the key is per requester: bob's "same" is another run
    bob_run = env.client(env.bob).create_run(env.room_id, one.digest(), idempotency_key="same")
    assert bob_run["run_id"] != first["run_id"]
    assert len(alice.runs(env.room_id)) == 2


def test_prechecks_reject_early(env: Env) -> None:
    alice = env.client(env.alice)
    bundle = env.bundle()
    alice.submit_bundle(env.room_id, bundle)
    with pytest.raises(SignatureError):  # nobody approved
        alice.create_run(env.room_id, bundle.digest())
    env.approve(bundle)
    with pytest.raises(ConflictError):  # no uploads yet
        alice.create_run(env.room_id, bundle.digest())
    env.upload_both()
    revoke = make_approval(env.bob, env.manifest, env.digest, bundle.digest(), decision="revoke")
    env.client(env.bob).submit_revocation(env.room_id, revoke)
    with pytest.raises(SignatureError):
        alice.create_run(env.room_id, bundle.digest())
    assert alice.runs(env.room_id) == []


def test_restart_reconciles_a_running_run(make_env: Any, tmp_path: Any) -> None:
    env: Env = make_env()
    env.setup_room()
    env.upload_both()
    bundle = env.ready_bundle()
    with env.services.db.write() as s:
        s.add(RunRow(run_id="r" * 32, room_id=env.room_id, bundle_digest=bundle.digest(),
                     requested_by="alice", requester_key="00" * 32, idempotency_key=None,
                     state="running", message="", recipients="alice", created_at=utcnow(),
                     started_at=utcnow()))
    (env.services.jobs_dir / ("r" * 32)).mkdir()
    app = create_app(make_settings(tmp_path), FakeLauncher())
    with TestClient(app, base_url=BASE):
        run = app.state.services
        with run.db.read() as s:
            row = s.get(RunRow, "r" * 32)
        assert row is not None and row.state == "failed" and row.error_code == "E_INTERNAL"
        assert row.message == INTERRUPTED
        assert not (run.jobs_dir / ("r" * 32)).exists()
