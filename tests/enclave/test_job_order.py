"""Job-order and signed-input attacks against the enclave's ordered verification (T53–T63,
T67–T68): each must end in a typed error code, before any decryption, and leak nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from enclave.state import TrustedJobState
from sdk.protocol import merkle
from sdk.protocol.canonical import canonical_json
from sdk.protocol.dsse import Envelope, Signature, sign_envelope
from sdk.protocol.keys import PartyKey
from sdk.protocol.verify import log_leaf_hashes, verify_receipt
from tests.kit import CANARY, Room, demo_tables, seed

AGG = {
    "mode": "aggregate",
    "privacy_unit": "uid",
    "group_by": [{"column": "exposed", "domain": ["0", "1"]}],
}
SQL = "SELECT c.uid, v.exposed FROM crm c JOIN visits v USING (uid)"


@pytest.fixture()
def room(tmp_path: Path) -> Room:
    r = Room(tmp_path / "room")
    crm, visits = demo_tables()
    r.upload(r.alice, "crm", crm)
    r.upload(r.bob, "visits", visits)
    return r


def payload(doc: dict[str, Any]) -> dict[str, Any]:
    return json.loads(Envelope.from_dict(doc["receipt"]).payload)


def assert_refused_before_decrypt(doc: dict[str, Any], code: str) -> None:
    assert doc["error_code"] == code, doc
    assert doc["status"] in ("refused", "failed")
    assert doc["outputs"] == {}
    kinds = [json.loads(Envelope.from_dict(e).payload)["kind"] for e in doc["log_entries"]]
    assert "run_started" not in kinds and "upload_consumed" not in kinds
    if doc["receipt"] is not None:
        assert "decrypt" not in payload(doc)["timings_ms"]
    assert CANARY not in json.dumps(doc)


def test_missing_party_is_refused_and_named(room: Room) -> None:  # T54
    b = room.bundle(SQL, AGG)
    doc = room.run(room.job_dir(b, room.approvals(b, (room.alice,))))
    assert_refused_before_decrypt(doc, "E_SIGNATURE")
    assert "bob" in payload(doc)["details"]["message"]


def test_approvals_for_another_bundle(room: Room) -> None:
    b1 = room.bundle(SQL, AGG)
    b2 = room.bundle(SQL + " WHERE 1=1", AGG)
    doc = room.run(room.job_dir(b2, room.approvals(b1)))
    assert_refused_before_decrypt(doc, "E_INPUT")


def test_tampered_bundle_byte(room: Room) -> None:  # T53
    b = room.bundle(SQL, AGG)
    approvals = room.approvals(b)
    body = bytearray(b.payload)
    body[body.index(b"SELECT")] = ord("s")
    tampered = Envelope(b.payload_type, bytes(body), b.signatures)
    doc = room.run(room.job_dir(tampered, approvals))
    assert_refused_before_decrypt(doc, "E_SIGNATURE")


def test_revoked_approval(room: Room) -> None:
    from sdk.party.statements import make_approval

    b = room.bundle(SQL, AGG)
    revoke = make_approval(
        room.bob, room.manifest, room.manifest_digest, b.digest(), decision="revoke"
    )
    doc = room.run(room.job_dir(b, [*room.approvals(b), revoke]))
    assert_refused_before_decrypt(doc, "E_SIGNATURE")
    assert "revoked by bob" in payload(doc)["details"]["message"]


def test_approval_signed_by_foreign_key(room: Room) -> None:  # T56
    from sdk.party.statements import make_approval

    b = room.bundle(SQL, AGG)
    mallory = PartyKey.from_seeds("bob", seed("m-s"), seed("m-e"))
    forged = make_approval(mallory, room.manifest, room.manifest_digest, b.digest())
    doc = room.run(room.job_dir(b, [room.approvals(b)[0], forged]))
    assert_refused_before_decrypt(doc, "E_SIGNATURE")


def test_duplicate_signature_does_not_count_twice(room: Room) -> None:  # T55
    b = room.bundle(SQL, AGG)
    a = room.approvals(b, (room.alice,))[0]
    doubled = Envelope(
        a.payload_type, a.payload, (a.signatures[0], Signature("x" * 64, a.signatures[0].sig))
    )
    doc = room.run(room.job_dir(b, [doubled]))
    assert_refused_before_decrypt(doc, "E_SIGNATURE")


def test_receipt_presented_as_approval(room: Room) -> None:  # T59
    b = room.bundle(SQL, AGG)
    first = room.run(room.job_dir(b, room.approvals(b, (room.alice,))))
    receipt = Envelope.from_dict(first["receipt"])
    doc = room.run(room.job_dir(b, [room.approvals(b)[0], receipt]))
    assert_refused_before_decrypt(doc, "E_SIGNATURE")


def test_duplicate_json_keys_in_approval(room: Room) -> None:  # T60
    b = room.bundle(SQL, AGG)
    a = room.approvals(b)[1]
    body = a.payload.replace(b'{"bundle_digest"', b'{"decision":"revoke","bundle_digest"', 1)
    assert body != a.payload
    env = sign_envelope("approval", {}, [])
    forged = Envelope(env.payload_type, body, a.signatures)
    doc = room.run(room.job_dir(b, [room.approvals(b)[0], forged]))
    assert doc["error_code"] in ("E_SIGNATURE", "E_INPUT")
    assert_refused_before_decrypt(doc, doc["error_code"])


def test_upload_of_another_room(room: Room) -> None:  # T58
    other = Room(room.root / "other")
    crm, _ = demo_tables()
    foreign = other.upload(other.alice, "crm", crm)
    b = room.bundle(SQL, AGG)
    doc = room.run(room.job_dir(b, room.approvals(b), uploads=[foreign, room.uploads[1]]))
    assert_refused_before_decrypt(doc, "E_INPUT")


def test_upload_signed_by_non_owner(room: Room) -> None:
    from sdk.party.statements import make_upload
    from sdk.protocol.sealing import SealResult

    original = json.loads(room.uploads[0].payload)
    fake = SealResult(
        original["ciphertext_digest"],
        original["ciphertext_size"],
        0,
        original["key_commitment"],
        None,
    )  # type: ignore[arg-type]
    forged = make_upload(
        room.bob, room.manifest, room.manifest_digest, "crm", 2, 10, fake, room.attestation.digest()
    )
    b = room.bundle(SQL, AGG)
    doc = room.run(room.job_dir(b, room.approvals(b), uploads=[forged, room.uploads[1]]))
    assert_refused_before_decrypt(doc, "E_SIGNATURE")


def test_log_state_that_does_not_extend_the_checkpoint(room: Room) -> None:  # T68 / T46
    b = room.bundle(SQL, AGG)
    room.run(room.job_dir(b, room.approvals(b, (room.alice,))))
    room.run(room.job_dir(b, room.approvals(b, (room.alice,))))
    entries = list(room.log_entries)
    for bad in (
        entries[:-1],
        entries[1:],
        [entries[1], entries[0], *entries[2:]],
        entries + entries[:1],
    ):
        doc = room.run(room.job_dir(b, room.approvals(b), entries=bad), commit=False)
        assert_refused_before_decrypt(doc, "E_LOG")
        assert doc["receipt"] is None
    # an edited entry: re-encoded payload breaks its signature
    edited = dict(entries[0])
    edited["payload"] = entries[1]["payload"]
    doc = room.run(room.job_dir(b, room.approvals(b), entries=[edited, *entries[1:]]), commit=False)
    assert_refused_before_decrypt(doc, "E_LOG")


def test_checkpoint_signed_by_someone_else(room: Room) -> None:
    b = room.bundle(SQL, AGG)
    room.run(room.job_dir(b, room.approvals(b, (room.alice,))))
    cp = Envelope.from_dict(room.checkpoint or {})
    forged = sign_envelope("checkpoint", json.loads(cp.payload), [room.alice.signer])
    doc = room.run(room.job_dir(b, room.approvals(b), checkpoint=forged.to_dict()), commit=False)
    assert_refused_before_decrypt(doc, "E_LOG")


def test_secrets_not_handed_over(room: Room) -> None:
    b = room.bundle(SQL, AGG)
    doc = room.run(room.job_dir(b, room.approvals(b), secrets=False))
    assert doc == {**doc, "status": "failed", "error_code": "E_CONFIG", "receipt": None}


def test_worker_with_other_measurement_cannot_unseal(room: Room) -> None:
    from enclave.job import Job

    b = room.bundle(SQL, AGG)
    job = room.job_dir(b, room.approvals(b))
    doc = Job(job, image_id="sha256:other", isolation="none").run()
    assert doc["status"] == "failed" and doc["error_code"] == "E_ATTESTATION"


def test_attestation_not_accepted_by_manifest(room: Room) -> None:
    other = Room(room.root / "other")
    b = room.bundle(SQL, AGG)
    doc = room.run(room.job_dir(b, room.approvals(b), attestations=[other.attestation]))
    assert doc["status"] == "failed" and doc["error_code"] == "E_ATTESTATION"


def test_receipt_verifies_offline_and_tampering_fails(room: Room) -> None:  # T67
    from sdk.errors import SealroomError

    b = room.bundle(SQL, AGG)
    doc = room.run(room.job_dir(b, room.approvals(b, (room.alice,))))
    receipt = Envelope.from_dict(doc["receipt"])
    entries = [Envelope.from_dict(e) for e in room.log_entries]
    index = payload(doc)["log_index"]
    proof = merkle.inclusion_proof(log_leaf_hashes(entries), index)
    verify_receipt(
        receipt, room.manifest, [room.attestation], log_entry=entries[index], inclusion=proof
    )
    body = payload(doc)
    for field, value in (
        ("status", "succeeded"),
        ("bundle_digest", "0" * 64),
        ("log_index", index + 1),
    ):
        forged = sign_envelope("receipt", {**body, field: value}, [])
        forged = Envelope(forged.payload_type, forged.payload, receipt.signatures)
        with pytest.raises(SealroomError):
            verify_receipt(
                forged, room.manifest, [room.attestation], log_entry=entries[index], inclusion=proof
            )


def test_steps_out_of_order_are_programming_errors() -> None:
    state = TrustedJobState(now=datetime.now(UTC))
    with pytest.raises(RuntimeError):
        state.verify_bundle(sign_envelope("bundle", {}, []))
    with pytest.raises(RuntimeError):
        state.mark("decrypt")
    with pytest.raises(RuntimeError):
        state.require("budget")


def test_canonical_form_of_job_documents(room: Room) -> None:
    b = room.bundle(SQL, AGG)
    doc = room.run(room.job_dir(b, room.approvals(b, (room.alice,))), subprocess=True)
    assert doc["status"] == "refused"
    assert canonical_json(doc)
