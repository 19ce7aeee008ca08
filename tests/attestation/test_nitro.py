"""The AWS Nitro Enclaves verifier: genuine documents, tampering, forged fields, fuzzing.

Genuine fixtures and their pinned times are described in tests/fixtures/attestation/README.md.
Forged documents (tests/attestation/_nitro_forge.py) are signed by a throwaway CA and verified
through ``nitro.verify_document`` with that CA's root pinned instead of AWS's.
"""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from sdk.errors import AttestationError
from sdk.protocol.attestation import (
    STEPS,
    EvidencePolicy,
    VerifiedClaims,
    key_binding,
    nitro,
    verify_evidence,
    x509chain,
)
from sdk.protocol.attestation.claims import MAX_EVIDENCE_BYTES
from tests.attestation import _nitro_forge as forge

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "attestation" / "nitro"
PROD = (FIXTURES / "nitro_prod_dstack_nsm-qvl.bin").read_bytes()
PROD_NEG_SIG = (FIXTURES / "nitro_prod_dstack_nsm-qvl.NEG-sig-byte-flipped.bin").read_bytes()
DEBUG = (FIXTURES / "nitro_debug_blindai.cbor").read_bytes()
PROD_TIME = datetime.fromtimestamp(1766668537, UTC)
DEBUG_TIME = datetime.fromtimestamp(1679495307, UTC)
LEAF_NOT_BEFORE = datetime(2025, 12, 25, 13, 15, 34, tzinfo=UTC)

# The dstack wrapper of PROD: 00 02 + compact length, the COSE_Sign1, then dstack's own fields:
# runtime events (none), 64 bytes of report data, and the config string (compact length + text).
COSE = slice(4, 4531)
WRAPPER_REPORT_DATA = range(4532, 4596)
WRAPPER_CONFIG_TEXT = range(4598, 4682)

PCRS = {
    "PCR0": "5cb702954321826d7939d6da829a940d787fcf32357beb8eae1ddf33c28c17d36f3ac3ba6828fdf7edeed02889702da6",
    "PCR1": "0343b056cd8485ca7890ddd833476d78460aed2aa161548e4e26bedf321726696257d623e8805f3f605946b3d8b0c6aa",
    "PCR2": "743ea12db9aba9440a8197f7ac9aeda43cfbb1587473ff7577415ac5be116bc026dfa836db6713930474d1aa0d06b049",
    "PCR4": "7b3574ad9b7e88ec8335e8ce967315fac77218441e97eea9795de704d7f2678d0b298ecda39b544c1689669f48cba5e8",
}
NO_POLICY = EvidencePolicy()


def verify(
    evidence: bytes, now: datetime = PROD_TIME, policy: EvidencePolicy = NO_POLICY
) -> VerifiedClaims:
    return verify_evidence("aws-nitro", evidence, policy=policy, now=now)


def step_of(evidence: bytes, now: datetime = PROD_TIME, policy: EvidencePolicy = NO_POLICY) -> str:
    with pytest.raises(AttestationError) as info:
        verify(evidence, now, policy)
    assert str(info.value).startswith(f"aws-nitro: {info.value.step}: ")
    return info.value.step


def forged_step(evidence: bytes, pki: forge.Pki, policy: EvidencePolicy = NO_POLICY) -> str:
    with pytest.raises(AttestationError) as info:
        nitro.verify_document(evidence, policy, forge.T0, roots={pki.fingerprint})
    return info.value.step


def flip(data: bytes, index: int, mask: int = 0x01) -> bytes:
    return data[:index] + bytes([data[index] ^ mask]) + data[index + 1 :]


def prod_payload() -> dict[str, Any]:
    payload: dict[str, Any] = cbor2.loads(cbor2.loads(PROD[COSE])[2])
    return payload


# --- the pinned root -------------------------------------------------------------------------


def test_embedded_root_is_the_pinned_aws_root() -> None:
    embedded = x509.load_pem_x509_certificate(nitro.AWS_NITRO_ROOT_G1_PEM.encode())
    shipped = x509.load_pem_x509_certificate(
        (FIXTURES / "AWS_NitroEnclaves_Root-G1.pem").read_bytes()
    )
    assert embedded == shipped
    assert x509chain.fingerprint(embedded) == nitro.AWS_NITRO_ROOT_G1_SHA256
    assert nitro.AWS_NITRO_ROOT_G1_SHA256 == (
        "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"
    )
    assert prod_payload()["cabundle"][0] == embedded.public_bytes(Encoding.DER)


# --- genuine documents -----------------------------------------------------------------------


def test_genuine_prod_document_verifies_at_its_pinned_time() -> None:
    claims = verify(PROD)
    assert claims.provider == "aws-nitro"
    for register, value in PCRS.items():
        assert claims.measurements[register] == value
    assert sorted(claims.measurements) == sorted(f"PCR{i}" for i in range(16))
    assert all(claims.measurements[f"PCR{i}"] == "00" * 48 for i in (3, *range(5, 16)))
    assert claims.platform == {
        "module_id": "i-0827e799ec9232d44-enc019b55a68bd2ed4b",
        "digest": "SHA384",
    }
    assert claims.issued_at == datetime(2025, 12, 25, 13, 15, 37, 578000, tzinfo=UTC)
    assert claims.report_data == (bytes(64), b"")  # user_data, then public_key (absent)
    assert claims.debug is False


def test_genuine_prod_document_passes_a_pinning_policy() -> None:
    policy = EvidencePolicy(
        measurements={r: (PCRS[r],) for r in ("PCR0", "PCR1", "PCR2")}, report_data=bytes(64)
    )
    assert verify(PROD, policy=policy).measurements["PCR0"] == PCRS["PCR0"]
    upper = EvidencePolicy(measurements={"PCR0": ("x" * 96, PCRS["PCR0"].upper())})
    verify(PROD, policy=upper)  # one accepted value of several, compared case-insensitively


def test_the_bare_and_the_tagged_cose_of_the_prod_document_verify() -> None:
    assert verify(PROD[COSE]) == verify(PROD)
    assert verify(b"\xd2" + PROD[COSE]) == verify(PROD)


def test_prod_document_expired_four_hours_later_and_not_yet_valid_before() -> None:
    assert step_of(PROD, PROD_TIME + timedelta(hours=4)) == "expiry"
    assert step_of(PROD, LEAF_NOT_BEFORE - timedelta(seconds=1)) == "expiry"
    verify(PROD, LEAF_NOT_BEFORE)


def test_a_naive_time_is_refused() -> None:
    naive = PROD_TIME.replace(tzinfo=None)
    with pytest.raises(AttestationError) as info:
        verify(PROD, naive)
    assert info.value.step == "expiry"
    with pytest.raises(AttestationError) as info:
        nitro.verify_document(PROD, NO_POLICY, naive, roots={nitro.AWS_NITRO_ROOT_G1_SHA256})
    assert info.value.step == "expiry"


def test_shipped_negative_signature_file_fails_the_signature() -> None:
    assert step_of(PROD_NEG_SIG) == "signature"


def test_debug_document_is_cryptographically_valid_but_refused() -> None:
    assert step_of(DEBUG, DEBUG_TIME) == "debug"
    claims = nitro._signed_claims(DEBUG, DEBUG_TIME, roots={nitro.AWS_NITRO_ROOT_G1_SHA256})
    assert claims.debug is True
    assert claims.report_data == (b"hello, world!", b"my super secret key")
    assert claims.measurements["PCR4"] == (
        "77bbaf8092c4ff65c8fa065ffa6024ffc9dd5d8e97cc2db6f28a568f9427e3ff1a3fd305931f689663412615fc15a759"
    )
    assert claims.platform["module_id"] == "i-0592d6788f2a6df5f-enc018709b898cd0326"
    assert claims.issued_at == datetime(2023, 3, 22, 14, 28, 27, 405000, tzinfo=UTC)
    assert step_of(DEBUG, DEBUG_TIME + timedelta(hours=4)) == "expiry"  # time before policy


# --- policy ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "step"),
    [
        (EvidencePolicy(measurements={"PCR0": ("00" * 48,)}), "measurement"),
        (EvidencePolicy(measurements={"PCR9": ("11" * 48,)}), "measurement"),
        (EvidencePolicy(measurements={"PCR16": ("00" * 48,)}), "measurement"),  # not present
        (EvidencePolicy(report_data=key_binding(bytes(32), bytes(32))), "report_data"),
        (EvidencePolicy(report_data=bytes(63)), "report_data"),
    ],
)
def test_policy_mismatches(policy: EvidencePolicy, step: str) -> None:
    assert step_of(PROD, policy=policy) == step


# --- tampering with the genuine file -----------------------------------------------------------


def test_flip_in_the_payload_fails_the_signature() -> None:
    at = PROD.index(b"i-0827e799ec9232d44-enc")
    assert step_of(flip(PROD, at + 3)) == "signature"
    pcr0 = PROD.index(bytes.fromhex(PCRS["PCR0"]))
    assert step_of(flip(PROD, pcr0 + 10)) == "signature"
    assert step_of(flip(PROD, PROD.index(b"user_data") + 12)) == "signature"  # user_data bytes


def test_flips_in_the_protected_header() -> None:
    header = PROD.index(b"\x44\xa1\x01\x38\x22")
    assert step_of(flip(PROD, header + 4)) == "algorithm"  # -35 -> -36
    assert step_of(flip(PROD, header + 3, 0x20)) == "algorithm"  # -35 -> +34
    for offset in range(5):
        assert step_of(flip(PROD, header + offset)) in {"algorithm", "parse"}


def test_flip_in_the_leaf_certificate_fails_the_chain() -> None:
    leaf = prod_payload()["certificate"]
    at = PROD.index(leaf)
    for offset in (20, 150, 300, len(leaf) - 20):
        assert step_of(flip(PROD, at + offset)) in {"chain", "parse"}
    assert step_of(flip(PROD, at + 150)) == "chain"  # inside the subject: DER still valid


def test_flip_in_the_root_fails_the_chain() -> None:
    root = prod_payload()["cabundle"][0]
    at = PROD.index(root)
    for offset in (15, 250, len(root) - 10):  # serial, public key, signature
        assert step_of(flip(PROD, at + offset)) == "chain"
    for offset in range(len(root)):  # every byte: the loader's own exceptions are mapped too
        assert step_of(flip(PROD, at + offset)) in {"chain", "parse"}


def test_truncation_trailing_bytes_size_and_empty() -> None:
    for length in (0, 1, 3, 4, 100, 4530, 4531, 4600, len(PROD) - 1):
        assert step_of(PROD[:length]) == "parse"
    assert step_of(PROD + b"\x00") == "parse"
    assert step_of(PROD[COSE] + b"\x00") == "parse"
    assert step_of(DEBUG + b"\x00") == "parse"
    assert step_of(b"\xd2" + DEBUG + b"\xf6") == "parse"
    assert step_of(b"") == "parse"
    oversized = PROD + bytes(MAX_EVIDENCE_BYTES)
    assert step_of(oversized) == "size"
    with pytest.raises(AttestationError) as info:
        nitro.verify_document(
            oversized, NO_POLICY, PROD_TIME, roots={nitro.AWS_NITRO_ROOT_G1_SHA256}
        )
    assert info.value.step == "size"


def test_the_dstack_wrapper_is_parsed_exactly() -> None:
    assert len(PROD) == 4682 and PROD[:4] == bytes.fromhex("0002bd46")  # (4527 << 2) | 1
    assert PROD[4531] == 0 and PROD[4596:4598] == bytes.fromhex("5101")  # no events; 84 bytes
    assert PROD[WRAPPER_CONFIG_TEXT.start :].startswith(b'{"os_image_hash":')
    assert step_of(b"\x00\x03" + PROD[2:]) == "parse"  # another TEE variant
    assert step_of(b"\x01" + PROD[1:]) == "parse"  # another version
    for delta in (-2, -1, 1, 12):  # the declared COSE length, off by delta
        length = ((len(PROD[COSE]) + delta) << 2 | 1).to_bytes(2, "little")
        assert step_of(PROD[:2] + length + PROD[4:]) == "parse"
    assert step_of(PROD[:2] + b"\xbe\x46\x00\x00" + PROD[4:]) == "parse"  # 4-byte, not canonical
    assert step_of(PROD[:4531] + b"\x04" + PROD[4532:]) == "parse"  # one runtime event, garbage
    assert step_of(PROD[:4598] + b"\xff" + PROD[4599:]) == "parse"  # config not UTF-8
    # the wrapper's own fields are not signed by Nitro: they are parsed, never trusted
    assert verify(PROD[:4532] + b"\x55" * 64 + PROD[4596:]) == verify(PROD)
    event = b"\x10boot" + b"\x08ab"  # name "boot", payload b"ab"
    assert verify(PROD[:4531] + b"\x04" + event + PROD[4532:]) == verify(PROD)
    declared = (len(PROD[COSE]) + 7) << 2 | 1  # a COSE with trailing bytes inside the wrapper
    wrapped = PROD[:2] + declared.to_bytes(2, "little") + PROD[COSE] + bytes(7) + PROD[4531:]
    assert step_of(wrapped) == "parse"


# --- forged documents ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki() -> forge.Pki:
    return forge.make_pki()


def forged(pki: forge.Pki, policy: EvidencePolicy = NO_POLICY, **overrides: Any) -> VerifiedClaims:
    evidence = forge.sign(forge.fields(pki, **overrides), pki.leaf_key)
    return nitro.verify_document(evidence, policy, forge.T0, roots={pki.fingerprint})


def test_forged_document_signed_by_a_pinned_synthetic_ca_verifies(pki: forge.Pki) -> None:
    claims = forged(pki)
    assert claims.measurements["PCR3"] == "03" * 48
    assert claims.issued_at == forge.T0
    assert claims.debug is False
    tagged = forge.sign(forge.fields(pki), pki.leaf_key, tagged=True)
    assert nitro.verify_document(tagged, NO_POLICY, forge.T0, roots={pki.fingerprint}) == claims


def test_forged_document_is_not_trusted_by_the_public_verifier(pki: forge.Pki) -> None:
    assert step_of(forge.sign(forge.fields(pki), pki.leaf_key), forge.T0) == "chain"
    with pytest.raises(AttestationError) as info:  # and the genuine file under the synthetic root
        nitro.verify_document(PROD, NO_POLICY, PROD_TIME, roots={pki.fingerprint})
    assert info.value.step == "chain"


def test_forged_document_with_another_algorithm(pki: forge.Pki) -> None:
    for alg in (-7, -36, -8, 1):  # ES256, ES512, EdDSA, A128GCM
        assert forged_step(forge.sign(forge.fields(pki), pki.leaf_key, alg=alg), pki) == "algorithm"
    payload = cbor2.dumps(forge.fields(pki))
    extra = cbor2.dumps([cbor2.dumps({1: -35, 4: b"kid"}), {}, payload, bytes(96)])
    assert forged_step(extra, pki) == "parse"
    unprotected = cbor2.dumps([cbor2.dumps({1: -35}), {1: -7}, payload, bytes(96)])
    assert forged_step(unprotected, pki) == "parse"
    short = cbor2.dumps([cbor2.dumps({1: -35}), {}, payload, bytes(64)])
    assert forged_step(short, pki) == "parse"
    duplicate = cbor2.dumps([bytes.fromhex("a2 01 38 22 01 26"), {}, payload, bytes(96)])
    assert forged_step(duplicate, pki) == "parse"
    boolean = cbor2.dumps([bytes.fromhex("a1 f5 38 22"), {}, payload, bytes(96)])  # {true: -35}
    assert forged_step(boolean, pki) == "parse"


def test_forged_document_with_swapped_certificates(pki: forge.Pki) -> None:
    intermediate = forge.der(pki.intermediate)
    # the intermediate as the leaf, after itself in the chain: not issued by itself
    assert (
        forged_step(forge.sign(forge.fields(pki, certificate=intermediate), pki.leaf_key), pki)
        == "chain"
    )
    # the intermediate as the leaf, right after the root: the chain holds, the key does not sign
    swapped = forge.fields(pki, certificate=intermediate, cabundle=[forge.der(pki.root)])
    assert forged_step(forge.sign(swapped, pki.leaf_key), pki) == "signature"
    # cabundle[0] is not the pinned root
    no_root = forge.fields(pki, cabundle=[intermediate])
    assert forged_step(forge.sign(no_root, pki.leaf_key), pki) == "chain"
    aws_root = forge.fields(pki, cabundle=[prod_payload()["cabundle"][0], intermediate])
    assert forged_step(forge.sign(aws_root, pki.leaf_key), pki) == "chain"
    # a leaf issued by an unrelated CA
    other = forge.make_pki("unrelated")
    foreign = forge.fields(pki, certificate=forge.der(other.leaf))
    assert forged_step(forge.sign(foreign, other.leaf_key), pki) == "chain"
    # PEM instead of DER
    pem = forge.fields(pki, certificate=pki.leaf.public_bytes(Encoding.PEM))
    assert forged_step(forge.sign(pem, pki.leaf_key), pki) == "parse"


@pytest.mark.parametrize("kind", ["rsa", "p256"])
def test_forged_document_with_a_leaf_key_other_than_p384(kind: str) -> None:
    pki = forge.make_pki("weak leaf", kind)
    assert forged_step(forge.sign(forge.fields(pki), pki.leaf_key), pki) == "algorithm"


def test_forged_document_expiry(pki: forge.Pki) -> None:
    evidence = forge.sign(forge.fields(pki), pki.leaf_key)
    with pytest.raises(AttestationError) as info:
        nitro.verify_document(
            evidence, NO_POLICY, forge.T0 + timedelta(hours=3), roots={pki.fingerprint}
        )
    assert info.value.step == "expiry"


@pytest.mark.parametrize(
    "overrides",
    [
        {"digest": "SHA256"},
        {"digest": b"SHA384"},
        {"pcrs": {i: bytes(32) for i in range(16)}},
        {"pcrs": {**{i: bytes([1]) * 48 for i in range(16)}, 5: bytes(32)}},
        {"pcrs": {i: bytes([1]) * 48 for i in range(1, 16)}},  # no PCR0
        {"pcrs": {**{i: bytes([1]) * 48 for i in range(16)}, 32: bytes(48)}},
        {"pcrs": {**{i: bytes([1]) * 48 for i in range(16)}, "16": bytes(48)}},
        {"pcrs": [bytes(48)] * 16},
        {"module_id": forge.DROP},
        {"module_id": ""},
        {"module_id": b"i-0123"},
        {"timestamp": forge.DROP},
        {"timestamp": -1},
        {"timestamp": 0},
        {"timestamp": 1.5e12},
        {"timestamp": True},
        {"timestamp": 1 << 62},  # past year 9999
        {"certificate": forge.DROP},
        {"certificate": "MII..."},
        {"cabundle": []},
        {"cabundle": b"not a list"},
        {"cabundle": ["text"]},
        {"user_data": bytes(1025)},
        {"user_data": "text"},
        {"public_key": bytes(1025)},
        {"nonce": bytes(1025)},
        {"nonce": 7},
        {"extra": b"unknown field"},
    ],
)
def test_forged_document_with_malformed_fields(pki: forge.Pki, overrides: dict[str, Any]) -> None:
    assert forged_step(forge.sign(forge.fields(pki, **overrides), pki.leaf_key), pki) == "parse"


def test_forged_payload_structure(pki: forge.Pki) -> None:
    def step(payload: bytes) -> str:
        return forged_step(forge.sign(payload, pki.leaf_key), pki)

    assert step(cbor2.dumps([1, 2])) == "parse"
    assert step(cbor2.dumps(forge.fields(pki)) + b"\x00") == "parse"
    integer_key: dict[Any, Any] = {**forge.fields(pki), 1: 2}
    assert step(cbor2.dumps(integer_key)) == "parse"
    duplicate = cbor2.dumps(forge.fields(pki))
    duplicate = bytes([duplicate[0] + 1]) + duplicate[1:] + cbor2.dumps("nonce") + b"\xf6"
    assert step(duplicate) == "parse"


def test_forged_indefinite_length_payload_verifies(pki: forge.Pki) -> None:
    items = b"".join(cbor2.dumps(k) + cbor2.dumps(v) for k, v in forge.fields(pki).items())
    evidence = forge.sign(b"\xbf" + items + b"\xff", pki.leaf_key)
    assert nitro.verify_document(evidence, NO_POLICY, forge.T0, roots={pki.fingerprint})


def test_forged_key_binding_in_public_key(pki: forge.Pki) -> None:
    binding = key_binding(bytes(range(32)), bytes(range(32, 64)))
    claims = forged(pki, EvidencePolicy(report_data=binding), public_key=binding, user_data=None)
    assert claims.report_data == (b"", binding)
    assert (
        forged(pki, EvidencePolicy(report_data=binding), user_data=binding).report_data[0]
        == binding
    )
    with pytest.raises(AttestationError) as info:
        forged(pki, EvidencePolicy(report_data=binding))
    assert info.value.step == "report_data"


def test_forged_debug_document_is_refused(pki: forge.Pki) -> None:
    pcrs = {i: bytes(48) if i < 3 else bytes([i]) * 48 for i in range(16)}
    with pytest.raises(AttestationError) as info:
        forged(pki, pcrs=pcrs)
    assert info.value.step == "debug"
    pcrs[2] = bytes([2]) * 48  # PCR0 and PCR1 zero alone is not debug mode
    assert forged(pki, pcrs=pcrs).debug is False


# --- fuzzing -----------------------------------------------------------------------------------


def test_random_flips_and_truncations_raise_only_attestation_errors() -> None:
    """A flip anywhere but the wrapper's unsigned fields fails; a flip in the wrapper's report
    data is ignored, one in its config text is ignored unless it breaks the UTF-8."""
    rng = random.Random(20251225)
    genuine = verify(PROD)
    outcomes: dict[str, int] = {}
    for _ in range(300):
        index, mask = rng.randrange(len(PROD)), rng.randrange(1, 256)
        mutated = flip(PROD, index, mask)
        ignored = index in WRAPPER_REPORT_DATA or (
            index in WRAPPER_CONFIG_TEXT and _is_utf8(mutated[WRAPPER_CONFIG_TEXT.start :])
        )
        try:
            claims = verify(mutated)
        except AttestationError as exc:
            assert not ignored, index
            assert exc.step in {"parse", "algorithm", "chain", "signature"}, (index, exc.step)
            outcomes[exc.step] = outcomes.get(exc.step, 0) + 1
        else:
            assert ignored, index
            assert claims == genuine
            outcomes["ignored"] = outcomes.get("ignored", 0) + 1
    assert {"parse", "chain", "signature"} <= outcomes.keys()
    for _ in range(50):
        assert step_of(PROD[: rng.randrange(len(PROD))]) == "parse"
        assert step_of(DEBUG[: rng.randrange(len(DEBUG))], DEBUG_TIME) == "parse"


def test_structural_garbage_raises_only_attestation_errors() -> None:
    rng = random.Random(7)
    samples = [
        b"\x00",
        b"\x00\x02",
        b"\x00\x02\xff",
        b"\x00\x02\x03",
        b"\x84",
        b"\xd2",
        b"\xd2\xd2",
        b"\xc6" * 1000 + b"\x00",
        b"\x81" * 1000 + b"\x00",
        b"\x9f" * 10,
        b"\xbf\xff",
        bytes.fromhex("5bffffffffffffffff"),
        bytes.fromhex("84 40 a0 40 40"),
        bytes.fromhex("84 41 a0 a0 40 58 60") + bytes(96),
        cbor2.dumps([cbor2.dumps({1: -35}), {}, cbor2.dumps({"digest": 2**70}), bytes(96)]),
        cbor2.dumps(cbor2.CBORTag(18, [1, 2, 3, 4])),
    ]
    samples += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))) for _ in range(200)]
    for sample in samples:
        with pytest.raises(AttestationError) as info:
            verify(sample)
        assert info.value.step in STEPS


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_error_messages_do_not_echo_evidence() -> None:
    secret = b"hello, world!"
    for evidence in (DEBUG + b"\x00", flip(DEBUG, DEBUG.index(secret)), DEBUG[:-1]):
        with pytest.raises(AttestationError) as info:
            verify(evidence, DEBUG_TIME)
        assert "hello" not in str(info.value)
        assert hashlib.sha256(evidence).hexdigest() not in str(info.value)
