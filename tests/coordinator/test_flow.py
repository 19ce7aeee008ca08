"""The happy path through the HTTP API with the SDK client and the fake worker."""

from __future__ import annotations

import hashlib

from sdk.protocol import merkle
from sdk.protocol.canonical import parse_json
from sdk.protocol.verify import verify_manifest, verify_receipt
from tests.coordinator.conftest import Env


def test_room_upload_bundle_run_receipt_output(env: Env) -> None:
    alice, bob = env.client(env.alice), env.client(env.bob)
    room = alice.room(env.room_id)
    assert room["complete"] and room["you"] == "alice" and room["missing"] == []
    from datetime import UTC, datetime

    verify_manifest(alice.manifest(env.room_id), now=datetime.now(UTC))
    env.upload_both()
    assert {u["dataset"] for u in alice.uploads(env.room_id)} == {"crm", "visits"}
    bundle = env.ready_bundle(recipients=("alice", "bob"))
    assert len(bob.approvals(env.room_id, bundle.digest())) == 2
    assert alice.bundle(env.room_id, bundle.digest()[:10]) == bundle
    run = alice.create_run(env.room_id, bundle.digest(), idempotency_key="k1")
    assert run["status"] in ("queued", "running", "succeeded")
    assert alice.create_run(env.room_id, bundle.digest(), idempotency_key="k1")["run_id"] \
        == run["run_id"]
    done = alice.wait_run(env.room_id, run["run_id"], timeout=60)
    assert done["status"] == "succeeded" and done["has_receipt"]
    info = alice.receipt_info(env.room_id, run["run_id"])
    out_a = alice.output(env.room_id, run["run_id"])
    out_b = bob.output(env.room_id, run["run_id"])
    assert out_a != out_b
    verified = verify_receipt(info.receipt, env.manifest, alice.attestations(env.room_id),
                              log_entry=info.log_entry, inclusion=info.inclusion_proof,
                              outputs={"alice": out_a, "bob": out_b})
    assert verified.receipt.status == "succeeded"
    entries = alice.log_entries(env.room_id)
    cp = alice.checkpoint(env.room_id)
    assert cp is not None
    payload = parse_json(cp.payload)
    assert isinstance(payload, dict) and payload["tree_size"] == len(entries)
    leaves = [merkle.leaf_hash(e.to_json()) for e in entries]
    assert merkle.root(leaves).hex() == payload["root_hash"]
    status = alice.room_status(env.room_id)
    crm = next(d for d in status["privacy"]["datasets"] if d["dataset"] == "crm")
    assert crm["epsilon_spent"] == "1" and crm["epsilon_left"] == "9"
    assert status["privacy"]["log"]["verified_complete"]
    assert status["queries"]["by_state"] == {"succeeded": 1}
    alice.feedback(env.room_id, run["run_id"], changed_decision=True)
    status = alice.room_status(env.room_id)
    assert status["utility"]["changed_decision"] == 1
    assert status["match_rates"] == []  # the fake worker measures none
    metrics = env.client(admin=True).metrics()
    assert 'sealroom_epsilon_spent{dataset="crm",room="room1"} 1' in metrics
    assert hashlib.sha256(out_a).hexdigest() in {
        o["ciphertext_digest"] for o in verified.receipt.to_dict()["outputs"]}
