"""Build the protocol's golden vectors from fixed seeds and a fixed clock.

    python -m tests.protocol.make_golden          # rewrite tests/fixtures/golden/*
    python -m tests.protocol.make_golden --check  # exit 1 when the committed files differ

Everything is deterministic (Ed25519 signatures are) except sealing, whose data key, file id
and sealed-box ephemeral key are random: ``upload-sealed.bin`` is made once, committed, and from
then on only *read* (its digest and key commitment feed the upload statement). The test
``test_golden.py`` rebuilds every other file in memory and compares bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nacl.public import PrivateKey

from sdk.protocol import merkle
from sdk.protocol.canonical import canonical_json
from sdk.protocol.dsse import Envelope, pae, payload_type, sign_envelope
from sdk.protocol.keys import PartyKey, Signer
from sdk.protocol.models import (
    Approval,
    Attestation,
    Bundle,
    BundleInput,
    Column,
    Dataset,
    Manifest,
    Measurement,
    Party,
    Upload,
    WorkerPolicy,
)
from sdk.protocol.records import (
    Checkpoint,
    InputRecord,
    LogEntry,
    MatchRecord,
    OutputRecord,
    PrivacyRecord,
    Receipt,
)
from sdk.protocol.sealing import open_stream, read_header, seal_bytes, upload_binding
from sdk.protocol.spec import DPSpec, GroupKey, Measure, OutputSpec
from sdk.protocol.verify import log_leaf_hashes, receipt_core_digest

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "golden"
SEALED_NAME = "upload-sealed.bin"
PLAINTEXT = b"uid,converted,spend\n" + b"".join(
    b"u%04d,%d,%d.5\n" % (i, i % 2, i) for i in range(200)
)

#: the fixed clock of every vector
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
T_NOW = "2026-01-02T03:04:05Z"
T_ISSUED = "2026-01-02T03:00:00Z"
T_EXPIRES = "2027-01-01T00:00:00Z"
ROOM = "room1"
ORIGIN = f"sealroom/{ROOM}/log"


def seed(label: str) -> bytes:
    """A fixed 32-byte seed: SHA-256 of the label."""
    return hashlib.sha256(label.encode()).digest()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class World:
    """Every key and signed object of the golden room, in dependency order."""

    alice: PartyKey
    bob: PartyKey
    mallory: PartyKey
    platform: Signer
    worker: Signer
    worker_enc: PrivateKey
    manifest: Manifest
    manifest_env: Envelope
    attestation: Attestation
    attestation_env: Envelope
    sealed: bytes
    upload: Upload
    upload_env: Envelope
    bundle: Bundle
    bundle_env: Envelope
    approvals: list[Envelope]
    log_entries: list[Envelope]
    checkpoint: Checkpoint
    checkpoint_env: Envelope
    receipt: Receipt
    receipt_env: Envelope
    inclusion: list[bytes]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def manifest_digest(self) -> str:
        return self.manifest_env.digest()

    @property
    def bundle_digest(self) -> str:
        return self.bundle_env.digest()

    @property
    def worker_keys(self) -> dict[str, bytes]:
        return {self.attestation_env.digest(): self.worker.public_key}


def parties() -> tuple[PartyKey, PartyKey, PartyKey]:
    return (
        PartyKey.from_seeds("alice", seed("alice"), seed("alice-encryption")),
        PartyKey.from_seeds("bob", seed("bob"), seed("bob-encryption")),
        PartyKey.from_seeds("mallory", seed("mallory"), seed("mallory-encryption")),
    )


def make_manifest(alice: PartyKey, bob: PartyKey, platform: Signer) -> Manifest:
    roles = ("data_owner", "analyst", "recipient")
    return Manifest(
        room_id=ROOM,
        version=1,
        parties=(Party(alice.identity, roles), Party(bob.identity, roles)),
        datasets=(
            Dataset(
                name="crm",
                owner="alice",
                schema=(
                    Column("uid", "string"),
                    Column("converted", "int"),
                    Column("spend", "float"),
                ),
                id_column="uid",
                id_kind="sha256",
                min_group_size=5,
                epsilon_budget="10",
                delta_budget="0.000001",
                roles=(("converted", "measure"), ("spend", "measure")),
                allow_custom_code=True,
            ),
            Dataset(
                name="visits",
                owner="bob",
                schema=(Column("uid", "string"), Column("segment", "string")),
                id_column="uid",
                id_kind="sha256",
                min_group_size=5,
                epsilon_budget="10",
                roles=(("segment", "dimension"),),
                allow_custom_code=True,
            ),
        ),
        workers=WorkerPolicy(
            measurements=(Measurement("sha256:" + "ab" * 32, digest(b"worker code")),),
            providers=("simulated",),
            platform_keys=(platform.public_key,),
            allow_unisolated=True,
        ),
        default_min_group_size=5,
        default_max_runs=10,
        expires=T_EXPIRES,
    )


def _log(worker: Signer, kind: str, subject: str, details: dict[str, Any]) -> Envelope:
    entry = LogEntry(ROOM, kind, "run-1", subject, details, T_NOW)
    return sign_envelope(LogEntry.KIND, entry.to_dict(), [worker])


def _sealed_fixture(worker_public: bytes, binding: dict[str, Any], golden_dir: Path) -> bytes:
    """The committed sealed upload, made once (sealing is randomized)."""
    path = golden_dir / SEALED_NAME
    if path.exists():
        return path.read_bytes()
    sealed, _ = seal_bytes(PLAINTEXT, worker_public, binding)
    return sealed


def key_commitment_of(sealed: bytes, worker_enc: PrivateKey) -> tuple[str, bytes]:
    """(key commitment, plaintext) of a sealed file, recomputed with the worker's key."""
    from nacl.public import SealedBox

    from sdk.protocol.sealing import key_commitment

    header = read_header(io.BytesIO(sealed))
    data_key = SealedBox(worker_enc).decrypt(header.wrapped_key)
    plain = b"".join(open_stream(io.BytesIO(sealed), worker_enc))
    return key_commitment(data_key, header.file_id), plain


def build(golden_dir: Path = GOLDEN_DIR) -> World:
    """Build the whole golden room deterministically (given the committed sealed file)."""
    alice, bob, mallory = parties()
    platform = Signer.from_seed(seed("platform"))
    worker = Signer.from_seed(seed("worker"))
    worker_enc = PrivateKey(seed("worker-encryption"))
    manifest = make_manifest(alice, bob, platform)
    manifest_env = sign_envelope(Manifest.KIND, manifest.to_dict(), [alice.signer, bob.signer])
    manifest_digest = manifest_env.digest()

    attestation = Attestation(
        provider="simulated",
        isolation="none",
        worker_signing_key=worker.public_key,
        worker_encryption_key=bytes(worker_enc.public_key),
        measurement=manifest.workers.measurements[0],
        issued_at=T_ISSUED,
    )
    attestation_env = sign_envelope(Attestation.KIND, attestation.to_dict(), [platform])

    binding = upload_binding(ROOM, manifest_digest, "crm", 1)
    sealed = _sealed_fixture(bytes(worker_enc.public_key), binding, golden_dir)
    commitment, _ = key_commitment_of(sealed, worker_enc)
    upload = Upload(
        room_id=ROOM,
        manifest_digest=manifest_digest,
        dataset="crm",
        version=1,
        schema_digest=manifest.dataset("crm").schema_digest(),
        row_count=200,
        ciphertext_digest=digest(sealed),
        ciphertext_size=len(sealed),
        key_commitment=commitment,
        attestation_digest=attestation_env.digest(),
        created_at=T_ISSUED,
    )
    upload_env = sign_envelope(Upload.KIND, upload.to_dict(), [alice.signer])

    bundle = Bundle(
        room_id=ROOM,
        manifest_digest=manifest_digest,
        sequence=1,
        author="alice",
        title="conversions by segment",
        purpose="measure campaign lift \u2014 golden vector \U0001f600",
        kind="sql",
        code="SELECT v.segment, c.uid, c.converted FROM crm c JOIN visits v USING (uid)",
        template=None,
        params={"limit": 10, "flag": True, "names": ["a", "b"], "none": None},
        inputs=(BundleInput("crm", 1, upload_env.digest()),
                BundleInput("visits", follow_latest=True)),
        output=OutputSpec(
            mode="aggregate",
            privacy_unit="uid",
            group_by=(GroupKey("segment", ("s1", "s2")),),
            measures=(Measure("conversions", "converted", "sum", "0", "1"),),
            max_contributions=1,
            min_group_size=10,
            dp=DPSpec("0.5", "0.000001"),
        ),
        recipients=("alice", "bob"),
        max_runs=3,
        not_before=T_ISSUED,
        expires=T_EXPIRES,
    )
    bundle_env = sign_envelope(Bundle.KIND, bundle.to_dict(), [alice.signer])
    bundle_digest = bundle_env.digest()

    approvals = [
        sign_envelope(
            Approval.KIND,
            Approval(
                ROOM, manifest_digest, bundle_digest, key.name, "approve", "ok", T_ISSUED, T_EXPIRES,
                ("visits",) if key.name == "bob" else (),
            ).to_dict(),
            [key.signer],
        )
        for key in (alice, bob)
    ]

    outputs = (
        OutputRecord("alice", digest(b"alice output"), digest(b"alice ciphertext"), 2),
        OutputRecord("bob", digest(b"bob output"), digest(b"bob ciphertext"), 2),
    )
    placeholder = Checkpoint("", 0, "0" * 64, "1970-01-01T00:00:00Z")
    receipt = Receipt(
        room_id=ROOM,
        manifest_digest=manifest_digest,
        run_id="run-1",
        bundle_digest=bundle_digest,
        approval_digests=tuple(a.digest() for a in approvals),
        inputs=(InputRecord("crm", 1, upload.row_count, upload_env.digest()),),
        match=(MatchRecord("crm", "alice", "0.5"), MatchRecord("visits", "bob", None)),
        outputs=outputs,
        privacy=PrivacyRecord("aggregate", 10, "depends on code review", "0.5", "0.000001",
                              {"crm": "9.5"}),
        attestation_digest=attestation_env.digest(),
        attestation="simulated",
        isolation="none",
        status="succeeded",
        error_code=None,
        timings_ms={},
        log_index=0,
        checkpoint=placeholder,
        details={"note": "golden"},
    )
    log_entries = [
        _log(worker, "manifest_accepted", manifest_digest, {}),
        _log(worker, "upload_consumed", upload_env.digest(), {"dataset": "crm", "version": 1}),
        _log(worker, "bundle_approved", bundle_digest, {"approvals": 2}),
        _log(worker, "run_started", bundle_digest, {}),
        _log(worker, "budget_charged", bundle_digest, {"dataset": "crm", "epsilon": "0.5"}),
        _log(
            worker,
            "run_finished",
            bundle_digest,
            {"status": "succeeded", "receipt_core": receipt_core_digest(receipt)},
        ),
    ]
    index = len(log_entries) - 1
    leaves = log_leaf_hashes(log_entries)
    checkpoint = Checkpoint(ORIGIN, len(leaves), merkle.root(leaves).hex(), T_NOW)
    checkpoint_env = sign_envelope(Checkpoint.KIND, checkpoint.to_dict(), [worker])
    receipt = replace(
        receipt, log_index=index, checkpoint=checkpoint, timings_ms={"run": 12, "total": 34}
    )
    receipt_env = sign_envelope(Receipt.KIND, receipt.to_dict(), [worker])
    return World(
        alice=alice,
        bob=bob,
        mallory=mallory,
        platform=platform,
        worker=worker,
        worker_enc=worker_enc,
        manifest=manifest,
        manifest_env=manifest_env,
        attestation=attestation,
        attestation_env=attestation_env,
        sealed=sealed,
        upload=upload,
        upload_env=upload_env,
        bundle=bundle,
        bundle_env=bundle_env,
        approvals=approvals,
        log_entries=log_entries,
        checkpoint=checkpoint,
        checkpoint_env=checkpoint_env,
        receipt=receipt,
        receipt_env=receipt_env,
        inclusion=merkle.inclusion_proof(leaves, index),
    )


def _json_file(value: object) -> bytes:
    return canonical_json(value) + b"\n"


def golden_files(world: World) -> dict[str, bytes]:
    """The deterministic golden files: name → exact bytes."""
    w = world
    leaves = log_leaf_hashes(w.log_entries)
    old = 3
    files = {
        "identities.json": _json_file(
            {
                "seeds": "signing seed = SHA-256(name), encryption seed = SHA-256(name + "
                "'-encryption'); platform = SHA-256('platform'), worker = SHA-256('worker'), "
                "worker encryption = SHA-256('worker-encryption')",
                "parties": [k.identity.to_dict() for k in (w.alice, w.bob, w.mallory)],
                "keyids": {k.name: k.identity.keyid for k in (w.alice, w.bob, w.mallory)},
                "platform": w.platform.public_key.hex(),
                "worker": w.worker.public_key.hex(),
                "worker_encryption": bytes(w.worker_enc.public_key).hex(),
            }
        ),
        "pae.json": _json_file(
            {
                "dsse_spec_example": {
                    "payload_type": "http://example.com/HelloWorld",
                    "payload": "hello world",
                    "pae": pae("http://example.com/HelloWorld", b"hello world").decode(),
                },
                "approval_alice": {
                    "payload_type": payload_type(Approval.KIND),
                    "pae_sha256": digest(pae(payload_type(Approval.KIND), w.approvals[0].payload)),
                },
            }
        ),
        "manifest.json": w.manifest_env.to_json() + b"\n",
        "attestation.json": w.attestation_env.to_json() + b"\n",
        "upload.json": w.upload_env.to_json() + b"\n",
        "bundle.json": w.bundle_env.to_json() + b"\n",
        "approval-alice.json": w.approvals[0].to_json() + b"\n",
        "approval-bob.json": w.approvals[1].to_json() + b"\n",
        "log-entries.json": _json_file([e.to_dict() for e in w.log_entries]),
        "checkpoint.json": w.checkpoint_env.to_json() + b"\n",
        "receipt.json": w.receipt_env.to_json() + b"\n",
        "merkle.json": _json_file(
            {
                "leaf_hashes": [h.hex() for h in leaves],
                "root": merkle.root(leaves).hex(),
                "inclusion": {
                    "index": w.receipt.log_index,
                    "tree_size": len(leaves),
                    "proof": [p.hex() for p in w.inclusion],
                },
                "consistency": {
                    "old_size": old,
                    "old_root": merkle.root(leaves[:old]).hex(),
                    "new_size": len(leaves),
                    "proof": [p.hex() for p in merkle.consistency_proof(leaves, old)],
                },
            }
        ),
        "digests.json": _json_file(
            {
                "manifest": w.manifest_digest,
                "attestation": w.attestation_env.digest(),
                "upload": w.upload_env.digest(),
                "bundle": w.bundle_digest,
                "approvals": [a.digest() for a in w.approvals],
                "checkpoint": w.checkpoint_env.digest(),
                "receipt": w.receipt_env.digest(),
                "receipt_core": receipt_core_digest(w.receipt),
                "schema_crm": w.manifest.dataset("crm").schema_digest(),
                "sealed_upload": digest(w.sealed),
            }
        ),
    }
    return files


def write(golden_dir: Path = GOLDEN_DIR) -> list[str]:
    """Write every golden file (and the sealed fixture when missing); return what changed."""
    golden_dir.mkdir(parents=True, exist_ok=True)
    world = build(golden_dir)
    files = {SEALED_NAME: world.sealed, "upload.plain": PLAINTEXT, **golden_files(world)}
    changed = []
    for name, data in sorted(files.items()):
        path = golden_dir / name
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
            changed.append(name)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    if args.check:
        world = build()
        bad = [
            n for n, data in golden_files(world).items() if (GOLDEN_DIR / n).read_bytes() != data
        ]
        print("golden vectors differ: " + ", ".join(bad) if bad else "golden vectors match")
        return 1 if bad else 0
    changed = write()
    print("wrote " + (", ".join(changed) if changed else "nothing (unchanged)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
