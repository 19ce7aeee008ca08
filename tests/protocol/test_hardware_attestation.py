"""Hardware attestations in the protocol: the manifest's per-provider register policy, and
``verify_attestation`` running the real evidence verifiers on a worker-signed statement
(genuine AWS Nitro evidence from tests/fixtures/attestation)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sdk.errors import AttestationError, InputError
from sdk.protocol.attestation import EvidencePolicy
from sdk.protocol.attestation import nitro as nitro_module
from sdk.protocol.dsse import Envelope, sign_envelope
from sdk.protocol.keys import PartyKey, Signer
from sdk.protocol.models import Attestation, HardwarePolicy, Manifest, WorkerPolicy
from sdk.protocol.verify import verify_attestation
from tests.protocol.make_golden import World

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "attestation"
NITRO_DOC = (FIXTURES / "nitro" / "nitro_prod_dstack_nsm-qvl.bin").read_bytes()
NITRO_TIME = datetime.fromtimestamp(1766668537, UTC)
PCRS = {
    "PCR0": "5cb702954321826d7939d6da829a940d787fcf32357beb8eae1ddf33c28c17d36f3ac3ba6828fdf7edeed02889702da6",
    "PCR1": "0343b056cd8485ca7890ddd833476d78460aed2aa161548e4e26bedf321726696257d623e8805f3f605946b3d8b0c6aa",
    "PCR2": "743ea12db9aba9440a8197f7ac9aeda43cfbb1587473ff7577415ac5be116bc026dfa836db6713930474d1aa0d06b049",
}


def workers_dict(world: World, **hardware: Any) -> dict[str, Any]:
    d = world.manifest.workers.to_dict()
    d["providers"] = ["simulated", "aws-nitro"]
    d["hardware"] = hardware or {"aws-nitro": {k: [v] for k, v in PCRS.items()}}
    return d


def nitro_manifest(world: World) -> Manifest:
    return dataclasses.replace(world.manifest, workers=WorkerPolicy.from_dict(workers_dict(world)))


def statement(world: World, *, evidence: bytes = NITRO_DOC, when: datetime = NITRO_TIME,
              key: PartyKey | None = None) -> tuple[Attestation, PartyKey]:
    key = key or PartyKey.generate("worker")
    return Attestation(
        provider="aws-nitro", isolation="container",
        worker_signing_key=key.signer.public_key,
        worker_encryption_key=key.identity.encryption_key,
        measurement=world.manifest.workers.measurements[0],
        issued_at=when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        evidence=evidence,
    ), key


def signed(att: Attestation, signer: Signer) -> Envelope:
    return sign_envelope(Attestation.KIND, att.to_dict(), [signer])


# -- the manifest's policy ------------------------------------------------------------------


def test_hardware_policy_round_trips_and_is_omitted_when_unset(world: World) -> None:
    policy = WorkerPolicy.from_dict(workers_dict(world))
    assert policy.hardware_policy("aws-nitro").to_dict() == {k: [v] for k, v in PCRS.items()}
    assert WorkerPolicy.from_dict(policy.to_dict()) == policy
    assert "hardware" not in world.manifest.workers.to_dict()


@pytest.mark.parametrize(
    ("hardware", "message"),
    [
        ({"aws-nitro": {"PCR0": [PCRS["PCR0"]], "PCR1": [PCRS["PCR1"]]}}, "must pin PCR2"),
        ({"aws-nitro": {**{k: [v] for k, v in PCRS.items()}, "pcr3": ["00"]}}, "upper-case"),
        ({"aws-nitro": {**{k: [v] for k, v in PCRS.items()}, "PCR3": ["XYZ"]}}, "hex"),
        ({"aws-nitro": {**{k: [v] for k, v in PCRS.items()}, "PCR3": []}}, "hex"),
        ({"aws-nitro": {k: [v] for k, v in PCRS.items()}, "simulated": {"X": ["00"]}},
         "not a hardware provider"),
        ({"amd-sev-snp": {"MEASUREMENT": ["00" * 48]}}, "must pin POLICY"),
    ],
)
def test_hardware_policy_refuses_what_pins_too_little(
    world: World, hardware: dict[str, Any], message: str
) -> None:
    with pytest.raises(InputError, match=message):
        WorkerPolicy.from_dict(workers_dict(world, **hardware))


def test_an_accepted_hardware_provider_must_pin_its_registers(world: World) -> None:
    d = workers_dict(world)
    del d["hardware"]
    with pytest.raises(InputError, match="pins nothing"):
        WorkerPolicy.from_dict(d)


def test_statement_carries_evidence_only_for_hardware(world: World) -> None:
    att, _ = statement(world)
    again = Attestation.from_dict(att.to_dict())
    assert again == att and again.evidence == NITRO_DOC
    assert "evidence" not in world.attestation.to_dict()
    doc = world.attestation.to_dict() | {"evidence": ""}
    with pytest.raises(InputError):
        Attestation.from_dict(doc)
    doc = att.to_dict() | {"evidence": "not base64!"}
    with pytest.raises(InputError, match="base64"):
        Attestation.from_dict(doc)
    doc = att.to_dict() | {"evidence": "A" * 100_000}
    with pytest.raises(InputError, match="at most"):
        Attestation.from_dict(doc)


# -- verify_attestation runs the real verifier ---------------------------------------------


def test_genuine_evidence_is_verified_and_must_bind_the_worker_keys(world: World) -> None:
    """The genuine document passes its signature, chain and PCRs at the statement's time;
    its user_data (zeros) does not bind this worker's keys, so it is refused there."""
    att, key = statement(world)
    with pytest.raises(AttestationError) as err:
        verify_attestation(signed(att, key.signer), nitro_manifest(world))
    assert err.value.step == "report_data"


def test_evidence_is_checked_at_the_statements_time(world: World) -> None:
    att, key = statement(world, when=NITRO_TIME + timedelta(hours=4))
    with pytest.raises(AttestationError) as err:
        verify_attestation(signed(att, key.signer), nitro_manifest(world))
    assert err.value.step == "expiry"  # the leaf certificate lives 3 hours


def test_an_auditor_may_choose_the_time(world: World) -> None:
    att, key = statement(world)
    with pytest.raises(AttestationError) as err:
        verify_attestation(signed(att, key.signer), nitro_manifest(world),
                           at=NITRO_TIME + timedelta(days=1))
    assert err.value.step == "expiry"


def test_other_pcrs_are_refused(world: World) -> None:
    d = workers_dict(world)
    d["hardware"]["aws-nitro"]["PCR0"] = ["00" * 48]
    manifest = dataclasses.replace(world.manifest, workers=WorkerPolicy.from_dict(d))
    att, key = statement(world)
    with pytest.raises(AttestationError) as err:
        verify_attestation(signed(att, key.signer), manifest)
    assert err.value.step == "measurement"


def test_a_hardware_statement_must_be_signed_by_the_key_it_names(world: World) -> None:
    att, _ = statement(world)
    for signer in (PartyKey.generate("other").signer, world.platform):
        with pytest.raises(AttestationError) as err:
            verify_attestation(signed(att, signer), nitro_manifest(world))
        assert err.value.step == "signature"


def test_a_platform_key_cannot_vouch_for_hardware_and_flips_fail(world: World) -> None:
    att, key = statement(world, evidence=NITRO_DOC[:200] + bytes([NITRO_DOC[200] ^ 1]) + NITRO_DOC[201:])
    with pytest.raises(AttestationError) as err:
        verify_attestation(signed(att, key.signer), nitro_manifest(world))
    assert err.value.step in {"signature", "parse", "chain"}


def test_a_provider_the_manifest_does_not_accept(world: World) -> None:
    att, key = statement(world)
    with pytest.raises(AttestationError, match="not accepted"):
        verify_attestation(signed(att, key.signer), world.manifest)


def test_the_simulated_path_is_unchanged(world: World) -> None:
    assert verify_attestation(world.attestation_env, nitro_manifest(world)) == world.attestation


def test_hardware_policy_for_verifier() -> None:
    policy = HardwarePolicy("aws-nitro", (("PCR0", ("aa",)),)).evidence_policy(b"x")
    assert dict(policy.measurements) == {"PCR0": ("aa",)} and policy.report_data == b"x"


def test_verify_evidence_fails_closed_for_every_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever a provider module lets escape becomes one AttestationError (step parse)."""
    from sdk.protocol.attestation import verify_evidence

    def broken(*args: Any) -> Any:
        raise KeyError("a provider bug")

    monkeypatch.setattr(nitro_module, "verify", broken)
    with pytest.raises(AttestationError) as err:
        verify_evidence("aws-nitro", b"x", policy=EvidencePolicy(), now=NITRO_TIME)
    assert err.value.step == "parse" and "KeyError" in str(err.value)
