"""``sealroom attestation verify`` on genuine AWS Nitro, AMD SEV-SNP and Intel TDX evidence
(tests/fixtures/attestation, at each file's pinned time), and the one-line E_ATTESTATION
refusal, naming the failed step, for every negative."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from sdk.cli import run_command
from tests.cli.conftest import Result, fails, ok, sealroom

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "attestation"
NITRO = FIX / "nitro" / "nitro_prod_dstack_nsm-qvl.bin"
NITRO_AT = "2025-12-25T13:15:37Z"
SNP = FIX / "snp" / "report_milan_virtee.hex"
SNP_VCEK = FIX / "snp" / "vcek_milan_virtee.der"
TDX = FIX / "tdx" / "tdx_quote_dcap-qvl.bin"
TDX_COLLATERAL = FIX / "tdx" / "tdx_quote_dcap-qvl.collateral.json"
LATER_AT = "2025-07-04T10:24:15Z"
PCR0 = "5cb702954321826d7939d6da829a940d787fcf32357beb8eae1ddf33c28c17d36f3ac3ba6828fdf7edeed02889702da6"
SNP_MEASUREMENT = "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f"
MRTD = "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7"


def cli(*argv: str) -> Result:
    out, err = io.StringIO(), io.StringIO()
    code = run_command(["attestation", "verify", *argv], out=out, err=err)
    return Result(code, out.getvalue(), err.getvalue())


def refused(result: Result, step: str) -> None:
    fails(result, "E_ATTESTATION", exit_code=5)
    assert f": {step}: " in result.err, result.err


GENUINE = {
    "nitro": (NITRO, [], NITRO_AT, f"PCR0={PCR0}"),
    "sev-snp": (SNP, ["--collateral", str(SNP_VCEK)], LATER_AT, f"MEASUREMENT={SNP_MEASUREMENT}"),
    "tdx": (TDX, ["--collateral", str(TDX_COLLATERAL)], LATER_AT, f"MRTD={MRTD}"),
}


@pytest.mark.parametrize("provider", sorted(GENUINE))
def test_genuine_evidence_verifies_through_the_installed_command(provider: str) -> None:
    evidence, collateral, at, expect = GENUINE[provider]
    result = ok(sealroom("attestation", "verify", "--provider", provider, str(evidence),
                         *collateral, "--at", at, "--expect", expect))
    assert "evidence: VALID" in result.out
    register, value = expect.split("=")
    assert f"{register:<11} {value} (as expected)" in result.out


@pytest.mark.parametrize("provider", sorted(GENUINE))
def test_json_output(provider: str) -> None:
    evidence, collateral, at, _ = GENUINE[provider]
    doc = json.loads(ok(cli("--provider", provider, str(evidence), *collateral, "--at", at,
                            "--json")).out)
    assert doc["valid"] is True and doc["debug"] is False and doc["measurements"]


def test_snp_collateral_from_a_directory() -> None:
    ok(cli("--provider", "sev-snp", str(SNP), "--collateral", str(FIX / "snp"), "--at", LATER_AT))


@pytest.mark.parametrize(
    ("argv", "step"),
    [
        (["--provider", "nitro", str(FIX / "nitro" / "nitro_prod_dstack_nsm-qvl.NEG-sig-byte-flipped.bin"),
          "--at", NITRO_AT], "signature"),
        (["--provider", "nitro", str(NITRO), "--at", "2025-12-25T17:15:37Z"], "expiry"),
        (["--provider", "nitro", str(NITRO)], "expiry"),  # today: the leaf lived 3 hours
        (["--provider", "nitro", str(FIX / "nitro" / "nitro_debug_blindai.cbor"),
          "--at", "2023-03-22T14:28:27Z"], "debug"),
        (["--provider", "nitro", str(NITRO), "--at", NITRO_AT, "--expect", "PCR0=" + "00" * 48],
         "measurement"),
        (["--provider", "nitro", str(NITRO), "--at", NITRO_AT, "--report-data", "ab" * 64],
         "report_data"),
        (["--provider", "sev-snp", str(FIX / "snp" / "report_milan_virtee.NEG-measurement-byte-flipped.hex"),
          "--collateral", str(SNP_VCEK), "--at", LATER_AT], "signature"),
        (["--provider", "sev-snp", str(SNP), "--at", LATER_AT], "collateral"),
        (["--provider", "sev-snp", str(SNP), "--collateral", str(SNP_VCEK),
          "--at", "2031-01-01T00:00:00Z"], "expiry"),
        (["--provider", "sev-snp", str(SNP), "--collateral", str(SNP_VCEK), "--at", LATER_AT,
          "--expect", "MEASUREMENT=" + "00" * 48], "measurement"),
        (["--provider", "tdx", str(FIX / "tdx" / "tdx_quote_dcap-qvl.NEG-quote-sig-byte-flipped.bin"),
          "--collateral", str(TDX_COLLATERAL), "--at", LATER_AT], "signature"),
        (["--provider", "tdx", str(TDX), "--collateral", str(TDX_COLLATERAL)], "expiry"),
        (["--provider", "tdx", str(TDX), "--at", LATER_AT], "collateral"),
        (["--provider", "tdx", str(TDX), "--collateral", str(TDX_COLLATERAL), "--at", LATER_AT,
          "--expect", "MRTD=" + "00" * 48], "measurement"),
        (["--provider", "tdx", str(NITRO), "--collateral", str(TDX_COLLATERAL), "--at", LATER_AT],
         "parse"),
        (["--provider", "nitro", str(SNP), "--at", LATER_AT], "parse"),
    ],
)
def test_negatives_fail_with_the_step_named(argv: list[str], step: str) -> None:
    refused(cli(*argv), step)


def test_a_bad_time_and_a_missing_file_are_input_errors(tmp_path: Path) -> None:
    fails(cli("--provider", "nitro", str(NITRO), "--at", "yesterday"), "E_INPUT", exit_code=2)
    fails(cli("--provider", "nitro", str(NITRO), "--at", "2025-12-25T13:15:37"), "E_INPUT")
    fails(cli("--provider", "nitro", str(tmp_path / "missing.bin")), "E_NOT_FOUND")
    fails(cli("--provider", "quantum", str(NITRO)), "E_INPUT", exit_code=2)
    fails(cli("--provider", "nitro", str(NITRO), "--expect", "PCR0"), "E_INPUT", exit_code=2)
    fails(cli("--provider", "nitro", str(NITRO), "--report-data", "zz"), "E_INPUT", exit_code=2)


def test_oversized_evidence_is_refused_before_reading_it_all(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (64 * 1024 + 1))
    refused(cli("--provider", "nitro", str(big)), "size")
