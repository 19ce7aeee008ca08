"""``sealroom attestation verify``: check hardware evidence offline, with nothing but the file.

``attestation verify --provider nitro|sev-snp|tdx FILE [--collateral PATH]... [--at RFC3339]
[--expect REGISTER=HEX]... [--report-data HEX] [--json]`` verifies the evidence with
:func:`sdk.protocol.attestation.verify_evidence` at ``--at`` (default: now), against the
registers and report data given, and prints the verified claims. Any failure is one
``error: E_ATTESTATION: <provider>: <step>: ...`` line and exit code 5.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from sdk.cli.context import Context
from sdk.errors import InputError
from sdk.party.evidence import provider_name, read_collateral, read_evidence
from sdk.protocol.attestation import EvidencePolicy, verify_evidence
from sdk.protocol.clock import utcnow
from sdk.protocol.models import HEX_VALUE, REGISTER_NAME


def _expectations(items: list[str]) -> dict[str, tuple[str, ...]]:
    expected: dict[str, list[str]] = {}
    for item in items:
        name, _, value = item.partition("=")
        value = value.lower()
        if not REGISTER_NAME.fullmatch(name) or not HEX_VALUE.fullmatch(value):
            raise InputError("--expect takes REGISTER=HEX, like PCR0=5cb7...")
        expected.setdefault(name, []).append(value)
    return {name: tuple(values) for name, values in expected.items()}


def _parse_at(text: str) -> datetime:
    """An RFC 3339 time with its offset (``2025-12-25T13:15:37Z``, fractions allowed)."""
    try:
        when = datetime.fromisoformat(text[:40])
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise InputError("--at: an RFC 3339 time with an offset, like 2025-12-25T13:15:37Z")
    return when.astimezone(UTC)


def cmd_attestation_verify(ctx: Context, args: argparse.Namespace) -> int:
    """Verify AWS Nitro, AMD SEV-SNP or Intel TDX evidence offline and print what it proves."""
    provider = provider_name(args.provider)
    at = _parse_at(args.at) if args.at else utcnow()
    report_data = None
    if args.report_data is not None:
        if not HEX_VALUE.fullmatch(args.report_data.lower()):
            raise InputError("--report-data takes hex")
        report_data = bytes.fromhex(args.report_data)
    policy = EvidencePolicy(measurements=_expectations(args.expect or []), report_data=report_data)
    claims = verify_evidence(
        provider,
        read_evidence(args.file),
        policy=policy,
        now=at,
        collateral=read_collateral(provider, args.collateral or []),
    )
    if args.json:
        document: dict[str, Any] = {"valid": True, "at": at.isoformat(), **claims.to_dict()}
        ctx.say(json.dumps(document, indent=2, sort_keys=True))
        return 0
    ctx.say(f"{provider} evidence: VALID at {at.isoformat(timespec='seconds')}")
    if claims.issued_at is not None:
        ctx.say(f"  issued      {claims.issued_at.isoformat(timespec='milliseconds')}")
    for name, value in claims.platform.items():
        ctx.say(f"  {name:<11} {value}")
    for name, value in claims.measurements.items():
        pinned = " (as expected)" if name in policy.measurements else ""
        ctx.say(f"  {name:<11} {value}{pinned}")
    for data in claims.report_data:
        bound = " (as expected)" if data == report_data else ""
        ctx.say(f"  binds       {data.hex() or '(empty)'}{bound}")
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``attestation verify``."""
    attestation = sub.add_parser("attestation", help="auditors: verify hardware evidence offline")
    asub = attestation.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    av = asub.add_parser("verify", parents=[common], help="verify Nitro, SNP or TDX evidence")
    av.add_argument("file", help="the evidence: a Nitro document, an SNP report, a TDX quote")
    av.add_argument("--provider", required=True, help="nitro, sev-snp or tdx")
    av.add_argument(
        "--collateral",
        action="append",
        help="a file or directory: SNP's VCEK (and ASK), TDX's collateral JSON",
    )
    av.add_argument("--at", help="verify at this RFC 3339 time (default: now)")
    av.add_argument(
        "--expect", action="append", metavar="REGISTER=HEX", help="a register value to require"
    )
    av.add_argument("--report-data", help="the report data (hex) the evidence must carry")
    av.add_argument("--json", action="store_true", help="print the claims as JSON")
    av.set_defaults(handler=cmd_attestation_verify)
