"""The operator's side of hardware provisioning (coordinator.worker.parse_provision_output):
a worker-signed statement whose evidence binds its keys is accepted, verified now; a
simulated statement when hardware was asked for, or evidence for other keys, is refused."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from coordinator import worker as coordinator_worker
from coordinator.worker import parse_provision_output
from enclave import worker_keys
from enclave.evidence import collect_evidence
from enclave.worker_keys import WorkerKeys, make_attestation, make_hardware_attestation
from sdk.errors import AttestationError
from sdk.protocol.attestation import nitro
from sdk.protocol.keys import Signer
from sdk.protocol.models import Measurement
from tests.attestation import _nitro_forge as forge
from tests.enclave.test_evidence import nsm_for

MEASUREMENT = Measurement("sha256:" + "cd" * 32, "ef" * 32)
PLATFORM = b"\x07" * 32


def document(envelope: Any) -> bytes:
    return json.dumps({"status": "succeeded", "attestation": envelope.to_dict(),
                       "sealed_worker_key": base64.b64encode(b"s" * 60).decode()}).encode()


@pytest.fixture()
def forged_nitro(monkeypatch: pytest.MonkeyPatch) -> forge.Pki:
    pki = forge.make_pki("coordinator")
    monkeypatch.setattr(nitro, "AWS_NITRO_ROOT_G1_SHA256", pki.fingerprint)
    monkeypatch.setattr(worker_keys, "now", lambda: forge.T0.strftime("%Y-%m-%dT%H:%M:%SZ"))
    monkeypatch.setattr(coordinator_worker, "clock_now", lambda: forge.T0)
    return pki


def test_a_hardware_statement_is_verified_now(forged_nitro: forge.Pki) -> None:
    keys = WorkerKeys.generate()
    envelope = make_hardware_attestation(
        keys, "aws-nitro", MEASUREMENT, "container",
        lambda p, d: collect_evidence(p, d, nsm=nsm_for(forged_nitro)))
    platform = Signer.from_seed(PLATFORM).public_key
    _, attestation, sealed = parse_provision_output(
        document(envelope), platform, MEASUREMENT.image_id, "container", "aws-nitro")
    assert attestation.provider == "aws-nitro" and sealed == b"s" * 60
    with pytest.raises(AttestationError, match="not signed by this platform"):  # simulated
        parse_provision_output(document(envelope), platform, MEASUREMENT.image_id, "container")


def test_a_simulated_statement_when_hardware_was_asked_for(forged_nitro: forge.Pki) -> None:
    envelope = make_attestation(WorkerKeys.generate(), PLATFORM, MEASUREMENT, "container")
    with pytest.raises(AttestationError):
        parse_provision_output(document(envelope), Signer.from_seed(PLATFORM).public_key,
                               MEASUREMENT.image_id, "container", "aws-nitro")


def test_evidence_for_other_keys_is_refused(forged_nitro: forge.Pki) -> None:
    keys, other = WorkerKeys.generate(), WorkerKeys.generate()
    stolen = make_hardware_attestation(
        other, "aws-nitro", MEASUREMENT, "container",
        lambda p, d: collect_evidence(p, bytes(64), nsm=nsm_for(forged_nitro)))
    with pytest.raises(AttestationError) as err:
        parse_provision_output(document(stolen), Signer.from_seed(PLATFORM).public_key,
                               MEASUREMENT.image_id, "container", "aws-nitro")
    assert "provisioning" in str(err.value) or err.value.step == "report_data"
    assert keys != other
