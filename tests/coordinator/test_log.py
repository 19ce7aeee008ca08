"""Log routes: entries, checkpoints, inclusion and consistency proofs verify with the SDK's
Merkle code; bad parameters are 400; a result signed by another key never reaches the log."""

from __future__ import annotations

import json

import pytest

from sdk.errors import AttestationError, InputError
from sdk.protocol import merkle
from tests.coordinator.conftest import Env


def _two_runs(env: Env) -> None:
    env.upload_both()
    bundle = env.ready_bundle()
    alice = env.client(env.alice)
    for key in ("one", "two"):
        run = alice.create_run(env.room_id, bundle.digest(), idempotency_key=key)
        assert alice.wait_run(env.room_id, run["run_id"], timeout=60)["status"] == "succeeded"


def test_proofs_verify(env: Env) -> None:
    _two_runs(env)
    alice = env.client(env.alice)
    entries = alice.log_entries(env.room_id)
    leaves = [merkle.leaf_hash(e.to_json()) for e in entries]
    checkpoints = env.tc.get(f"/v1/rooms/{env.room_id}/log/checkpoints",
                             headers={"Authorization": f"Bearer {alice.authenticate()}"}).json()
    sizes = [c["tree_size"] for c in checkpoints]
    assert len(sizes) == 2 and sizes[-1] == len(entries)
    first = alice.checkpoint(env.room_id, tree_size=sizes[0])
    assert first is not None and json.loads(first.payload)["tree_size"] == sizes[0]
    for size in sizes:
        root = merkle.root(leaves[:size])
        for index in range(size):
            proof = alice.inclusion_proof(env.room_id, index, size)
            merkle.verify_inclusion(leaves[index], index, size, proof, root)
    proof = alice.consistency_proof(env.room_id, sizes[0], sizes[1])
    merkle.verify_consistency(sizes[0], sizes[1], merkle.root(leaves[:sizes[0]]),
                              merkle.root(leaves), proof)
    assert alice.log_entries(env.room_id, start=2, end=4) == entries[2:4]
    with pytest.raises(InputError):
        alice.inclusion_proof(env.room_id, len(entries), len(entries))
    with pytest.raises(InputError):
        alice.consistency_proof(env.room_id, 3, 2)


def test_result_signed_by_another_worker_is_refused(env: Env) -> None:
    from sdk.protocol.keys import Signer
    from tests.coordinator.fake import seed

    env.launcher.worker = Signer.from_seed(seed("impostor"))
    env.upload_both()
    bundle = env.ready_bundle()
    alice = env.client(env.alice)
    run = alice.create_run(env.room_id, bundle.digest())
    done = alice.wait_run(env.room_id, run["run_id"], timeout=60)
    assert done["status"] == "failed" and done["error_code"] == "E_ATTESTATION"
    assert alice.log_entries(env.room_id) == []


def test_upload_to_an_unpublished_worker(env: Env) -> None:
    from datetime import UTC, datetime

    from sdk.protocol.clock import format_time
    from sdk.protocol.dsse import sign_envelope
    from sdk.protocol.models import Upload

    upload = Upload(env.room_id, env.digest, "crm", 1, env.manifest.dataset("crm").schema_digest(),
                    1, "ab" * 32, 10, "ab" * 32, "cd" * 32, format_time(datetime.now(UTC)))
    statement = sign_envelope(Upload.KIND, upload.to_dict(), [env.alice.signer])
    with pytest.raises(AttestationError):
        env.client(env.alice).upload_statement(env.room_id, statement)
