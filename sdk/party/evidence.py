"""Reading hardware attestation evidence and its collateral from files, for
``sealroom attestation verify``: provider names as people type them, size caps before reading,
and collateral files named the way each verifier expects."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from sdk.errors import AttestationError, InputError, NotFoundError
from sdk.protocol.attestation import HARDWARE_PROVIDERS
from sdk.protocol.attestation.claims import MAX_COLLATERAL_BYTES, MAX_EVIDENCE_BYTES

# what the CLI accepts -> the manifest's provider name
PROVIDER_ALIASES: Mapping[str, str] = {
    "nitro": "aws-nitro",
    "sev-snp": "amd-sev-snp",
    "snp": "amd-sev-snp",
    "tdx": "intel-tdx",
    **{name: name for name in HARDWARE_PROVIDERS},
}

# a collateral file is recognised by a word of its name (SNP) or its suffix (TDX)
_SNP_NAMES = ("vcek", "ask", "ark")


def provider_name(typed: str) -> str:
    """The manifest's name for a provider given as ``nitro``, ``sev-snp``, ``tdx`` (or in
    full). Raises ``InputError`` for another name."""
    try:
        return PROVIDER_ALIASES[typed.lower()]
    except KeyError:
        raise InputError(f"--provider: {typed[:32]!r} is not nitro, sev-snp or tdx") from None


def read_capped(path: Path, cap: int, what: str) -> bytes:
    """The bytes of a file of at most ``cap`` bytes.

    Raises ``NotFoundError`` (no such file) or ``AttestationError`` (step ``size``)."""
    if not path.is_file():
        raise NotFoundError(f"{what}: {path.name[:60]} does not exist")
    with open(path, "rb") as handle:
        data = handle.read(cap + 1)
    if len(data) > cap:
        raise AttestationError(f"attestation: size: {what} over {cap} bytes", step="size")
    return data


def read_evidence(path: str | Path) -> bytes:
    """The evidence file (binary, or hex text for SNP reports); capped."""
    return read_capped(Path(path).expanduser(), MAX_EVIDENCE_BYTES, "evidence")


def read_collateral(provider: str, paths: Iterable[str | Path]) -> dict[str, bytes]:
    """Collateral for ``provider`` from files or directories (every file in a directory).

    SNP: a file whose name contains ``vcek``, ``ask`` or ``ark`` is that certificate. TDX: the
    ``.json`` file is dcap-qvl's collateral (``collateral.json``). Other files are ignored.

    Raises ``NotFoundError`` for a path that does not exist, ``AttestationError`` (step
    ``collateral``) for two files of one kind, (step ``size``) over the cap.
    """
    files: list[Path] = []
    for given in paths:
        p = Path(given).expanduser()
        if p.is_dir():
            files.extend(sorted(f for f in p.iterdir() if f.is_file()))
        elif p.is_file():
            files.append(p)
        else:
            raise NotFoundError(f"collateral: {p.name[:60]} does not exist")
    out: dict[str, bytes] = {}
    budget = MAX_COLLATERAL_BYTES
    for f in files:
        key = _collateral_key(provider, f.name.lower())
        if key is None:
            continue
        if key in out:
            raise AttestationError(f"attestation: collateral: two {key} files", step="collateral")
        out[key] = read_capped(f, budget, "collateral")
        budget -= len(out[key])
    return out


def _collateral_key(provider: str, name: str) -> str | None:
    if provider == "amd-sev-snp":
        words = set(re.split(r"[^a-z0-9]+", name))
        return next((word for word in _SNP_NAMES if word in words), None)
    if provider == "intel-tdx":
        return "collateral.json" if name.endswith(".json") else None
    return None
