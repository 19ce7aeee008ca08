"""The verifiers against the golden room: manifest, attestation, upload, bundle, approvals
(T53, T54, T56, T58, T59), checkpoint and log (T68), and receipts (T67)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdk.errors import (
    AttestationError,
    InputError,
    LogError,
    SealroomError,
    SignatureError,
)
from sdk.protocol import merkle
from sdk.protocol.approvals import verify_approvals
from sdk.protocol.dsse import Envelope, Signature, sign_envelope
from sdk.protocol.keys import Signer
from sdk.protocol.models import Approval, Attestation, Manifest, Measurement, Upload
from sdk.protocol.records import Checkpoint, LogEntry, Receipt
from sdk.protocol.verify import (
    log_leaf_hashes,
    verify_attestation,
    verify_bundle,
    verify_checkpoint,
    verify_log_against_checkpoint,
    verify_log_entries,
    verify_manifest,
    verify_receipt,
    verify_upload,
)
from tests.protocol.make_golden import NOW, ORIGIN, ROOM, T_EXPIRES, T_ISSUED, World, seed

Mutation = Callable[[dict[str, Any]], None]


def payload(env: Envelope) -> dict[str, Any]:
    doc = json.loads(env.payload)
    assert isinstance(doc, dict)
    return doc


def resign(env: Envelope, kind: str, signers: list[Signer], mutate: Mutation) -> Envelope:
    """The same payload with ``mutate`` applied, signed again by ``signers``."""
    doc = payload(env)
    mutate(doc)
    return sign_envelope(kind, doc, signers)


def approval(w: World, key_name: str, *, signer: Signer | None = None, **fields: Any) -> Envelope:
    key = {"alice": w.alice, "bob": w.bob, "mallory": w.mallory}[key_name]
    doc = Approval(
        ROOM, w.manifest_digest, w.bundle_digest, key_name, "approve", "ok", T_ISSUED, T_EXPIRES
    ).to_dict()
    doc.update(fields)
    return sign_envelope(Approval.KIND, doc, [signer or key.signer])


# -- manifest ---------------------------------------------------------------------------------


def test_manifest_verifies(world: World) -> None:
    m = verify_manifest(world.manifest_env, now=NOW, expected_digest=world.manifest_digest)
    assert m == world.manifest


def test_manifest_needs_every_party(world: World) -> None:
    only_alice = sign_envelope(Manifest.KIND, world.manifest.to_dict(), [world.alice.signer])
    with pytest.raises(SignatureError, match="missing: bob"):
        verify_manifest(only_alice, now=NOW)
    # a non-party's signature does not stand in for bob's
    with_mallory = sign_envelope(
        Manifest.KIND, world.manifest.to_dict(), [world.alice.signer, world.mallory.signer]
    )
    with pytest.raises(SignatureError, match="bob"):
        verify_manifest(with_mallory, now=NOW)


def test_manifest_pinned_digest_expiry_and_type(world: World) -> None:
    with pytest.raises(InputError, match="pinned"):
        verify_manifest(world.manifest_env, now=NOW, expected_digest="0" * 64)
    with pytest.raises(InputError, match="expired"):
        verify_manifest(world.manifest_env, now=NOW + timedelta(days=3650))
    as_bundle = Envelope(world.bundle_env.payload_type, world.manifest_env.payload, ())
    with pytest.raises(InputError, match="payload type"):
        verify_manifest(as_bundle, now=NOW)


def test_manifest_tampered_byte(world: World) -> None:
    body = world.manifest_env.payload.replace(b'"max_runs":10', b'"max_runs":99')
    assert body != world.manifest_env.payload
    with pytest.raises(SignatureError):
        verify_manifest(
            Envelope(world.manifest_env.payload_type, body, world.manifest_env.signatures), now=NOW
        )


def test_manifest_adding_a_party_needs_its_signature(world: World) -> None:
    """Adding mallory to the parties (signed by alice, bob and not mallory) is refused."""
    doc = world.manifest.to_dict()
    doc["parties"].append({**world.mallory.identity.to_dict(), "roles": ["analyst"]})
    env = sign_envelope(Manifest.KIND, doc, [world.alice.signer, world.bob.signer])
    with pytest.raises(SignatureError, match="mallory"):
        verify_manifest(env, now=NOW)


# -- attestation ----------------------------------------------------------------------------


def test_attestation_verifies(world: World) -> None:
    assert verify_attestation(world.attestation_env, world.manifest) == world.attestation


def test_attestation_not_by_the_platform(world: World) -> None:
    forged = sign_envelope(Attestation.KIND, world.attestation.to_dict(), [world.worker])
    with pytest.raises(AttestationError):
        verify_attestation(forged, world.manifest)


@pytest.mark.parametrize(
    "change",
    [
        {"measurement": {"image_id": "other", "code_digest": "0" * 64}},
        {"provider": "aws-nitro"},
    ],
)
def test_attestation_not_accepted(world: World, change: dict[str, Any]) -> None:
    env = resign(
        world.attestation_env, Attestation.KIND, [world.platform], lambda d: d.update(change)
    )
    with pytest.raises(AttestationError):
        verify_attestation(env, world.manifest)


def test_unisolated_worker_needs_the_manifests_consent(world: World) -> None:
    from dataclasses import replace

    strict = replace(
        world.manifest, workers=replace(world.manifest.workers, allow_unisolated=False)
    )
    with pytest.raises(AttestationError, match="unisolated"):
        verify_attestation(world.attestation_env, strict)
    no_keys = replace(world.manifest, workers=replace(world.manifest.workers, platform_keys=()))
    with pytest.raises(AttestationError):
        verify_attestation(world.attestation_env, no_keys)


# -- upload and bundle ------------------------------------------------------------------------


def test_upload_verifies(world: World) -> None:
    assert verify_upload(world.upload_env, world.manifest, world.manifest_digest) == world.upload


def test_upload_signed_by_someone_other_than_the_owner(world: World) -> None:
    by_bob = sign_envelope(Upload.KIND, world.upload.to_dict(), [world.bob.signer])
    with pytest.raises(SignatureError, match="owner"):
        verify_upload(by_bob, world.manifest, world.manifest_digest)
    by_mallory = sign_envelope(Upload.KIND, world.upload.to_dict(), [world.mallory.signer])
    with pytest.raises(SignatureError):
        verify_upload(by_mallory, world.manifest, world.manifest_digest)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"manifest_digest": "1" * 64}, "another room"),
        ({"room_id": "room2"}, "another room"),
        ({"dataset": "nope"}, "no dataset"),
        ({"schema_digest": "2" * 64}, "schema"),
    ],
)
def test_upload_bound_to_something_else(world: World, change: dict[str, Any], error: str) -> None:
    env = resign(world.upload_env, Upload.KIND, [world.alice.signer], lambda d: d.update(change))
    with pytest.raises(InputError, match=error):
        verify_upload(env, world.manifest, world.manifest_digest)


def test_bundle_verifies(world: World) -> None:
    b = verify_bundle(world.bundle_env, world.manifest, world.manifest_digest, now=NOW)
    assert b == world.bundle


def test_bundle_tampered_byte(world: World) -> None:  # T53
    env = world.bundle_env
    body = bytearray(env.payload)
    body[body.index(b"SELECT")] = ord("s")
    with pytest.raises(SignatureError):
        verify_bundle(
            Envelope(env.payload_type, bytes(body), env.signatures),
            world.manifest,
            world.manifest_digest,
            now=NOW,
        )


def test_bundle_signed_by_another_party_than_its_author(world: World) -> None:
    env = resign(world.bundle_env, "bundle", [world.bob.signer], lambda d: None)
    with pytest.raises(SignatureError, match="author"):
        verify_bundle(env, world.manifest, world.manifest_digest, now=NOW)


@pytest.mark.parametrize(
    "change",
    [
        {"manifest_digest": "1" * 64},
        {"recipients": ["alice", "mallory"]},
        {"inputs": [{"dataset": "other", "version": "latest"}]},
        {"kind": "template"},
    ],
)
def test_bundle_bound_to_something_else(world: World, change: dict[str, Any]) -> None:
    env = resign(world.bundle_env, "bundle", [world.alice.signer], lambda d: d.update(change))
    with pytest.raises(InputError):
        verify_bundle(env, world.manifest, world.manifest_digest, now=NOW)


def test_bundle_window(world: World) -> None:
    for now in (NOW - timedelta(days=1), NOW + timedelta(days=3650)):
        with pytest.raises(InputError, match="window"):
            verify_bundle(world.bundle_env, world.manifest, world.manifest_digest, now=now)


# -- approvals --------------------------------------------------------------------------------


def _approvals(w: World, envs: list[Envelope], bundle_digest: str | None = None) -> None:
    verify_approvals(envs, w.manifest, w.manifest_digest, bundle_digest or w.bundle_digest, now=NOW)


def test_approvals_in_any_order(world: World) -> None:
    result = verify_approvals(
        world.approvals[::-1], world.manifest, world.manifest_digest, world.bundle_digest, now=NOW
    )
    assert [a.party for a in result.approvals] == ["alice", "bob"]
    assert result.digests == tuple(a.digest() for a in world.approvals)


def test_n_minus_one_approvals_names_who_is_missing(world: World) -> None:  # T54
    with pytest.raises(SignatureError, match="missing from bob"):
        _approvals(world, [world.approvals[0]])
    with pytest.raises(SignatureError, match="missing from alice, bob"):
        _approvals(world, [])


def test_approval_for_another_bundle_or_manifest(world: World) -> None:  # T58
    with pytest.raises(InputError, match="another"):
        _approvals(world, world.approvals, bundle_digest="3" * 64)
    other = approval(world, "bob", manifest_digest="4" * 64)
    with pytest.raises(InputError, match="another"):
        _approvals(world, [world.approvals[0], other])
    other = approval(world, "bob", room_id="room2")
    with pytest.raises(InputError, match="another"):
        _approvals(world, [world.approvals[0], other])


def test_expired_and_future_approvals(world: World) -> None:  # T56
    expired = approval(world, "bob", expires="2026-01-01T00:00:00Z")
    with pytest.raises(SignatureError, match="bob has expired"):
        _approvals(world, [world.approvals[0], expired])
    future = approval(world, "bob", issued_at="2026-06-01T00:00:00Z")
    with pytest.raises(InputError, match="future"):
        _approvals(world, [world.approvals[0], future])


def test_revocation_wins(world: World) -> None:
    revoke = approval(world, "bob", decision="revoke", reason="changed my mind")
    with pytest.raises(SignatureError, match="revoked by bob"):
        _approvals(world, [*world.approvals, revoke])
    with pytest.raises(SignatureError, match="revoked by bob"):
        _approvals(world, [revoke, *world.approvals])


def test_approval_signed_by_someone_else_than_it_names(world: World) -> None:
    forged = approval(world, "bob", signer=world.alice.signer)
    with pytest.raises(SignatureError, match="not signed by the party"):
        _approvals(world, [world.approvals[0], forged])


def test_approval_by_a_key_not_in_the_manifest(world: World) -> None:  # T56
    with pytest.raises(SignatureError):
        _approvals(world, [world.approvals[0], approval(world, "mallory")])
    # mallory signing an approval that names bob
    with pytest.raises(SignatureError):
        _approvals(world, [world.approvals[0], approval(world, "bob", signer=world.mallory.signer)])


def test_one_approval_signed_by_both_counts_for_the_party_it_names(world: World) -> None:
    doc = payload(world.approvals[0])
    both = sign_envelope(Approval.KIND, doc, [world.alice.signer, world.bob.signer])
    with pytest.raises(SignatureError, match="missing from bob"):
        _approvals(world, [both])


def test_duplicate_approvals(world: World) -> None:  # T55
    with pytest.raises(InputError, match="two approvals"):
        _approvals(world, [world.approvals[0], *world.approvals])
    a = world.approvals[1]
    repeated = Envelope(a.payload_type, a.payload, a.signatures * 3)
    _approvals(world, [world.approvals[0], repeated])  # repeated signatures: still one approval


def test_receipt_presented_as_an_approval(world: World) -> None:  # T59
    with pytest.raises(SignatureError):
        _approvals(world, [world.approvals[0], world.receipt_env])
    # an envelope of another kind that a party did sign: wrong payload type
    with pytest.raises(InputError, match="payload type"):
        _approvals(world, [world.approvals[0], world.bundle_env])
    # the approval payload under another payload type
    a = world.approvals[1]
    retyped = Envelope(world.receipt_env.payload_type, a.payload, a.signatures)
    with pytest.raises(SignatureError):
        _approvals(world, [world.approvals[0], retyped])


def test_tampered_approval_byte(world: World) -> None:
    a = world.approvals[1]
    body = a.payload.replace(b'"approve"', b'"revoke"')
    with pytest.raises(SignatureError):
        _approvals(world, [world.approvals[0], Envelope(a.payload_type, body, a.signatures)])


def test_duplicate_json_keys_in_a_signed_approval(world: World) -> None:  # T60
    a = world.approvals[1]
    body = a.payload.replace(b'{"bundle_digest"', b'{"decision":"revoke","bundle_digest"', 1)
    from sdk.protocol.dsse import pae

    resigned = Envelope(
        a.payload_type,
        body,
        (Signature(world.bob.signer.keyid, world.bob.signer.sign(pae(a.payload_type, body))),),
    )
    with pytest.raises(InputError):
        _approvals(world, [world.approvals[0], resigned])


# -- checkpoint and log (T68) -----------------------------------------------------------------


def test_checkpoint_and_log_verify(world: World) -> None:
    cp = verify_checkpoint(world.checkpoint_env, world.worker_keys, ORIGIN)
    assert cp == world.checkpoint
    entries = verify_log_entries(world.log_entries, world.worker_keys, ROOM)
    assert [e.kind for e in entries][-1] == "run_finished"
    verify_log_against_checkpoint(world.log_entries, cp)


def test_checkpoint_of_another_log_or_signer(world: World) -> None:
    with pytest.raises(LogError, match="another log"):
        verify_checkpoint(world.checkpoint_env, world.worker_keys, "sealroom/room2/log")
    forged = sign_envelope(Checkpoint.KIND, world.checkpoint.to_dict(), [world.alice.signer])
    with pytest.raises(LogError, match="attested worker"):
        verify_checkpoint(forged, world.worker_keys, ORIGIN)


def _log_variants(w: World) -> dict[str, list[Envelope]]:
    e = w.log_entries
    edited = Envelope(
        e[2].payload_type, e[2].payload.replace(b'"approvals":2', b'"approvals":3'), e[2].signatures
    )
    resigned = resign(e[4], LogEntry.KIND, [w.worker], lambda d: d["details"].update(epsilon="0"))
    return {
        "delete entry": [*e[:2], *e[3:]],
        "swap entries": [e[0], e[2], e[1], *e[3:]],
        "duplicate entry": [*e[:3], e[2], *e[3:]],
        "truncate tail": e[:-1],
        "edit payload": [*e[:2], edited, *e[3:]],
        "re-signed edit": [*e[:4], resigned, *e[5:]],
        "foreign entry": [*e[:-1], resign(e[-1], LogEntry.KIND, [w.alice.signer], lambda d: None)],
    }


@pytest.mark.parametrize(
    "variant",
    [
        "delete entry",
        "swap entries",
        "duplicate entry",
        "truncate tail",
        "edit payload",
        "re-signed edit",
        "foreign entry",
    ],
)
def test_tampered_log_is_detected(world: World, variant: str) -> None:  # T68
    entries = _log_variants(world)[variant]
    with pytest.raises(LogError):
        verify_log_entries(entries, world.worker_keys, ROOM)
        verify_log_against_checkpoint(entries, world.checkpoint)


def test_log_entry_of_another_room(world: World) -> None:
    other = resign(
        world.log_entries[0], LogEntry.KIND, [world.worker], lambda d: d.update(room_id="room2")
    )
    with pytest.raises(LogError, match="another room"):
        verify_log_entries([other], world.worker_keys, ROOM)


def test_log_entry_of_another_type(world: World) -> None:
    with pytest.raises(InputError, match="payload type"):
        verify_log_entries([world.checkpoint_env], world.worker_keys, ROOM)


# -- receipts (T67) ---------------------------------------------------------------------------


def _verify_receipt(w: World, receipt: Envelope | None = None, **kw: Any) -> None:
    args: dict[str, Any] = {
        "log_entry": w.log_entries[w.receipt.log_index],
        "inclusion": w.inclusion,
        "outputs": {"alice": b"alice ciphertext", "bob": b"bob ciphertext"},
        "bundle_digest": w.bundle_digest,
        "manifest_digest": w.manifest_digest,
    }
    args.update(kw)
    verify_receipt(receipt or w.receipt_env, w.manifest, [w.attestation_env], **args)


def test_receipt_verifies(world: World) -> None:
    _verify_receipt(world)
    _verify_receipt(world, outputs=None, bundle_digest=None, manifest_digest=None)


def _receipt_with(w: World, mutate: Mutation) -> Envelope:
    return resign(w.receipt_env, Receipt.KIND, [w.worker], mutate)


RECEIPT_CHANGES: dict[str, tuple[Mutation, type[SealroomError]]] = {
    "output rows": (lambda d: d["outputs"][0].update(rows=3), LogError),
    "output digest": (lambda d: d["outputs"][0].update(ciphertext_digest="5" * 64), InputError),
    "epsilon charged": (lambda d: d["privacy"].update(epsilon_charged="0.1"), LogError),
    "budget left": (lambda d: d["privacy"]["budget_left"].update(crm="10"), LogError),
    "bundle digest": (lambda d: d.update(bundle_digest="6" * 64), InputError),
    "attestation digest": (lambda d: d.update(attestation_digest="7" * 64), AttestationError),
    "status": (lambda d: d.update(status="failed"), LogError),
    "inputs": (lambda d: d.update(inputs=[]), LogError),
    "match rates": (lambda d: d.update(match=[]), LogError),
    "log index": (lambda d: d.update(log_index=4), LogError),
    "checkpoint root": (lambda d: d["checkpoint"].update(root_hash="8" * 64), LogError),
    "checkpoint size": (lambda d: d["checkpoint"].update(tree_size=5), LogError),
    "manifest digest": (lambda d: d.update(manifest_digest="9" * 64), InputError),
    "room": (lambda d: d.update(room_id="room2"), InputError),
    "isolation label": (lambda d: d.update(isolation="container"), AttestationError),
}


@pytest.mark.parametrize("change", RECEIPT_CHANGES, ids=list(RECEIPT_CHANGES))
def test_receipt_changed_and_resigned_by_the_worker(world: World, change: str) -> None:  # T67
    mutate, error = RECEIPT_CHANGES[change]
    with pytest.raises(error):
        _verify_receipt(world, _receipt_with(world, mutate))


@pytest.mark.parametrize("change", RECEIPT_CHANGES, ids=list(RECEIPT_CHANGES))
def test_receipt_changed_without_resigning(world: World, change: str) -> None:  # T67
    mutate, _ = RECEIPT_CHANGES[change]
    doc = payload(world.receipt_env)
    mutate(doc)
    from sdk.protocol.canonical import canonical_json

    env = Envelope(
        world.receipt_env.payload_type, canonical_json(doc), world.receipt_env.signatures
    )
    with pytest.raises(AttestationError, match="attested worker"):
        _verify_receipt(world, env)


def test_receipt_not_signed_by_the_attested_worker(world: World) -> None:
    for signer in (world.platform, world.alice.signer):
        env = sign_envelope(Receipt.KIND, payload(world.receipt_env), [signer])
        with pytest.raises(AttestationError, match="attested worker"):
            _verify_receipt(world, env)


def test_receipt_of_a_worker_the_manifest_does_not_accept(world: World) -> None:
    from dataclasses import replace

    other = replace(
        world.manifest,
        workers=replace(world.manifest.workers, measurements=(Measurement("x", "0" * 64),)),
    )
    with pytest.raises(AttestationError):
        verify_receipt(
            world.receipt_env,
            other,
            [world.attestation_env],
            log_entry=world.log_entries[-1],
            inclusion=world.inclusion,
        )


def test_receipt_against_another_bundle_or_outputs(world: World) -> None:
    with pytest.raises(InputError, match="another bundle"):
        _verify_receipt(world, bundle_digest="a" * 64)
    with pytest.raises(InputError, match="does not match"):
        _verify_receipt(world, outputs={"alice": b"alice ciphertext!"})
    with pytest.raises(InputError, match="does not match"):
        _verify_receipt(world, outputs={"mallory": b"x"})
    with pytest.raises(InputError, match="another manifest"):
        _verify_receipt(world, manifest_digest="b" * 64)


def test_receipt_with_the_wrong_log_entry_or_proof(world: World) -> None:
    with pytest.raises(LogError):
        _verify_receipt(world, log_entry=world.log_entries[3])
    proof = list(world.inclusion)
    proof[0] = bytes(32)
    with pytest.raises(LogError):
        _verify_receipt(world, inclusion=proof)
    with pytest.raises(LogError):
        _verify_receipt(world, inclusion=world.inclusion[:-1])
    leaves = log_leaf_hashes(world.log_entries)
    with pytest.raises(LogError):
        _verify_receipt(world, inclusion=merkle.inclusion_proof(leaves, 2))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_bit_flip_in_a_receipt_fails_with_a_typed_error(
    world: World, data: st.DataObject
) -> None:
    raw = bytearray(world.receipt_env.to_json())
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= 1 << data.draw(st.integers(0, 7))
    try:
        env = Envelope.from_json(bytes(raw))
        _verify_receipt(world, env)
    except SealroomError as exc:
        assert isinstance(exc, InputError | SignatureError | AttestationError | LogError)
    else:
        assert env == world.receipt_env  # an ignored base64 padding bit: the same envelope


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_bit_flip_in_a_receipt_payload_fails(world: World, data: st.DataObject) -> None:
    """Flips inside the signed payload itself (not just the envelope's JSON)."""
    env = world.receipt_env
    raw = bytearray(env.payload)
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises((AttestationError, InputError)):
        _verify_receipt(world, Envelope(env.payload_type, bytes(raw), env.signatures))


def test_golden_seeds_are_what_the_world_uses(world: World) -> None:
    assert world.worker.public_key == Signer.from_seed(seed("worker")).public_key


def test_receipt_with_two_attestations_of_the_same_worker_key(world: World) -> None:
    """A re-attestation of the same worker key beside the one the receipt names (whichever
    digest sorts first) does not make a genuine receipt fail."""
    from dataclasses import replace

    for minute in range(60):
        again = replace(world.attestation, issued_at=f"2026-01-02T03:{minute:02d}:01Z")
        env = sign_envelope(Attestation.KIND, again.to_dict(), [world.platform])
        if env.digest() < world.attestation_env.digest():
            break
    for order in ([world.attestation_env, env], [env, world.attestation_env]):
        verify_receipt(
            world.receipt_env,
            world.manifest,
            order,
            log_entry=world.log_entries[-1],
            inclusion=world.inclusion,
        )
    # but a receipt naming an attestation that was not given is refused
    with pytest.raises(AttestationError, match="other than the one it names"):
        _verify_receipt(
            world, _receipt_with(world, lambda d: d.update(attestation_digest=env.digest()))
        )
