"""Collecting hardware evidence (enclave.evidence) with fake TEE interfaces, and the whole
hardware provisioning statement verified by the real verifier: a fake Nitro Secure Module
returns a document signed by a throwaway CA (pinned in place of the AWS root for the test),
whose user_data must be the worker's key binding."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path
from typing import Any

import cbor2
import pytest

from enclave import evidence, worker_keys
from enclave.evidence import collect_evidence, snp_certificates
from enclave.worker_keys import WorkerKeys, make_hardware_attestation
from sdk.errors import AttestationError
from sdk.protocol.attestation import key_binding, nitro
from sdk.protocol.models import Measurement, WorkerPolicy
from sdk.protocol.verify import verify_attestation
from tests.attestation import _nitro_forge as forge
from tests.protocol.make_golden import World, build


@pytest.fixture(scope="module")
def world() -> World:
    return build()

BINDING = bytes(range(64))


def fake_tsm(monkeypatch: pytest.MonkeyPatch, provider: str, outblob: bytes, auxblob: bytes = b"",
             *, generation_changes: bool = False) -> list[Path]:
    made: list[Path] = []

    def new_entry(root: Path) -> Path:
        entry = root / f"entry{len(made)}"
        entry.mkdir()
        (entry / "provider").write_bytes(provider.encode() + b"\n")
        (entry / "generation").write_bytes(b"1\n")
        (entry / "outblob").write_bytes(outblob)
        if auxblob:
            (entry / "auxblob").write_bytes(auxblob)
        made.append(entry)
        return entry

    real_read = evidence._read
    reads = {"n": 0}

    def read(path: Path) -> bytes:
        if path.name == "generation" and generation_changes:
            reads["n"] += 1
            return str(reads["n"]).encode()
        return real_read(path)

    def remove(entry: Path) -> None:
        for child in entry.iterdir():
            child.unlink()
        entry.rmdir()

    monkeypatch.setattr(evidence, "_new_entry", new_entry)
    monkeypatch.setattr(evidence, "_remove_entry", remove)
    monkeypatch.setattr(evidence, "_read", read)
    return made


def cert_table(entries: dict[str, bytes]) -> bytes:
    guids = {name: guid for guid, name in evidence.SNP_CERT_GUIDS.items()}
    header_size = 24 * (len(entries) + 1)
    header, body = b"", b""
    for name, data in entries.items():
        guid = guids.get(name, uuid.UUID(int=7))
        header += guid.bytes_le + (header_size + len(body)).to_bytes(4, "little") + len(data).to_bytes(4, "little")
        body += data
    return header + bytes(24) + body


def test_snp_report_and_certificates_through_configfs_tsm(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    made = fake_tsm(monkeypatch, "sev_guest", b"R" * 1184,
                    cert_table({"vcek": b"V" * 10, "ask": b"A" * 5, "other": b"x"}))
    report, collateral = collect_evidence("amd-sev-snp", BINDING, tsm_root=tmp_path)
    assert report == b"R" * 1184 and collateral == {"vcek": b"V" * 10, "ask": b"A" * 5}
    assert (made[0] / "inblob").exists() is False  # the entry is removed afterwards
    assert not made[0].exists()


def test_tdx_quote_through_configfs_tsm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made = fake_tsm(monkeypatch, "tdx_guest", b"Q" * 5000)
    assert collect_evidence("intel-tdx", BINDING, tsm_root=tmp_path) == (b"Q" * 5000, {})
    assert not made[0].exists()


def test_the_report_data_is_written_to_inblob(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written: dict[str, bytes] = {}
    made = fake_tsm(monkeypatch, "tdx_guest", b"Q")
    real_remove = evidence._remove_entry

    def remove(entry: Path) -> None:
        written["inblob"] = (entry / "inblob").read_bytes()
        real_remove(entry)

    monkeypatch.setattr(evidence, "_remove_entry", remove)
    collect_evidence("intel-tdx", BINDING, tsm_root=tmp_path)
    assert written["inblob"] == BINDING and made


@pytest.mark.parametrize(
    ("provider", "tee", "changes", "step"),
    [
        ("amd-sev-snp", "tdx_guest", False, "parse"),  # another TEE than the one asked for
        ("intel-tdx", "tdx_guest", True, "parse"),  # a concurrent writer
    ],
)
def test_tsm_refusals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, provider: str, tee: str,
                      changes: bool, step: str) -> None:
    made = fake_tsm(monkeypatch, tee, b"Q", generation_changes=changes)
    with pytest.raises(AttestationError) as err:
        collect_evidence(provider, BINDING, tsm_root=tmp_path)
    assert err.value.step == step and not made[0].exists()


def test_not_a_tee(tmp_path: Path) -> None:
    with pytest.raises(AttestationError, match="not a confidential VM"):
        collect_evidence("intel-tdx", BINDING, tsm_root=tmp_path / "absent")
    with pytest.raises(AttestationError, match="64 bytes"):
        collect_evidence("intel-tdx", b"short", tsm_root=tmp_path)
    with pytest.raises(AttestationError, match="not a hardware provider"):
        collect_evidence("simulated", BINDING, tsm_root=tmp_path)


def test_malformed_certificate_tables() -> None:
    with pytest.raises(AttestationError) as err:
        snp_certificates(cert_table({"vcek": b"V"})[:24])  # no terminator
    assert err.value.step == "collateral"
    bad = bytearray(cert_table({"vcek": b"V"}))
    bad[16:20] = (10_000).to_bytes(4, "little")
    with pytest.raises(AttestationError, match="out of range"):
        snp_certificates(bytes(bad))


def nsm_for(pki: forge.Pki) -> Any:
    def nsm(request: bytes) -> bytes:
        asked = cbor2.loads(request)["Attestation"]
        assert asked["nonce"] is None and asked["public_key"] is None
        document = forge.sign(forge.fields(pki, user_data=asked["user_data"]), pki.leaf_key)
        return cbor2.dumps({"Attestation": {"document": document}})

    return nsm


def test_nitro_provisioning_end_to_end_through_the_real_verifier(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki = forge.make_pki("provision")
    monkeypatch.setattr(nitro, "AWS_NITRO_ROOT_G1_SHA256", pki.fingerprint)
    monkeypatch.setattr(worker_keys, "now", lambda: forge.T0.strftime("%Y-%m-%dT%H:%M:%SZ"))
    keys = WorkerKeys.generate()
    measurement = world.manifest.workers.measurements[0]
    envelope = make_hardware_attestation(
        keys, "aws-nitro", measurement, "container",
        lambda provider, data: collect_evidence(provider, data, nsm=nsm_for(pki)),
    )
    pcrs = {f"PCR{i}": [(bytes([i]) * 48).hex()] for i in range(3)}
    workers = world.manifest.workers.to_dict() | {"providers": ["aws-nitro"],
                                                  "hardware": {"aws-nitro": pcrs}}
    manifest = dataclasses.replace(world.manifest, workers=WorkerPolicy.from_dict(workers))
    attestation = verify_attestation(envelope, manifest)
    assert attestation.worker_signing_key == keys.signer.public_key
    assert attestation.measurement == measurement and attestation.provider == "aws-nitro"

    # the same evidence for other keys does not verify: the binding is checked
    other = WorkerKeys.generate()
    stolen = make_hardware_attestation(
        other, "aws-nitro", measurement, "container",
        lambda provider, data: (collect_evidence(provider, key_binding(
            keys.signer.public_key, keys.encryption_public), nsm=nsm_for(pki))[0], {}),
    )
    with pytest.raises(AttestationError) as err:
        verify_attestation(stolen, manifest)
    assert err.value.step == "report_data"

    # without the test root pinned, it is the genuine AWS root that must sign
    monkeypatch.undo()
    with pytest.raises(AttestationError) as err:
        verify_attestation(envelope, manifest)
    assert err.value.step == "chain"
    assert isinstance(measurement, Measurement)


def test_a_malformed_nsm_response() -> None:
    for response in (b"\xff", cbor2.dumps({"Error": "InvalidArgument"}), cbor2.dumps([1])):
        with pytest.raises(AttestationError, match="NSM"):
            collect_evidence("aws-nitro", BINDING, nsm=lambda request, r=response: r)
