"""Intel TDX DCAP quotes: the genuine dcap-qvl sample, its collateral, and tampered copies.

Fixtures and expected values: tests/fixtures/attestation/README.md (TDX section).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import struct
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import dcap_qvl
import pytest

from sdk.errors import AttestationError
from sdk.protocol.attestation import (
    EvidencePolicy,
    VerifiedClaims,
    check_claims,
    key_binding,
    tdx,
    verify_evidence,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "attestation" / "tdx"
QUOTE = (FIXTURES / "tdx_quote_dcap-qvl.bin").read_bytes()
NEG_QUOTE = (FIXTURES / "tdx_quote_dcap-qvl.NEG-quote-sig-byte-flipped.bin").read_bytes()
COLLATERAL_BYTES = (FIXTURES / "tdx_quote_dcap-qvl.collateral.json").read_bytes()
COLLATERAL = json.loads(COLLATERAL_BYTES)
ROOT_DER = (FIXTURES / "Intel_SGX_Root_CA.der").read_bytes()

PINNED = datetime.fromtimestamp(1751624655, UTC)  # 2025-07-04T10:24:15Z

# README values
MRTD = "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7"
RTMR0 = "44c0197b39157fdd7a4dcc44767f9d6b0bb3977c7a8e347b8492f827fe9d9e5c48aca29b220b80b6a540cf994b9bc9c0"
TD_ATTRIBUTES = "0000001000000000"
REPORT_DATA = bytes.fromhex(
    "9a9d48e7f6799642d3d1b34e1e5e1742d4bb02dd6ddd551862c1211d35c304f9"
    "eca3efdbb481601c163cf52493d6e44aed55d51ec39b7e518fadb92c2b523f20"
)
ROOT_SHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"

# layout of this v4 quote (see tdx.py): header, TD report, signature data length, then the
# signature data: ECDSA signature, attestation key, certification data type 6 (QE report,
# its signature, QE auth data, PCK certification data type 5 holding the PEM chain), padding
TD_REPORT = 48
OFF_MRTD = TD_REPORT + 136
OFF_REPORTDATA = TD_REPORT + 520
OFF_SIG_LEN = 632
OFF_SIGNATURE = 636
OFF_ATTESTATION_KEY = 700
OFF_CERT_TYPE = 764
OFF_QE_REPORT = 770
OFF_QE_REPORT_SIGNATURE = 1154
OFF_QE_AUTH_DATA = 1218
OFF_PCK_CERT_TYPE = 1252
OFF_PEM = 1258
SIGNATURE_END = 4936  # then 70 zero bytes of padding


def _verify(
    evidence: bytes = QUOTE,
    *,
    collateral: dict[str, bytes] | None = None,
    now: datetime = PINNED,
    policy: EvidencePolicy | None = None,
):
    return verify_evidence(
        "intel-tdx",
        evidence,
        policy=policy or EvidencePolicy(),
        now=now,
        collateral={"collateral.json": COLLATERAL_BYTES} if collateral is None else collateral,
    )


def _step(**kwargs: Any) -> str:
    with pytest.raises(AttestationError) as info:
        _verify(**kwargs)
    message = str(info.value)
    assert message.startswith("intel-tdx: ")
    assert all(" " <= ch <= "~" for ch in message)
    assert len(message) < 300
    return info.value.step


def _flip(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[offset] ^= mask
    return bytes(out)


def _with(**fields: Any) -> dict[str, bytes]:
    return {"collateral.json": json.dumps({**COLLATERAL, **fields}).encode()}


def _hex_flip(name: str, index: int) -> dict[str, bytes]:
    text = COLLATERAL[name]
    digit = "1" if text[index] == "0" else "0"
    return _with(**{name: text[:index] + digit + text[index + 1 :]})


GENUINE = _verify()


# --- the genuine quote -------------------------------------------------------------------


def test_genuine_quote_verifies_with_readme_values():
    claims = GENUINE
    assert claims.provider == "intel-tdx"
    assert claims.measurements["MRTD"] == MRTD
    assert claims.measurements["RTMR0"] == RTMR0
    assert claims.measurements["TD_ATTRIBUTES"] == TD_ATTRIBUTES
    assert claims.report_data == (REPORT_DATA,)
    assert claims.debug is False
    assert claims.issued_at is None
    assert set(claims.measurements) == {
        "MRTD",
        "RTMR0",
        "RTMR1",
        "RTMR2",
        "RTMR3",
        "MRCONFIGID",
        "MROWNER",
        "MROWNERCONFIG",
        "MRSEAM",
        "TD_ATTRIBUTES",
        "XFAM",
    }
    for value in claims.measurements.values():
        assert value == value.lower()
        bytes.fromhex(value)
    assert claims.platform["tcb_status"] == "UpToDate"
    assert claims.platform["advisory_ids"] == ""
    assert claims.platform["quote_version"] == "4"
    assert claims.platform["fmspc"] == "b0c06f000000"
    assert claims.to_dict()["report_data"] == [REPORT_DATA.hex()]


def test_claims_are_the_signed_td_report_bytes():
    assert GENUINE.measurements["MRTD"] == QUOTE[OFF_MRTD : OFF_MRTD + 48].hex()
    assert GENUINE.report_data[0] == QUOTE[OFF_REPORTDATA : OFF_REPORTDATA + 64]
    assert GENUINE.measurements["RTMR3"] == QUOTE[TD_REPORT + 472 : TD_REPORT + 520].hex()


def test_genuine_quote_passes_a_pinning_policy():
    policy = EvidencePolicy(
        measurements={"MRTD": (MRTD,), "RTMR0": ("00" * 48, RTMR0.upper())},
        report_data=REPORT_DATA,
    )
    assert _verify(policy=policy) == GENUINE


def test_verify_calls_the_provider_module_directly():
    claims = tdx.verify(QUOTE, EvidencePolicy(), PINNED, {"collateral.json": COLLATERAL_BYTES})
    assert claims == GENUINE


def test_other_timezone_and_fractional_seconds(monkeypatch):
    seen: list[int] = []
    real = dcap_qvl.verify_with_root_ca

    def spy(quote, collateral, root, now_secs):
        seen.append(now_secs)
        return real(quote, collateral, root, now_secs)

    monkeypatch.setattr(dcap_qvl, "verify_with_root_ca", spy)
    when = (PINNED + timedelta(microseconds=999_999)).astimezone(timezone(timedelta(hours=-7)))
    assert _verify(now=when) == GENUINE
    assert seen == [1751624655]
    assert type(seen[0]) is int


def test_zero_padding_may_vary():
    assert _verify(QUOTE[:SIGNATURE_END]) == GENUINE
    assert _verify(QUOTE + bytes(100)) == GENUINE


# --- the pinned trust anchor -------------------------------------------------------------


def test_embedded_root_is_the_pinned_intel_root():
    assert tdx.INTEL_SGX_ROOT_CA_DER == ROOT_DER
    assert hashlib.sha256(tdx.INTEL_SGX_ROOT_CA_DER).hexdigest() == ROOT_SHA256
    assert tdx.INTEL_SGX_ROOT_CA_SHA256 == ROOT_SHA256


def test_dcap_qvl_gets_our_root(monkeypatch):
    roots: list[bytes] = []
    real = dcap_qvl.verify_with_root_ca

    def spy(quote, collateral, root, now_secs):
        roots.append(root)
        return real(quote, collateral, root, now_secs)

    monkeypatch.setattr(dcap_qvl, "verify_with_root_ca", spy)
    _verify()
    assert roots == [ROOT_DER]


def test_an_altered_root_constant_is_refused(monkeypatch):
    tdx._pinned_root.cache_clear()
    monkeypatch.setattr(tdx, "INTEL_SGX_ROOT_CA_DER", _flip(ROOT_DER, 300))
    try:
        assert _step() == "chain"
    finally:
        tdx._pinned_root.cache_clear()


def test_time_before_the_root_is_valid():
    assert _step(now=datetime(2017, 1, 1, tzinfo=UTC)) == "expiry"


# --- times -------------------------------------------------------------------------------


def test_after_the_pck_crl_next_update():
    assert _step(now=datetime(2026, 12, 1, tzinfo=UTC)) == "expiry"


def test_after_the_tcb_info_next_update():
    assert _step(now=datetime(2025, 7, 25, tzinfo=UTC)) == "expiry"


def test_before_the_collateral_was_issued():
    assert _step(now=datetime(2025, 1, 1, tzinfo=UTC)) == "expiry"


def test_naive_or_pre_epoch_time():
    collateral = {"collateral.json": COLLATERAL_BYTES}
    with pytest.raises(AttestationError) as info:
        tdx.verify(QUOTE, EvidencePolicy(), datetime(2025, 7, 4), collateral)
    assert info.value.step == "expiry"
    with pytest.raises(AttestationError) as info:
        tdx.verify(QUOTE, EvidencePolicy(), datetime(1969, 12, 31, tzinfo=UTC), collateral)
    assert info.value.step == "expiry"


# --- the quote ---------------------------------------------------------------------------


def test_neg_quote_signature_flipped():
    assert NEG_QUOTE == _flip(QUOTE, 641)
    assert _step(evidence=NEG_QUOTE) == "signature"


@pytest.mark.parametrize(
    "offset",
    [
        OFF_MRTD,  # MRTD
        OFF_MRTD + 47,
        TD_REPORT + 120,  # TD_ATTRIBUTES (the debug bit)
        TD_REPORT + 328,  # RTMR0
        OFF_REPORTDATA + 63,  # REPORTDATA
        40,  # header user data: signed too
        OFF_SIGNATURE + 40,  # the quote signature (s)
        OFF_ATTESTATION_KEY + 5,  # the attestation key (QE report hash)
        OFF_QE_REPORT + 100,  # the QE report
        OFF_QE_REPORT_SIGNATURE + 3,  # its signature by the PCK key
        OFF_QE_AUTH_DATA + 2,  # the QE authentication data (QE report hash)
    ],
)
def test_signed_bytes_flipped(offset):
    assert _step(evidence=_flip(QUOTE, offset)) == "signature"


@pytest.mark.parametrize("offset", [OFF_PEM, OFF_PEM + 128, OFF_PEM + 200, OFF_PEM + 1000])
def test_pck_chain_flipped(offset):
    assert _step(evidence=_flip(QUOTE, offset)) == "chain"


@pytest.mark.parametrize("length", [0, 1, 47, 48, 631, 635, 700, 1000, 1257, SIGNATURE_END - 1])
def test_truncated(length):
    assert _step(evidence=QUOTE[:length]) == "parse"


@pytest.mark.parametrize("version", [0, 3, 6, 0xFFFF])
def test_header_version_changed(version):
    assert _step(evidence=struct.pack("<H", version) + QUOTE[2:]) == "parse"


def test_version_5_label_on_a_version_4_body():
    assert _step(evidence=struct.pack("<H", 5) + QUOTE[2:]) == "parse"


@pytest.mark.parametrize("tee_type", [0x00, 0x80, 0x82, 0x181])
def test_tee_type_changed(tee_type):
    assert _step(evidence=QUOTE[:4] + struct.pack("<I", tee_type) + QUOTE[8:]) == "parse"


def test_qe_vendor_id_changed():
    assert _step(evidence=_flip(QUOTE, 20)) == "parse"  # dcap-qvl: Unknown QE vendor ID


def test_attestation_key_type_changed():
    assert _step(evidence=QUOTE[:2] + struct.pack("<H", 3) + QUOTE[4:]) == "algorithm"


@pytest.mark.parametrize(
    ("offset", "mask"),
    [
        (OFF_SIG_LEN, 0x01),  # signature data length (dcap-qvl accepts it: padding follows)
        (OFF_SIG_LEN, 0x10),
        (OFF_SIG_LEN + 3, 0x80),
        (OFF_CERT_TYPE, 0x01),  # certification data type 6 (dcap-qvl ignores it)
        (OFF_CERT_TYPE + 1, 0x01),
        (OFF_CERT_TYPE + 2, 0x01),  # certification data size
        (OFF_PCK_CERT_TYPE + 2, 0x02),  # PCK certification data size
        (SIGNATURE_END, 0x01),  # padding
        (len(QUOTE) - 1, 0x80),
    ],
)
def test_framing_changed(offset, mask):
    assert _step(evidence=_flip(QUOTE, offset, mask)) == "parse"


def test_pck_certification_data_type_changed():
    assert _step(evidence=_flip(QUOTE, OFF_PCK_CERT_TYPE, 0x02)) == "chain"


def test_oversized_evidence():
    assert _step(evidence=QUOTE + bytes(64 * 1024)) == "size"


# --- collateral --------------------------------------------------------------------------


def test_missing_collateral():
    assert _step(collateral={}) == "collateral"
    assert _step(collateral={"collateral": COLLATERAL_BYTES}) == "collateral"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"garbage",
        b"\xff\xfe{}",
        b"[]",
        b"null",
        b'"collateral"',
        b"[" * 100_000,
        json.dumps({k: v for k, v in COLLATERAL.items() if k != "pck_crl"}).encode(),
        json.dumps({**COLLATERAL, "extra": "x"}).encode(),
        json.dumps({**COLLATERAL, "tcb_info": {"id": "TDX"}}).encode(),
        json.dumps({**COLLATERAL, "pck_crl": 5}).encode(),
        json.dumps({**COLLATERAL, "pck_certificate_chain": 5}).encode(),
        COLLATERAL_BYTES.replace(b'"pck_crl"', b'"pck_crl": "00", "pck_crl"', 1),  # duplicate
        json.dumps({**COLLATERAL, "pck_crl": "zz"}).encode(),  # dcap-qvl: not hex
        json.dumps({**COLLATERAL, "pck_crl": ""}).encode(),
    ],
)
def test_malformed_collateral(raw):
    assert _step(collateral={"collateral.json": raw}) == "collateral"


def test_evidence_not_bytes():
    for value in (5006, None, "quote"):
        with pytest.raises(AttestationError) as info:
            tdx.verify(value, EvidencePolicy(), PINNED, {"collateral.json": COLLATERAL_BYTES})
        assert info.value.step == "parse"


def test_collateral_not_bytes():
    for value in (7, None, "text", ["a"]):
        with pytest.raises(AttestationError) as info:
            tdx.verify(QUOTE, EvidencePolicy(), PINNED, {"collateral.json": value})
        assert info.value.step == "collateral"


def test_tcb_info_signature_flipped():
    assert _step(collateral=_hex_flip("tcb_info_signature", 10)) == "collateral"


def test_tcb_info_changed():
    changed = COLLATERAL["tcb_info"].replace(
        '"tcbEvaluationDataNumber":17', '"tcbEvaluationDataNumber":18'
    )
    assert changed != COLLATERAL["tcb_info"]
    assert _step(collateral=_with(tcb_info=changed)) == "collateral"
    fmspc = json.loads(COLLATERAL["tcb_info"])["fmspc"]
    other = COLLATERAL["tcb_info"].replace(fmspc, "00906ED50000")
    assert _step(collateral=_with(tcb_info=other)) == "collateral"
    assert _step(collateral=_with(tcb_info="not json")) == "collateral"


def test_qe_identity_changed():
    changed = COLLATERAL["qe_identity"].replace('"TD_QE"', '"QE"', 1)
    assert changed != COLLATERAL["qe_identity"]
    assert _step(collateral=_with(qe_identity=changed)) == "collateral"
    assert _step(collateral=_hex_flip("qe_identity_signature", 20)) == "collateral"
    assert _step(collateral=_with(qe_identity="{}")) == "collateral"


@pytest.mark.parametrize("index", [100, 400, len(COLLATERAL["pck_crl"]) - 20])
def test_pck_crl_flipped(index):
    assert _step(collateral=_hex_flip("pck_crl", index)) == "collateral"


@pytest.mark.parametrize("index", [60, 150, len(COLLATERAL["root_ca_crl"]) - 20])
def test_root_ca_crl_flipped(index):
    assert _step(collateral=_hex_flip("root_ca_crl", index)) == "collateral"


def test_issuer_chains_replaced():
    assert _step(collateral=_with(tcb_info_issuer_chain="garbage")) == "collateral"
    wrong = COLLATERAL["pck_crl_issuer_chain"]  # root and PCK platform CA: no signing leaf
    assert _step(collateral=_with(tcb_info_issuer_chain=wrong)) == "chain"
    assert _step(collateral=_with(qe_identity_issuer_chain=wrong)) == "chain"


# --- TCB status and the verified report (dcap-qvl's result replaced) ---------------------


class _FakeReport:
    def __init__(self, real: Any, *, status: str | None = None, advisories=None, json_text=None):
        self.status = real.status if status is None else status
        self.advisory_ids = real.advisory_ids if advisories is None else advisories
        self._json = real.to_json() if json_text is None else json_text

    def to_json(self) -> str:
        return self._json


def _replace_result(monkeypatch, **changes: Any) -> None:
    real = dcap_qvl.verify_with_root_ca

    def fake(quote, collateral, root, now_secs):
        return _FakeReport(real(quote, collateral, root, now_secs), **changes)

    monkeypatch.setattr(dcap_qvl, "verify_with_root_ca", fake)


@pytest.mark.parametrize(
    "status",
    [
        "SWHardeningNeeded",
        "ConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
        "OutOfDate",
        "OutOfDateConfigurationNeeded",
        "TDRelaunchAdvised",
        "Revoked",
        "",
    ],
)
def test_tcb_status_not_up_to_date(monkeypatch, status):
    _replace_result(monkeypatch, status=status, advisories=["INTEL-SA-00615", "INTEL-SA-00828"])
    with pytest.raises(AttestationError) as info:
        _verify()
    assert info.value.step == "tcb"
    assert f"TCB status {status} is not accepted" in str(info.value)
    assert "INTEL-SA-00615, INTEL-SA-00828" in str(info.value)


def test_tcb_message_is_capped(monkeypatch):
    _replace_result(
        monkeypatch, status="OutOfDate\n" * 20, advisories=[f"INTEL-SA-{n:05d}" for n in range(50)]
    )
    with pytest.raises(AttestationError) as info:
        _verify()
    assert info.value.step == "tcb"
    assert len(str(info.value)) < 220
    assert "\n" not in str(info.value)


def test_up_to_date_with_advisories_is_accepted_and_reported(monkeypatch):
    _replace_result(monkeypatch, advisories=["INTEL-SA-00837"])
    assert _verify().platform["advisory_ids"] == "INTEL-SA-00837"


def _report_json(change) -> str:
    document = json.loads(
        dcap_qvl.verify_with_root_ca(
            QUOTE,
            dcap_qvl.QuoteCollateralV3.from_json(COLLATERAL_BYTES.decode()),
            ROOT_DER,
            1751624655,
        ).to_json()
    )
    change(document)
    return json.dumps(document)


def test_claims_come_from_the_verified_report(monkeypatch):
    def other_mrtd(document):
        document["report"]["TD10"]["mr_td"] = "00" * 48

    _replace_result(monkeypatch, json_text=_report_json(other_mrtd))
    assert _step() == "parse"  # and not a claim dcap-qvl did not verify


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.pop("report"),
        lambda d: d.__setitem__("report", {"SgxEnclave": d["report"]["TD10"]}),
        lambda d: d.__setitem__("report", {}),
        lambda d: d["report"]["TD10"].pop("rt_mr3"),
        lambda d: d["report"]["TD10"].__setitem__("rt_mr3", "zz" * 48),
        lambda d: d["report"]["TD10"].__setitem__("rt_mr3", "00" * 47),
    ],
)
def test_unexpected_verified_report(monkeypatch, change):
    _replace_result(monkeypatch, json_text=_report_json(change))
    assert _step() == "parse"


def test_td15_report_shape(monkeypatch):
    def as_td15(document):
        base = document["report"].pop("TD10")
        document["report"]["TD15"] = {
            "base": base,
            "tee_tcb_svn2": "00" * 16,
            "mr_service_td": "00" * 48,
        }

    _replace_result(monkeypatch, json_text=_report_json(as_td15))
    assert _verify() == GENUINE


# --- policy ------------------------------------------------------------------------------


def test_policy_mrtd_mismatch():
    policy = EvidencePolicy(measurements={"MRTD": ("00" * 48,)})
    assert _step(policy=policy) == "measurement"


def test_policy_rtmr_pins():
    # this quote's RTMR3 is all zero (nothing extended it): pinning zeros passes...
    assert GENUINE.measurements["RTMR3"] == "00" * 48
    assert _verify(policy=EvidencePolicy(measurements={"RTMR3": ("00" * 48,)})) == GENUINE
    # ...and pinning anything else, or zeros on a register that is not zero, does not
    assert _step(policy=EvidencePolicy(measurements={"RTMR3": ("11" * 48,)})) == "measurement"
    assert GENUINE.measurements["RTMR1"] != "00" * 48
    assert _step(policy=EvidencePolicy(measurements={"RTMR1": ("00" * 48,)})) == "measurement"
    assert _step(policy=EvidencePolicy(measurements={"MRSERVICETD": ("00" * 48,)})) == "measurement"


def test_policy_report_data_of_other_keys():
    binding = key_binding(os.urandom(32), os.urandom(32))
    assert _step(policy=EvidencePolicy(report_data=binding)) == "report_data"


def _genuine_fields() -> dict[str, bytes]:
    fields = {}
    for _, key, offset, size in tdx._TD_REPORT_FIELDS:
        fields[key] = QUOTE[TD_REPORT + offset : TD_REPORT + offset + size]
    return fields


def test_claims_builder_debug_bit():
    kwargs = {"tcb_status": "UpToDate", "advisory_ids": (), "fmspc": None, "quote_version": 4}
    fields = _genuine_fields()
    assert tdx.build_claims(fields, **kwargs) == VerifiedClaims(
        provider=GENUINE.provider,
        measurements=GENUINE.measurements,
        report_data=GENUINE.report_data,
        platform={k: v for k, v in GENUINE.platform.items() if k != "fmspc"},
        debug=False,
    )
    debug_attributes = bytes([fields["td_attributes"][0] | 0x01]) + fields["td_attributes"][1:]
    claims = tdx.build_claims({**fields, "td_attributes": debug_attributes}, **kwargs)
    assert claims.debug is True
    assert claims.measurements["TD_ATTRIBUTES"] == "0100001000000000"
    with pytest.raises(AttestationError) as info:
        check_claims(claims, EvidencePolicy())
    assert info.value.step == "debug"
    # the genuine TD_ATTRIBUTES has SEPT_VE_DISABLE (bit 28) set, which is not debug
    assert fields["td_attributes"][3] == 0x10
    assert tdx.build_claims(fields, **kwargs).debug is False
    with pytest.raises(AttestationError) as info:
        tdx.build_claims({**fields, "mr_td": b"\x00" * 47}, **kwargs)
    assert info.value.step == "parse"


# --- dcap-qvl's failures -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "step"),
    [
        ("Verification failed: ISV enclave report signature is invalid", "signature"),
        ("Verification failed: Signature is invalid for qe_report in quote", "signature"),
        ("Verification failed: QE report hash mismatch", "signature"),
        ("Verification failed: Invalid QE auth data length", "signature"),
        (
            "Verification failed: Failed to verify certificate chain\n\nCaused by:\n    UnknownIssuer",
            "chain",
        ),
        (
            "Verification failed: Failed to verify certificate chain\n\nCaused by:\n    InvalidSignatureForPublicKey",
            "chain",
        ),
        (
            "Verification failed: Failed to verify certificate chain\n\nCaused by:\n    CaUsedAsEndEntity",
            "chain",
        ),
        (
            "Verification failed: Failed to extract PCK certificates from quote\n\nCaused by:\n    0: Failed to parse cert",
            "chain",
        ),
        ("Verification failed: Certificate chain is too short in quote", "chain"),
        ("Verification failed: Failed to parse PCK certificate", "chain"),
        (
            "Verification failed: Failed to load root ca\n\nCaused by:\n    TrailingData(SignedData)",
            "chain",
        ),
        (
            "Verification failed: Unsupported DCAP PCK cert format: 4. Use get_collateral() to fetch PCK certificate.",
            "chain",
        ),
        ("Verification failed: QE MRSIGNER mismatch: expected AB, got CD", "chain"),
        ("Verification failed: QE ISVPRODID mismatch: expected 2, got 1", "chain"),
        (
            "Verification failed: QE report validation failed\n\nCaused by:\n    Debug mode is enabled",
            "chain",
        ),
        (
            "Verification failed: CrlExpired { time: UnixTime(1796083200), next_update: UnixTime(1775215317) }",
            "expiry",
        ),
        (
            "Verification failed: Failed to verify certificate chain\n\nCaused by:\n    CertExpired { time: UnixTime(1), not_after: UnixTime(0) }",
            "expiry",
        ),
        (
            "Verification failed: Failed to verify certificate chain\n\nCaused by:\n    CertNotValidYet { time: UnixTime(0), not_before: UnixTime(1) }",
            "expiry",
        ),
        ("Verification failed: TCBInfo expired", "expiry"),
        ("Verification failed: TCBInfo issue date is in the future", "expiry"),
        ("Verification failed: QE Identity expired", "expiry"),
        ("Verification failed: QE Identity issue date is in the future", "expiry"),
        ("Verification failed: Collateral expired: earliest_expiration 5 < now 6", "expiry"),
        (
            "Verification failed: Signature is invalid for tcb_info in quote_collateral",
            "collateral",
        ),
        (
            "Verification failed: Signature is invalid for qe_identity in quote_collateral",
            "collateral",
        ),
        (
            "Verification failed: Failed to decode TcbInfo\n\nCaused by:\n    expected ident at line 1 column 2",
            "collateral",
        ),
        (
            "Verification failed: Failed to decode QeIdentity\n\nCaused by:\n    missing field `id`",
            "collateral",
        ),
        ("Verification failed: Certificate chain is too short for TCB Info", "collateral"),
        ("Verification failed: Fmspc mismatch", "collateral"),
        ("Verification failed: TDX quote with non-TDX TCB info in the collateral", "collateral"),
        ("Verification failed: TDX TCB Info is missing tdxModule field", "collateral"),
        (
            "Verification failed: Unsupported QE Identity id/version for the quote TEE type: QE version 2",
            "collateral",
        ),
        (
            "Verification failed: Failed to verify certificate chain\n\nCaused by:\n    CertRevoked",
            "collateral",
        ),
        (
            "Verification failed: Failed to verify certificate chain\n\nCaused by:\n    UnknownRevocationStatus",
            "collateral",
        ),
        (
            "Verification failed: Failed to verify certificate chain\n\nCaused by:\n    InvalidCrlSignatureForPublicKey",
            "collateral",
        ),
        (
            "Verification failed: Failed to parse PCK CRL\n\nCaused by:\n    BadDerTime",
            "collateral",
        ),
        (
            "Verification failed: Failed to parse root CA CRL\n\nCaused by:\n    InvalidCrlSignatureForPublicKey",
            "collateral",
        ),
        (
            "Verification failed: Failed to decode quote\n\nCaused by:\n    Unsupported body type",
            "parse",
        ),
        (
            "Verification failed: Failed to decode quote\n\nCaused by:\n    Could not decode `AuthDataV3::qe_report`",
            "parse",
        ),
        (
            "Verification failed: Failed to decode quote\n\nCaused by:\n    Data length exceeds maximum",
            "parse",
        ),
        ("Verification failed: Unsupported DCAP quote version", "parse"),
        ("Verification failed: Unknown QE vendor ID", "parse"),
        ("Verification failed: TDX TEE quote must have version 4 or 5", "parse"),
        ("Verification failed: Unsupported TEE type: 3", "parse"),
        ("Verification failed: Unsupported DCAP attestation key type", "algorithm"),
        ("Verification failed: TCB status is invalid: Revoked", "tcb"),
        ("Verification failed: No matching TCB level found", "tcb"),
        ("Verification failed: QE ISVSVN 3 is below minimum required 4 from QE Identity", "tcb"),
        ("Verification failed: TDX module MRSIGNER mismatch: expected AB, got CD", "tcb"),
        (
            "Verification failed: TDX module identity check\n\nCaused by:\n    No TDX module identity with id TDX_03 found in TCB Info",
            "tcb",
        ),
        ("Verification failed: Debug mode is enabled", "debug"),
        ("Verification failed: SEPT_VE_DISABLE is not enabled", "measurement"),
        ("Verification failed: Reserved bits in TD attributes are set", "measurement"),
        ("Verification failed: TD migration is enabled", "measurement"),
        ("Verification failed: Invalid MR service TD", "measurement"),
        ("Verification failed: something nobody expected", "collateral"),
        ("", "collateral"),
    ],
)
def test_library_error_mapping(monkeypatch, text, step):
    assert tdx.classify_library_error(text)[0] == step

    def fail(quote, collateral, root, now_secs):
        raise ValueError(text + " \x00\x1b[31m" + "x" * 500)

    monkeypatch.setattr(dcap_qvl, "verify_with_root_ca", fail)
    with pytest.raises(AttestationError) as info:
        _verify()
    assert info.value.step == step
    quoted = str(info.value).split("(dcap-qvl: ", 1)[1]
    assert len(quoted) <= 81  # 80 characters and the closing parenthesis
    assert "Verification failed" not in quoted
    assert all(" " <= ch <= "~" for ch in str(info.value))


def test_unclassified_failure_is_generic(monkeypatch):
    def fail(quote, collateral, root, now_secs):
        raise ValueError("Verification failed: something nobody expected")

    monkeypatch.setattr(dcap_qvl, "verify_with_root_ca", fail)
    with pytest.raises(AttestationError) as info:
        _verify()
    assert str(info.value) == (
        "intel-tdx: collateral: verification failed (dcap-qvl: something nobody expected)"
    )


class PanicException(BaseException):  # the name pyo3 gives a Rust panic, a BaseException
    pass


@pytest.mark.parametrize(
    "error",
    [TypeError("bad"), OverflowError("int too big"), RuntimeError("x"), PanicException("boom")],
)
def test_any_library_exception_becomes_attestation_error(monkeypatch, error):
    def fail(quote, collateral, root, now_secs):
        raise error

    monkeypatch.setattr(dcap_qvl, "verify_with_root_ca", fail)
    assert _step() == "collateral"

    def fail_from_json(text):
        raise error

    monkeypatch.setattr(dcap_qvl.QuoteCollateralV3, "from_json", fail_from_json)
    assert _step() == "collateral"


def test_interrupts_are_not_swallowed(monkeypatch):
    def interrupt(quote, collateral, root, now_secs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dcap_qvl, "verify_with_root_ca", interrupt)
    with pytest.raises(KeyboardInterrupt):
        _verify()


# --- fuzz --------------------------------------------------------------------------------


def test_fuzz_flips_in_covered_bytes_all_fail():
    # every byte before the PEM chain is signed (header, TD report, QE report), signs
    # (the signatures), is bound (attestation key, QE auth data) or is framing checked exactly;
    # the padding must be zero. Each single-bit flip there is refused.
    rng = random.Random(20250704)
    covered = [*range(OFF_PEM), *range(SIGNATURE_END, len(QUOTE))]
    for _ in range(200):
        offset = rng.choice(covered)
        mutated = _flip(QUOTE, offset, 1 << rng.randrange(8))
        with pytest.raises(AttestationError):
            _verify(mutated)


def test_fuzz_flips_anywhere_never_change_claims():
    # in the PEM chain some flips change no certificate (PEM whitespace, the optional copy of
    # the root, which dcap-qvl does not use: the pinned root is the anchor); such a quote
    # still verifies, with exactly the same claims
    rng = random.Random(7)
    accepted = 0
    for _ in range(200):
        offset = rng.randrange(len(QUOTE))
        try:
            claims = _verify(_flip(QUOTE, offset, 1 << rng.randrange(8)))
        except AttestationError:
            continue
        accepted += 1
        assert OFF_PEM <= offset < SIGNATURE_END
        assert claims == GENUINE
    assert 0 < accepted < 200  # 20 with this seed, all in the PEM chain


def test_fuzz_random_inputs_only_attestation_error():
    rng = random.Random(11)
    header = QUOTE[:48]
    for _ in range(150):
        size = rng.choice([0, 5, 48, 636, 700, 1300, 5006])
        body = bytes(rng.randrange(256) for _ in range(size))
        # (a prefix of at least SIGNATURE_END bytes is the quote with less padding)
        for evidence in (body, header + body, QUOTE[: rng.randrange(SIGNATURE_END)] + body):
            with pytest.raises(AttestationError):
                _verify(evidence)


def test_fuzz_collateral_changes_only_attestation_error():
    rng = random.Random(3)
    text = COLLATERAL_BYTES
    for _ in range(120):
        offset = rng.randrange(len(text))
        mutated = _flip(text, offset, 1 << rng.randrange(8))
        try:
            claims = _verify(collateral={"collateral.json": mutated})
        except AttestationError:
            continue
        assert claims == GENUINE
