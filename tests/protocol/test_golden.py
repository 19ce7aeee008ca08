"""Golden vectors: regenerating them from fixed seeds and a fixed clock gives the committed bytes,
and every committed object verifies with the verifiers."""

from __future__ import annotations

import io
import json

import pytest

from sdk.errors import DecryptionError
from sdk.protocol import merkle
from sdk.protocol.approvals import verify_approvals
from sdk.protocol.dsse import Envelope, pae
from sdk.protocol.sealing import MAGIC, open_stream, read_header, upload_binding
from sdk.protocol.verify import (
    verify_attestation,
    verify_bundle,
    verify_checkpoint,
    verify_log_against_checkpoint,
    verify_log_entries,
    verify_manifest,
    verify_receipt,
    verify_upload,
)
from tests.protocol.make_golden import (
    GOLDEN_DIR,
    NOW,
    ORIGIN,
    PLAINTEXT,
    ROOM,
    SEALED_NAME,
    World,
    build,
    golden_files,
)


def load(name: str) -> bytes:
    return (GOLDEN_DIR / name).read_bytes()


def env(name: str) -> Envelope:
    return Envelope.from_json(load(name))


@pytest.mark.parametrize("name", sorted(golden_files(build())))
def test_regenerated_bytes_equal_committed(name: str) -> None:
    regenerated = golden_files(build())[name]
    assert (GOLDEN_DIR / name).exists(), f"{name} not committed: run make_golden"
    assert load(name) == regenerated, f"{name} changed: a format or signing change?"


def test_no_stray_golden_files() -> None:
    expected = set(golden_files(build())) | {
        SEALED_NAME,
        "upload.plain",
        "merkle-vectors",
        "README.md",
    }
    assert {p.name for p in GOLDEN_DIR.iterdir()} == expected


def test_pae_example_of_the_dsse_spec() -> None:
    doc = json.loads(load("pae.json"))["dsse_spec_example"]
    assert doc["pae"] == "DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    assert pae(doc["payload_type"], doc["payload"].encode()) == doc["pae"].encode()


def test_committed_envelopes_round_trip_byte_for_byte() -> None:
    for name in sorted(golden_files(build())):
        if name in {"identities.json", "pae.json", "merkle.json", "digests.json"}:
            continue
        raw = load(name)
        if name == "log-entries.json":
            for item in json.loads(raw):
                e = Envelope.from_dict(item)
                assert Envelope.from_json(e.to_json()) == e
            continue
        assert Envelope.from_json(raw).to_json() + b"\n" == raw


def test_committed_objects_verify() -> None:
    manifest_env = env("manifest.json")
    digests = json.loads(load("digests.json"))
    manifest = verify_manifest(manifest_env, now=NOW, expected_digest=digests["manifest"])
    md = manifest_env.digest()
    attestation = verify_attestation(env("attestation.json"), manifest)
    upload = verify_upload(env("upload.json"), manifest, md)
    bundle = verify_bundle(env("bundle.json"), manifest, md, now=NOW)
    approvals = verify_approvals(
        [env("approval-bob.json"), env("approval-alice.json")],
        manifest,
        md,
        env("bundle.json").digest(),
        now=NOW,
    )
    assert [a.party for a in approvals.approvals] == ["alice", "bob"]
    assert list(approvals.digests) == digests["approvals"]
    assert upload.ciphertext_digest == digests["sealed_upload"]
    assert bundle.author == "alice"
    workers = {env("attestation.json").digest(): attestation.worker_signing_key}
    checkpoint = verify_checkpoint(env("checkpoint.json"), workers, ORIGIN)
    entries = [Envelope.from_dict(e) for e in json.loads(load("log-entries.json"))]
    verify_log_entries(entries, workers, ROOM)
    verify_log_against_checkpoint(entries, checkpoint)
    tree = json.loads(load("merkle.json"))
    verified = verify_receipt(
        env("receipt.json"),
        manifest,
        [env("attestation.json")],
        log_entry=entries[tree["inclusion"]["index"]],
        inclusion=[bytes.fromhex(p) for p in tree["inclusion"]["proof"]],
        outputs={"alice": b"alice ciphertext", "bob": b"bob ciphertext"},
        bundle_digest=digests["bundle"],
    )
    assert verified.receipt.status == "succeeded"
    c = tree["consistency"]
    merkle.verify_consistency(
        c["old_size"],
        c["new_size"],
        bytes.fromhex(c["old_root"]),
        bytes.fromhex(tree["root"]),
        [bytes.fromhex(p) for p in c["proof"]],
    )


def test_committed_sealed_upload_still_opens(world: World) -> None:
    """The format of sealed files is stable: the committed one (made once) opens."""
    sealed = load(SEALED_NAME)
    assert sealed.startswith(MAGIC)
    header = read_header(io.BytesIO(sealed))
    assert header.binding == upload_binding(ROOM, world.manifest_digest, "crm", 1)
    plain = b"".join(
        open_stream(
            io.BytesIO(sealed),
            world.worker_enc,
            expected_commitment=world.upload.key_commitment,
            expected_binding=header.binding,
        )
    )
    assert plain == PLAINTEXT == load("upload.plain")
    with pytest.raises(DecryptionError):
        b"".join(open_stream(io.BytesIO(sealed), world.worker_enc, expected_commitment="0" * 64))
