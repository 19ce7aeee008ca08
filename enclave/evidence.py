"""Collecting hardware attestation evidence inside a TEE, with the worker's key binding as its
report data. The verifiers are :mod:`sdk.protocol.attestation`; this is the other side.

* **AMD SEV-SNP and Intel TDX** (a confidential VM): the Linux configfs-tsm interface
  (``/sys/kernel/config/tsm/report``, Linux 6.7+). Create a report directory, write the 64
  bytes of report data to ``inblob``, read ``outblob`` (the SNP report or the TDX quote) and,
  for SNP, ``auxblob`` (the host's certificate table, from which the VCEK, ASK and ARK are
  taken), checking ``generation`` so that a concurrent writer cannot swap the report.
* **AWS Nitro Enclaves**: the Nitro Secure Module, ``/dev/nsm``, with an ``Attestation``
  request carrying the report data as ``user_data``.

Nothing here can run outside such a TEE; the tests drive it with a fake configfs directory and
a fake NSM device function. TDX collateral is fetched by the operator on the host (the worker
has no network) and given to :func:`sdk.protocol.attestation.verify_evidence` separately.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import secrets
import uuid
from collections.abc import Callable
from pathlib import Path

from sdk.errors import AttestationError

TSM_REPORTS = Path("/sys/kernel/config/tsm/report")
NSM_DEVICE = "/dev/nsm"
TSM_PROVIDERS = {"amd-sev-snp": "sev_guest", "intel-tdx": "tdx_guest"}
MAX_BLOB = 64 * 1024
NSM_RESPONSE_MAX = 0x3000
NSM_IOCTL_REQUEST = 0xC0200A00  # _IOWR(0x0A, 0, struct nsm_message), 32 bytes

# SNP certificate table (GHCB extended guest request): GUID -> collateral name
SNP_CERT_GUIDS = {
    uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd"): "vcek",
    uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782"): "ask",
    uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae"): "ark",
}

Evidence = tuple[bytes, dict[str, bytes]]  # (evidence, collateral)


def collect_evidence(
    provider: str,
    report_data: bytes,
    *,
    tsm_root: Path = TSM_REPORTS,
    nsm: Callable[[bytes], bytes] | None = None,
) -> Evidence:
    """The TEE's evidence binding ``report_data`` (64 bytes), and what collateral it brings.

    Raises ``AttestationError`` (step ``parse``) when this is not such a TEE, the interface
    refuses, or what it returns is malformed.
    """
    if len(report_data) != 64:
        raise AttestationError("evidence: report data must be 64 bytes", step="report_data")
    if provider in TSM_PROVIDERS:
        report, aux = _tsm_report(tsm_root, TSM_PROVIDERS[provider], report_data)
        collateral = snp_certificates(aux) if provider == "amd-sev-snp" and aux else {}
        return report, collateral
    if provider == "aws-nitro":
        return _nitro_document(report_data, nsm or _nsm_ioctl), {}
    raise AttestationError(f"evidence: {provider[:32]!r} is not a hardware provider", step="parse")


def _tsm_report(root: Path, expected: str, report_data: bytes) -> tuple[bytes, bytes]:
    if not root.is_dir():
        raise AttestationError(
            "evidence: no configfs-tsm here (not a confidential VM)", step="parse"
        )
    entry = _new_entry(root)
    try:
        provider = _read(entry / "provider").decode("ascii", "replace").strip()
        if provider != expected:
            raise AttestationError(
                f"evidence: the TEE is {provider[:16]!r}, not {expected}", step="parse"
            )
        (entry / "inblob").write_bytes(report_data)
        generation = _read(entry / "generation").strip()
        report = _read(entry / "outblob")
        aux = _read(entry / "auxblob") if (entry / "auxblob").exists() else b""
        if _read(entry / "generation").strip() != generation:
            raise AttestationError("evidence: the report changed while reading it", step="parse")
        return report, aux
    finally:
        _remove_entry(entry)


def _new_entry(root: Path) -> Path:
    """A fresh report directory (configfs fills it with the interface's attribute files)."""
    entry = root / f"sealroom-{secrets.token_hex(8)}"
    entry.mkdir()
    return entry


def _remove_entry(entry: Path) -> None:
    entry.rmdir()


def _read(path: Path) -> bytes:
    with open(path, "rb") as handle:
        data = handle.read(MAX_BLOB + 1)
    if len(data) > MAX_BLOB:
        raise AttestationError(f"evidence: {path.name} over {MAX_BLOB} bytes", step="size")
    return data


def snp_certificates(table: bytes) -> dict[str, bytes]:
    """The VCEK, ASK and ARK from an SNP certificate table: 24-byte entries (GUID in its
    little-endian form, offset and length as little-endian u32, relative to the table), ended
    by an all-zero entry. Unknown GUIDs are skipped.

    Raises ``AttestationError`` (step ``collateral``) for a malformed table."""
    found: dict[str, bytes] = {}
    for start in range(0, len(table), 24):
        entry = table[start : start + 24]
        if len(entry) < 24:
            break
        if entry == bytes(24):
            return found
        guid = uuid.UUID(bytes_le=entry[:16])
        offset = int.from_bytes(entry[16:20], "little")
        length = int.from_bytes(entry[20:24], "little")
        if offset + length > len(table) or length == 0:
            raise AttestationError(
                "evidence: certificate table entry out of range", step="collateral"
            )
        name = SNP_CERT_GUIDS.get(guid)
        if name is not None:
            found[name] = table[offset : offset + length]
    raise AttestationError("evidence: certificate table not terminated", step="collateral")


def _nitro_document(report_data: bytes, nsm: Callable[[bytes], bytes]) -> bytes:
    import cbor2

    request = cbor2.dumps(
        {"Attestation": {"user_data": report_data, "nonce": None, "public_key": None}}
    )
    try:
        response = cbor2.loads(nsm(request))
    except (cbor2.CBORDecodeError, ValueError) as exc:
        raise AttestationError("evidence: malformed NSM response", step="parse") from exc
    document = (
        response.get("Attestation", {}).get("document") if isinstance(response, dict) else None
    )
    if not isinstance(document, bytes):
        raise AttestationError("evidence: the NSM gave no attestation document", step="parse")
    return document


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("length", ctypes.c_size_t)]


class _NsmMessage(ctypes.Structure):
    _fields_ = [("request", _IoVec), ("response", _IoVec)]


def _nsm_ioctl(request: bytes) -> bytes:
    """One request to the Nitro Secure Module driver (``/dev/nsm``)."""
    if not os.path.exists(NSM_DEVICE):
        raise AttestationError("evidence: no /dev/nsm here (not a Nitro enclave)", step="parse")
    req = ctypes.create_string_buffer(request, len(request))
    resp = ctypes.create_string_buffer(NSM_RESPONSE_MAX)
    message = _NsmMessage(
        _IoVec(ctypes.cast(req, ctypes.c_void_p), len(request)),
        _IoVec(ctypes.cast(resp, ctypes.c_void_p), NSM_RESPONSE_MAX),
    )
    fd = os.open(NSM_DEVICE, os.O_RDWR)
    try:
        fcntl.ioctl(fd, NSM_IOCTL_REQUEST, message)
    except OSError as exc:
        raise AttestationError("evidence: the NSM refused the request", step="parse") from exc
    finally:
        os.close(fd)
    return resp.raw[: message.response.length]
