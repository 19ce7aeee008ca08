"""AMD SEV-SNP: the genuine Milan report of the fixtures, its negatives, and a synthetic
AMD-like chain for what genuine evidence cannot show (debug, bindings, key types)."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from sdk.errors import AttestationError
from sdk.protocol.attestation import (
    EvidencePolicy,
    VerifiedClaims,
    key_binding,
    snp,
    snp_roots,
    verify_evidence,
)
from sdk.protocol.attestation.x509chain import fingerprint, load_certificate
from tests.attestation import _snp_forge as forge

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "attestation" / "snp"
REPORT_HEX = (FIXTURES / "report_milan_virtee.hex").read_bytes()
REPORT = bytes.fromhex(REPORT_HEX.decode())
NEG_MEASUREMENT_HEX = (
    FIXTURES / "report_milan_virtee.NEG-measurement-byte-flipped.hex"
).read_bytes()
VCEK = (FIXTURES / "vcek_milan_virtee.der").read_bytes()
PINNED = datetime.fromtimestamp(1751624655, tz=UTC)

MEASUREMENT = (
    "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d"
    "3e1a0dc39b2c60bd95b9c480cd81841f"
)
REPORT_DATA = bytes.fromhex(
    "d447b55d197491bfe15cf298f9de9986b7a7c4be2468b4f6e2d53b71d7c64581"
    "0b0f2cdfca0040433be063fc1a8293f0f3f8dae7b79fecb3d1cd82bd6a93ebfd"
)
CHIP_ID = (
    "d49554ec717f4e5b0fe6b143bcf0405bd7ae304727edf46603f2a76aef6a3abc"
    "15d7af38db757039029f0efacfd08e244324884738c72b082e2f87a44d541eb6"
)


def verify(
    evidence: bytes,
    *,
    now: datetime = PINNED,
    policy: EvidencePolicy | None = None,
    collateral: Mapping[str, bytes] | None = None,
) -> VerifiedClaims:
    return verify_evidence(
        "amd-sev-snp",
        evidence,
        policy=policy or EvidencePolicy(),
        now=now,
        collateral={"vcek": VCEK} if collateral is None else collateral,
    )


def step_of(call: Callable[..., object], *args: object, **kwargs: object) -> str:
    """The step of the AttestationError that ``call(*args, **kwargs)`` raises."""
    with pytest.raises(AttestationError) as info:
        call(*args, **kwargs)
    assert str(info.value).startswith(f"amd-sev-snp: {info.value.step}: ")
    return info.value.step


def flipped(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[offset] ^= mask
    return bytes(out)


def with_u32(data: bytes, offset: int, value: int) -> bytes:
    out = bytearray(data)
    out[offset : offset + 4] = value.to_bytes(4, "little")
    return bytes(out)


# --- the genuine Milan report ---------------------------------------------------------------


def test_genuine_hex_report_verifies_with_the_readme_values() -> None:
    claims = verify(REPORT_HEX)
    assert claims.provider == "amd-sev-snp"
    assert claims.measurements["MEASUREMENT"] == MEASUREMENT
    assert claims.measurements["POLICY"] == "0000000000030000"
    assert claims.measurements["VMPL"] == "00000000"
    assert claims.measurements["HOST_DATA"] == "00" * 32
    assert claims.measurements["ID_KEY_DIGEST"] == "00" * 48
    assert claims.report_data == (REPORT_DATA,)
    assert claims.platform == {
        "product": "Milan",
        "chip_id": CHIP_ID,
        "reported_tcb": "7308000000000003",
        "version": "2",
    }
    assert claims.debug is False
    assert claims.issued_at is None


@pytest.mark.parametrize(
    "evidence",
    [REPORT, REPORT_HEX.lower(), b"  " + REPORT_HEX[:100] + b"\r\n\t" + REPORT_HEX[100:] + b"\n"],
    ids=["binary", "lowercase-hex", "hex-with-whitespace"],
)
def test_genuine_report_encodings_verify(evidence: bytes) -> None:
    assert verify(evidence) == verify(REPORT_HEX)


def test_genuine_report_passes_a_policy_pinning_measurement_and_report_data() -> None:
    policy = EvidencePolicy(
        measurements={"MEASUREMENT": ("00" * 48, MEASUREMENT.upper())}, report_data=REPORT_DATA
    )
    assert verify(REPORT, policy=policy).measurements["MEASUREMENT"] == MEASUREMENT


def test_genuine_report_against_other_pins() -> None:
    assert step_of(lambda: verify(REPORT, policy=EvidencePolicy({"MEASUREMENT": ("00",)}))) == (
        "measurement"
    )
    assert step_of(lambda: verify(REPORT, policy=EvidencePolicy({"RTMR0": (MEASUREMENT,)}))) == (
        "measurement"
    )
    policy = EvidencePolicy(report_data=bytes(64))
    assert step_of(lambda: verify(REPORT, policy=policy)) == "report_data"


def test_neg_measurement_flipped_file_fails_the_signature() -> None:
    assert step_of(lambda: verify(NEG_MEASUREMENT_HEX)) == "signature"


@pytest.mark.parametrize(
    "when", [datetime(2031, 1, 1, tzinfo=UTC), datetime(2022, 1, 1, tzinfo=UTC)]
)
def test_vcek_outside_its_validity_is_expiry(when: datetime) -> None:
    assert step_of(lambda: verify(REPORT, now=when)) == "expiry"


def test_naive_time_is_refused() -> None:
    naive = datetime(2025, 7, 4)  # noqa: DTZ001
    assert step_of(lambda: snp.verify(REPORT, EvidencePolicy(), naive, {"vcek": VCEK})) == "expiry"


# --- collateral -----------------------------------------------------------------------------


def _pem(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_pinned_ask_and_ark_as_collateral_pass_pem_or_der() -> None:
    ask = load_certificate(_pem("ask_milan.pem"), provider="t", what="ask")
    verify(
        REPORT,
        collateral={"vcek": VCEK, "ask": _pem("ask_milan.pem"), "ark": _pem("ark_milan.pem")},
    )
    verify(REPORT, collateral={"vcek": VCEK, "ask": ask.public_bytes(Encoding.DER)})


@pytest.mark.parametrize(
    ("collateral", "step"),
    [
        ({}, "collateral"),
        ({"ask": _pem("ask_milan.pem")}, "collateral"),
        ({"vcek": VCEK, "crl": b"x"}, "collateral"),
        ({"vcek": b"not a certificate"}, "parse"),
        ({"vcek": b""}, "parse"),
        ({"vcek": VCEK[:-10]}, "parse"),
        ({"vcek": VCEK, "ask": b"\x30\x03\x02\x01\x00"}, "parse"),
        ({"vcek": VCEK, "ask": snp_roots.ASK_GENOA_PEM.encode()}, "chain"),
        ({"vcek": VCEK, "ask": _pem("ark_milan.pem")}, "chain"),
        ({"vcek": VCEK, "ark": snp_roots.ARK_TURIN_PEM.encode()}, "chain"),
        ({"vcek": _pem("ask_milan.pem")}, "chain"),  # the ASK is not issued by an ASK
    ],
    ids=[
        "none",
        "no-vcek",
        "unknown-name",
        "vcek-not-certificate",
        "vcek-empty",
        "vcek-truncated",
        "ask-not-certificate",
        "ask-of-genoa",
        "ark-as-ask",
        "ark-of-turin",
        "ask-as-vcek",
    ],
)
def test_bad_collateral(collateral: dict[str, bytes], step: str) -> None:
    assert step_of(lambda: verify(REPORT, collateral=collateral)) == step


def test_flip_in_vcek_signature_is_chain() -> None:
    assert step_of(lambda: verify(REPORT, collateral={"vcek": flipped(VCEK, len(VCEK) - 10)})) == (
        "chain"
    )


# --- the report's own bytes -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("evidence", "step"),
    [
        (flipped(REPORT, snp.OFF_REPORT_DATA + 63), "signature"),
        (flipped(REPORT, snp.OFF_MEASUREMENT + 7), "signature"),
        (flipped(REPORT, snp.OFF_POLICY + 1), "signature"),
        (flipped(REPORT, snp.OFF_POLICY + 2, 0x08), "signature"),  # the debug bit
        (flipped(REPORT, snp.OFF_CHIP_ID), "signature"),
        (flipped(REPORT, snp.OFF_SIGNATURE_R), "signature"),
        (flipped(REPORT, snp.OFF_SIGNATURE_S + 47), "signature"),
        (flipped(REPORT, snp.OFF_SIGNATURE_S + 60), "signature"),  # above 384 bits
        (flipped(REPORT, snp.REPORT_SIZE - 1), "signature"),  # unsigned reserved tail
        (with_u32(REPORT, snp.OFF_SIGNATURE_ALGO, 2), "algorithm"),
        (with_u32(REPORT, snp.OFF_SIGNATURE_ALGO, 0), "algorithm"),
        (with_u32(REPORT, snp.OFF_VERSION, 1), "parse"),
        (with_u32(REPORT, snp.OFF_VERSION, 6), "parse"),
        (REPORT[:-1], "parse"),
        (REPORT + b"\x00", "parse"),
        (b"", "parse"),
        (REPORT_HEX[:-1], "parse"),
        (REPORT_HEX + b"0", "parse"),
        (REPORT_HEX[:-2] + b"0g", "parse"),
        (REPORT_HEX[:-2] + "0é".encode(), "parse"),
        (REPORT * 56, "size"),
    ],
    ids=[
        "report-data",
        "measurement",
        "policy",
        "policy-debug-bit",
        "chip-id",
        "signature-r",
        "signature-s",
        "signature-s-high",
        "signature-reserved",
        "algo-2",
        "algo-0",
        "version-1",
        "version-6",
        "truncated",
        "one-byte-more",
        "empty",
        "hex-short",
        "hex-long",
        "hex-non-digit",
        "hex-non-ascii",
        "over-the-cap",
    ],
)
def test_altered_report(evidence: bytes, step: str) -> None:
    assert step_of(lambda: verify(evidence)) == step


def test_versions_2_to_5_parse() -> None:
    for version in (2, 3, 4, 5):
        assert snp.parse_report(with_u32(REPORT, snp.OFF_VERSION, version)).version == version


def test_fuzzed_reports_raise_only_attestation_errors() -> None:
    rng = random.Random(20250704)
    for _ in range(300):
        data = bytearray(REPORT)
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] ^= rng.randint(1, 255)
        assert step_of(lambda: verify(bytes(data))) in {"parse", "algorithm", "signature"}


def test_random_inputs_raise_only_attestation_errors() -> None:
    rng = random.Random(7)
    samples = [rng.randbytes(n) for n in (0, 1, 100, snp.REPORT_SIZE, snp.REPORT_HEX_SIZE)]
    samples += [b"0" * snp.REPORT_HEX_SIZE, b"\x00" * snp.REPORT_SIZE]
    for sample in samples:
        step_of(lambda: verify(sample))
        step_of(lambda: verify(REPORT, collateral={"vcek": sample}))


# --- the pinned AMD roots -------------------------------------------------------------------


@pytest.mark.parametrize("product", sorted(snp.BUILTIN_ROOTS))
def test_builtin_roots_are_pinned_self_signed_and_sign_their_ask(product: str) -> None:
    roots = snp.BUILTIN_ROOTS[product]
    ark = x509.load_pem_x509_certificate(roots.ark)
    ask = x509.load_pem_x509_certificate(roots.ask)
    assert fingerprint(ark) == roots.ark_sha256
    assert fingerprint(ask) == roots.ask_sha256
    assert ark.subject == ark.issuer
    assert ark.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == f"ARK-{product}"
    assert ask.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == f"SEV-{product}"
    ark.verify_directly_issued_by(ark)
    ask.verify_directly_issued_by(ark)
    for certificate in (ark, ask):
        assert certificate.signature_algorithm_parameters == forge.PSS_SHA384
        assert isinstance(certificate.signature_hash_algorithm, hashes.SHA384)
        key = certificate.public_key()
        assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 4096
    assert roots.turin_layout == (product == "Turin")


def test_builtin_milan_roots_are_the_fixtures() -> None:
    assert snp.BUILTIN_ROOTS["Milan"].ark == _pem("ark_milan.pem")
    assert snp.BUILTIN_ROOTS["Milan"].ask == _pem("ask_milan.pem")
    assert snp.BUILTIN_ROOTS["Milan"].ark_sha256 == (
        "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd"
    )
    assert snp.BUILTIN_ROOTS["Milan"].ask_sha256 == (
        "67d303bd3905fd38db8b20e0793699870e7fa612eaad5dec358293fd8c0bac1b"
    )


def test_a_root_whose_text_is_not_its_pin_fails_closed() -> None:
    milan = snp.BUILTIN_ROOTS["Milan"]
    for roots in (
        snp.ProductRoots(milan.ark, milan.ask, "00" * 32, milan.ask_sha256),
        snp.ProductRoots(milan.ark, milan.ask, milan.ark_sha256, "00" * 32),
    ):
        call = lambda r=roots: snp.verify_report(  # noqa: E731
            REPORT, EvidencePolicy(), PINNED, {"vcek": VCEK}, roots={"Milan": r}
        )
        assert step_of(call) == "chain"


# --- a synthetic AMD-like chain -------------------------------------------------------------


@dataclass(frozen=True)
class World:
    milan: forge.Forge
    turin: forge.Forge
    stranger: rsa.RSAPrivateKey
    vcek_key: ec.EllipticCurvePrivateKey
    vcek: bytes


@pytest.fixture(scope="module")
def world() -> World:
    ark_key, ask_key, stranger = (rsa.generate_private_key(65537, 2048) for _ in range(3))
    milan = forge.Forge.create(ark_key, ask_key)
    vcek_key = ec.generate_private_key(ec.SECP384R1())
    vcek = forge.vcek_certificate(vcek_key, ask_key, milan.ask_name)
    return World(milan, forge.Forge.create(ark_key, ask_key, turin=True), stranger, vcek_key, vcek)


def synthetic(
    world: World,
    evidence: bytes,
    *,
    vcek: bytes | None = None,
    policy: EvidencePolicy | None = None,
    product: forge.Forge | None = None,
) -> VerifiedClaims:
    return snp.verify_report(
        evidence,
        policy or EvidencePolicy(),
        forge.NOW,
        {"vcek": world.vcek if vcek is None else vcek},
        roots=(product or world.milan).roots(),
    )


def test_synthetic_report_verifies(world: World) -> None:
    claims = synthetic(world, forge.report(world.vcek_key, version=5, vmpl=2))
    assert claims.measurements["MEASUREMENT"] == forge.MEASUREMENT.hex()
    assert claims.measurements["GUEST_SVN"] == "00000007"
    assert claims.measurements["VMPL"] == "00000002"
    assert claims.measurements["FAMILY_ID"] == (b"F" * 16).hex()
    assert claims.measurements["IMAGE_ID"] == (b"I" * 16).hex()
    assert claims.platform == {
        "product": "Milan",
        "chip_id": forge.CHIP_ID.hex(),
        "reported_tcb": forge.TCB[::-1].hex(),
        "version": "5",
    }


def test_synthetic_report_fails_against_the_real_amd_roots(world: World) -> None:
    evidence = forge.report(world.vcek_key)
    assert step_of(lambda: verify(evidence, collateral={"vcek": world.vcek})) == "chain"


def test_debug_policy_is_refused(world: World) -> None:
    evidence = forge.report(world.vcek_key, policy=0x30000 | 1 << snp.POLICY_DEBUG_BIT)
    assert step_of(lambda: synthetic(world, evidence)) == "debug"


def test_chip_id_other_than_the_vcek_hwid_is_chain(world: World) -> None:
    evidence = forge.report(world.vcek_key, chip_id=bytes(64))
    assert step_of(lambda: synthetic(world, evidence)) == "chain"
    evidence = forge.report(world.vcek_key, chip_id=flipped(forge.CHIP_ID, 63))
    assert step_of(lambda: synthetic(world, evidence)) == "chain"


@pytest.mark.parametrize(
    "hwid",
    [None, forge.CHIP_ID[:63], forge.CHIP_ID + b"\x00", forge.CHIP_ID[::-1]],
    ids=["missing", "short", "long", "other"],
)
def test_vcek_without_the_report_hwid_is_chain(world: World, hwid: bytes | None) -> None:
    vcek = forge.vcek_certificate(
        world.vcek_key, world.milan.ask_key, world.milan.ask_name, hwid=hwid
    )
    assert step_of(lambda: synthetic(world, forge.report(world.vcek_key), vcek=vcek)) == "chain"


def test_der_wrapped_hwid_is_accepted(world: World) -> None:
    hwid = bytes((0x04, 64)) + forge.CHIP_ID
    vcek = forge.vcek_certificate(
        world.vcek_key, world.milan.ask_key, world.milan.ask_name, hwid=hwid
    )
    synthetic(world, forge.report(world.vcek_key), vcek=vcek)


@pytest.mark.parametrize("index", [0, 1, 6, 7], ids=["bootloader", "tee", "snp", "microcode"])
def test_reported_tcb_other_than_the_vcek_is_tcb(world: World, index: int) -> None:
    evidence = forge.report(world.vcek_key, reported_tcb=flipped(forge.TCB, index))
    assert step_of(lambda: synthetic(world, evidence)) == "tcb"


def test_vcek_with_missing_or_malformed_tcb_extension_is_tcb(world: World) -> None:
    evidence = forge.report(world.vcek_key)
    complete = forge.tcb_extensions(forge.TCB)
    for tcb in (
        {k: v for k, v in complete.items() if k != "3.8"},
        {**complete, "3.3": 300},
    ):
        vcek = forge.vcek_certificate(
            world.vcek_key, world.milan.ask_key, world.milan.ask_name, tcb=tcb
        )
        assert step_of(synthetic, world, evidence, vcek=vcek) == "tcb"


def test_pinned_measurement_mismatch_is_measurement(world: World) -> None:
    policy = EvidencePolicy(measurements={"MEASUREMENT": ("22" * 48,)})
    assert step_of(lambda: synthetic(world, forge.report(world.vcek_key), policy=policy)) == (
        "measurement"
    )
    policy = EvidencePolicy(
        measurements={"MEASUREMENT": (forge.MEASUREMENT.hex(),), "VMPL": ("00000000",)}
    )
    synthetic(world, forge.report(world.vcek_key), policy=policy)


def test_key_binding_in_report_data(world: World) -> None:
    binding = key_binding(b"s" * 32, b"e" * 32)
    evidence = forge.report(world.vcek_key, report_data=binding)
    assert synthetic(world, evidence, policy=EvidencePolicy(report_data=binding)).report_data == (
        binding,
    )
    other = EvidencePolicy(report_data=key_binding(b"s" * 32, b"E" * 32))
    assert step_of(lambda: synthetic(world, evidence, policy=other)) == "report_data"


def test_vcek_signed_by_an_unrelated_key_is_chain(world: World) -> None:
    vcek = forge.vcek_certificate(world.vcek_key, world.stranger, world.milan.ask_name)
    assert step_of(lambda: synthetic(world, forge.report(world.vcek_key), vcek=vcek)) == "chain"


def test_report_signed_by_another_key_is_signature(world: World) -> None:
    evidence = forge.report(ec.generate_private_key(ec.SECP384R1()))
    assert step_of(lambda: synthetic(world, evidence)) == "signature"


def test_p256_vcek_is_algorithm(world: World) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    vcek = forge.vcek_certificate(key, world.milan.ask_key, world.milan.ask_name)
    assert step_of(lambda: synthetic(world, forge.report(world.vcek_key), vcek=vcek)) == "algorithm"


@pytest.mark.parametrize(
    ("hash_algorithm", "rsa_padding"),
    [
        (hashes.SHA384(), padding.PKCS1v15()),
        (hashes.SHA256(), padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)),
        (hashes.SHA384(), padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=32)),
    ],
    ids=["pkcs1v15", "pss-sha256", "pss-salt-32"],
)
def test_vcek_link_other_than_pss_sha384_is_algorithm(
    world: World,
    hash_algorithm: hashes.SHA256 | hashes.SHA384,
    rsa_padding: padding.PSS | padding.PKCS1v15,
) -> None:
    vcek = forge.vcek_certificate(
        world.vcek_key,
        world.milan.ask_key,
        world.milan.ask_name,
        hash_algorithm=hash_algorithm,
        rsa_padding=rsa_padding,
    )
    assert step_of(lambda: synthetic(world, forge.report(world.vcek_key), vcek=vcek)) == "algorithm"


def test_turin_layout_tcb_and_eight_byte_hwid(world: World) -> None:
    turin = world.turin
    vcek = forge.vcek_certificate(
        world.vcek_key,
        turin.ask_key,
        turin.ask_name,
        hwid=forge.TURIN_CHIP_ID[:8],
        tcb=forge.tcb_extensions(forge.TURIN_TCB, turin=True),
    )

    def run(
        chip_id: bytes = forge.TURIN_CHIP_ID, reported_tcb: bytes = forge.TURIN_TCB
    ) -> VerifiedClaims:
        evidence = forge.report(world.vcek_key, chip_id=chip_id, reported_tcb=reported_tcb)
        return synthetic(world, evidence, vcek=vcek, product=turin)

    assert run().platform["product"] == "Turin"
    for index in (0, 1, 2, 3, 7):  # fmc, bootloader, tee, snp, microcode
        assert step_of(run, reported_tcb=flipped(forge.TURIN_TCB, index)) == "tcb"
    assert step_of(lambda: run(chip_id=flipped(forge.TURIN_CHIP_ID, 9))) == "chain"
    assert step_of(lambda: run(chip_id=flipped(forge.TURIN_CHIP_ID, 0))) == "chain"
    # a Milan-layout VCEK (64-byte hwID, no FMC) under a Turin ASK
    milan_like = forge.vcek_certificate(world.vcek_key, turin.ask_key, turin.ask_name)
    evidence = forge.report(world.vcek_key)
    assert step_of(lambda: synthetic(world, evidence, vcek=milan_like, product=turin)) == "chain"
