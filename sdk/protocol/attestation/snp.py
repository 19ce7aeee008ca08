"""AMD SEV-SNP attestation reports, verified offline.

The evidence is the guest's ``ATTESTATION_REPORT`` (AMD's *SEV Secure Nested Paging Firmware
ABI Specification*, table "ATTESTATION_REPORT Structure"): 1184 bytes, or their hex text. The
collateral is the chip's VCEK certificate (``vcek``, DER or PEM), as AMD's Key Distribution
Service serves it; ``ask`` and ``ark`` may be given too, and must then be the pinned ones.

Checks, in order, each failing with its ``AttestationError.step``:

1. ``parse``: the report is 1184 bytes (or 2368 hex digits), of version 2 to 5; ``algorithm``:
   its ``SIGNATURE_ALGO`` is 1 (ECDSA P-384 with SHA-384).
2. ``chain``: the VCEK is issued by the ASK of one pinned product (Milan, Genoa, Turin); that
   product's ARK signs itself and the ASK; every link is RSA-PSS SHA-384, MGF1-SHA-384, salt 48
   (``algorithm`` otherwise); every certificate is valid at ``now`` (``expiry``); the VCEK key
   is EC P-384 (``algorithm``).
3. ``signature``: the VCEK's ECDSA P-384/SHA-384 signature over bytes ``0x000-0x29F`` (r and s
   72-byte little-endian at ``0x2A0`` and ``0x2E8``; the unsigned rest, ``0x330-0x49F``, zero).
4. ``chain``: the VCEK's ``hwID`` extension is the report's ``CHIP_ID``; ``tcb``: the VCEK's TCB
   extensions are the report's ``REPORTED_TCB`` (the TCB the VCEK was derived for).
5. :func:`check_claims`: debug (guest ``POLICY`` bit 19), pinned measurements, key binding.

Not checked here: VCEK revocation (AMD's CRL is not collateral yet), minimum TCB or firmware
versions, ``VMPL`` and the other policy bits (a policy may pin ``VMPL``/``POLICY`` as
measurements), the ID block and author key (reported as ``ID_KEY_DIGEST``/``AUTHOR_KEY_DIGEST``
for a policy to pin), ``KEY_INFO``, and the reserved fields other than the signature's.
VLEK-signed reports and reports with a masked ``CHIP_ID`` fail (``chain``): only VCEKs bind a
chip.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from sdk.errors import AttestationError
from sdk.protocol.attestation import snp_roots
from sdk.protocol.attestation.claims import EvidencePolicy, VerifiedClaims, check_claims
from sdk.protocol.attestation.x509chain import fingerprint, load_certificate, verify_chain

PROVIDER = "amd-sev-snp"

# ATTESTATION_REPORT layout (all integers little-endian)
REPORT_SIZE = 0x4A0  # 1184 bytes
REPORT_HEX_SIZE = 2 * REPORT_SIZE
_HEX_DIGITS = b"0123456789abcdefABCDEF"
OFF_VERSION = 0x000  # u32
OFF_GUEST_SVN = 0x004  # u32
OFF_POLICY = 0x008  # u64
OFF_FAMILY_ID = 0x010  # 16 bytes
OFF_IMAGE_ID = 0x020  # 16 bytes
OFF_VMPL = 0x030  # u32
OFF_SIGNATURE_ALGO = 0x034  # u32
OFF_CURRENT_TCB = 0x038  # u64
OFF_PLATFORM_INFO = 0x040  # u64
OFF_REPORT_DATA = 0x050  # 64 bytes
OFF_MEASUREMENT = 0x090  # 48 bytes
OFF_HOST_DATA = 0x0C0  # 32 bytes
OFF_ID_KEY_DIGEST = 0x0E0  # 48 bytes
OFF_AUTHOR_KEY_DIGEST = 0x110  # 48 bytes
OFF_REPORT_ID = 0x140  # 32 bytes
OFF_REPORT_ID_MA = 0x160  # 32 bytes
OFF_REPORTED_TCB = 0x180  # u64, the TCB the VCEK was derived for
OFF_CHIP_ID = 0x1A0  # 64 bytes
SIGNED_END = 0x2A0  # the signature covers bytes [0, SIGNED_END)
OFF_SIGNATURE_R = 0x2A0  # 72 bytes, little-endian
OFF_SIGNATURE_S = 0x2E8  # 72 bytes, little-endian
SIGNATURE_COMPONENT_SIZE = 72
OFF_SIGNATURE_RESERVED = 0x330  # to the end: reserved, zero (nothing signs these bytes)

SUPPORTED_VERSIONS = range(2, 6)
SIGNATURE_ALGO_ECDSA_P384_SHA384 = 1
POLICY_DEBUG_BIT = 19

_HEADER = struct.Struct("<IIQ16s16sIIQQ")  # version .. platform_info (0x000-0x047)

# VCEK extensions (AMD's VCEK Certificate and KDS Interface Specification)
_AMD_SNP = "1.3.6.1.4.1.3704.1"
OID_HWID = x509.ObjectIdentifier(f"{_AMD_SNP}.4")
OID_TCB_BOOTLOADER = x509.ObjectIdentifier(f"{_AMD_SNP}.3.1")
OID_TCB_TEE = x509.ObjectIdentifier(f"{_AMD_SNP}.3.2")
OID_TCB_SNP = x509.ObjectIdentifier(f"{_AMD_SNP}.3.3")
OID_TCB_MICROCODE = x509.ObjectIdentifier(f"{_AMD_SNP}.3.8")
OID_TCB_FMC = x509.ObjectIdentifier(f"{_AMD_SNP}.3.9")  # Turin only

# byte index in REPORTED_TCB (little-endian u64) of each VCEK TCB extension
_TCB_LAYOUT_LEGACY: Mapping[x509.ObjectIdentifier, int] = {  # Milan, Genoa
    OID_TCB_BOOTLOADER: 0,
    OID_TCB_TEE: 1,
    OID_TCB_SNP: 6,
    OID_TCB_MICROCODE: 7,
}
_TCB_LAYOUT_TURIN: Mapping[x509.ObjectIdentifier, int] = {
    OID_TCB_FMC: 0,
    OID_TCB_BOOTLOADER: 1,
    OID_TCB_TEE: 2,
    OID_TCB_SNP: 3,
    OID_TCB_MICROCODE: 7,
}
_LEGACY_HWID_SIZE = 64  # the whole CHIP_ID
_TURIN_HWID_SIZE = 8  # Turin's CHIP_ID is 8 bytes, then zeros

# every link ARK -> ARK -> ASK -> VCEK
_CHAIN_PADDING = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)

COLLATERAL_NAMES = frozenset({"vcek", "ask", "ark"})


@dataclass(frozen=True)
class ProductRoots:
    """One product line's trust anchors: its ARK and ASK (PEM or DER) and their pinned hex
    SHA-256 (of the DER). ``turin_layout`` selects Turin's ``REPORTED_TCB`` layout and 8-byte
    ``hwID`` instead of Milan's and Genoa's."""

    ark: bytes
    ask: bytes
    ark_sha256: str
    ask_sha256: str
    turin_layout: bool = False


BUILTIN_ROOTS: Mapping[str, ProductRoots] = MappingProxyType(
    {
        "Milan": ProductRoots(
            snp_roots.ARK_MILAN_PEM.encode(),
            snp_roots.ASK_MILAN_PEM.encode(),
            snp_roots.ARK_MILAN_SHA256,
            snp_roots.ASK_MILAN_SHA256,
        ),
        "Genoa": ProductRoots(
            snp_roots.ARK_GENOA_PEM.encode(),
            snp_roots.ASK_GENOA_PEM.encode(),
            snp_roots.ARK_GENOA_SHA256,
            snp_roots.ASK_GENOA_SHA256,
        ),
        "Turin": ProductRoots(
            snp_roots.ARK_TURIN_PEM.encode(),
            snp_roots.ASK_TURIN_PEM.encode(),
            snp_roots.ARK_TURIN_SHA256,
            snp_roots.ASK_TURIN_SHA256,
            turin_layout=True,
        ),
    }
)


@dataclass(frozen=True)
class Report:
    """The fields of an ``ATTESTATION_REPORT`` (``signed`` is bytes ``0x000-0x29F``,
    ``signature`` the DER encoding of its little-endian r and s)."""

    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: int
    platform_info: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: int
    chip_id: bytes
    signed: bytes
    signature: bytes
    signature_reserved: bytes


def _fail(step: str, detail: str) -> AttestationError:
    return AttestationError(f"{PROVIDER}: {step}: {detail}", step=step)


def verify(
    evidence: bytes,
    policy: EvidencePolicy,
    now: datetime,
    collateral: Mapping[str, bytes],
) -> VerifiedClaims:
    """Verify an SEV-SNP report at ``now`` against ``policy``, to AMD's pinned roots.

    Returns the claims (:class:`VerifiedClaims`) once every check passed.

    Raises:
        AttestationError: and only it, for any input; ``step`` names the failed check (see
            the module docstring).
    """
    return verify_report(evidence, policy, now, collateral, roots=BUILTIN_ROOTS)


def verify_report(
    evidence: bytes,
    policy: EvidencePolicy,
    now: datetime,
    collateral: Mapping[str, bytes],
    *,
    roots: Mapping[str, ProductRoots],
) -> VerifiedClaims:
    """:func:`verify` to the given product roots (tests use a synthetic AMD-like chain).

    Raises:
        AttestationError: and only it, for any input.
    """
    try:
        return _verify(evidence, policy, now, collateral, roots)
    except AttestationError:
        raise
    except Exception as exc:  # fail closed: only AttestationError leaves a verifier
        raise _fail("parse", f"malformed input ({type(exc).__name__})") from exc


def _verify(
    evidence: bytes,
    policy: EvidencePolicy,
    now: datetime,
    collateral: Mapping[str, bytes],
    roots: Mapping[str, ProductRoots],
) -> VerifiedClaims:
    if now.tzinfo is None:
        raise _fail("expiry", "the verification time needs a timezone")
    report = parse_report(evidence)
    if report.signature_algo != SIGNATURE_ALGO_ECDSA_P384_SHA384:
        raise _fail("algorithm", "the report is not signed with ECDSA P-384/SHA-384")
    product, product_roots, vcek = _verify_vcek(collateral, roots, now)
    _verify_signature(report, vcek)
    _check_hwid(vcek, report.chip_id, product_roots.turin_layout)
    _check_tcb(vcek, report.reported_tcb, product_roots.turin_layout)
    return check_claims(_claims(report, product), policy)


def parse_report(evidence: bytes) -> Report:
    """Parse an ``ATTESTATION_REPORT``: 1184 bytes, or their hex (ASCII whitespace ignored).

    Raises:
        AttestationError: step ``parse`` for another size, non-hex text or a version other
            than 2 to 5.
    """
    raw = _report_bytes(evidence)
    (
        version,
        guest_svn,
        policy,
        family_id,
        image_id,
        vmpl,
        signature_algo,
        current_tcb,
        platform_info,
    ) = _HEADER.unpack_from(raw, OFF_VERSION)
    if version not in SUPPORTED_VERSIONS:
        raise _fail("parse", "unsupported report version")
    r = int.from_bytes(raw[OFF_SIGNATURE_R : OFF_SIGNATURE_R + SIGNATURE_COMPONENT_SIZE], "little")
    s = int.from_bytes(raw[OFF_SIGNATURE_S : OFF_SIGNATURE_S + SIGNATURE_COMPONENT_SIZE], "little")
    return Report(
        version=version,
        guest_svn=guest_svn,
        policy=policy,
        family_id=family_id,
        image_id=image_id,
        vmpl=vmpl,
        signature_algo=signature_algo,
        current_tcb=current_tcb,
        platform_info=platform_info,
        report_data=raw[OFF_REPORT_DATA : OFF_REPORT_DATA + 64],
        measurement=raw[OFF_MEASUREMENT : OFF_MEASUREMENT + 48],
        host_data=raw[OFF_HOST_DATA : OFF_HOST_DATA + 32],
        id_key_digest=raw[OFF_ID_KEY_DIGEST : OFF_ID_KEY_DIGEST + 48],
        author_key_digest=raw[OFF_AUTHOR_KEY_DIGEST : OFF_AUTHOR_KEY_DIGEST + 48],
        report_id=raw[OFF_REPORT_ID : OFF_REPORT_ID + 32],
        report_id_ma=raw[OFF_REPORT_ID_MA : OFF_REPORT_ID_MA + 32],
        reported_tcb=int.from_bytes(raw[OFF_REPORTED_TCB : OFF_REPORTED_TCB + 8], "little"),
        chip_id=raw[OFF_CHIP_ID : OFF_CHIP_ID + 64],
        signed=raw[:SIGNED_END],
        signature=encode_dss_signature(r, s),
        signature_reserved=raw[OFF_SIGNATURE_RESERVED:],
    )


def _report_bytes(evidence: bytes) -> bytes:
    if not isinstance(evidence, bytes | bytearray | memoryview):
        raise _fail("parse", "the evidence is not bytes")
    data = bytes(evidence)
    if len(data) == REPORT_SIZE:
        return data
    text = b"".join(data.split())  # bytes.split() splits on ASCII whitespace
    if len(text) != REPORT_HEX_SIZE or text.translate(None, _HEX_DIGITS):
        raise _fail("parse", f"the report is not {REPORT_SIZE} bytes or their hex")
    return bytes.fromhex(text.decode("ascii"))


def _verify_vcek(
    collateral: Mapping[str, bytes],
    roots: Mapping[str, ProductRoots],
    now: datetime,
) -> tuple[str, ProductRoots, x509.Certificate]:
    """The product whose pinned chain issues the VCEK, its roots, and the verified VCEK."""
    vcek, given = _load_collateral(collateral)
    product, product_roots, ask = _select_product(vcek, roots)
    ark = load_certificate(product_roots.ark, provider=PROVIDER, what=f"{product} ARK")
    if fingerprint(ask) != product_roots.ask_sha256:
        raise _fail("chain", f"the {product} ASK is not the pinned one")
    for name, certificate in given.items():
        pinned = product_roots.ask_sha256 if name == "ask" else product_roots.ark_sha256
        if fingerprint(certificate) != pinned:
            raise _fail("chain", f"the {name.upper()} given is not the pinned {product} one")
    for what, certificate in (("ARK", ark), ("ASK", ask), ("VCEK", vcek)):
        if (
            certificate.signature_algorithm_oid != x509.SignatureAlgorithmOID.RSASSA_PSS
            or not isinstance(certificate.signature_hash_algorithm, hashes.SHA384)
            or certificate.signature_algorithm_parameters != _CHAIN_PADDING
        ):
            raise _fail("algorithm", f"the {what} is not signed with RSA-PSS SHA-384")
    verify_chain([ark, ask, vcek], roots={product_roots.ark_sha256}, now=now, provider=PROVIDER)
    key = vcek.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise _fail("algorithm", "the VCEK key is not EC P-384")
    return product, product_roots, vcek


def _load_collateral(
    collateral: Mapping[str, bytes],
) -> tuple[x509.Certificate, dict[str, x509.Certificate]]:
    """The VCEK, and the ``ask``/``ark`` certificates given (by name)."""
    if set(collateral) - COLLATERAL_NAMES:
        raise _fail("collateral", "unknown collateral (expected vcek, ask, ark)")
    if "vcek" not in collateral:
        raise _fail("collateral", "the VCEK certificate is missing")
    vcek = load_certificate(collateral["vcek"], provider=PROVIDER, what="VCEK")
    given = {
        name: load_certificate(collateral[name], provider=PROVIDER, what=name.upper())
        for name in ("ask", "ark")
        if name in collateral
    }
    return vcek, given


def _select_product(
    vcek: x509.Certificate, roots: Mapping[str, ProductRoots]
) -> tuple[str, ProductRoots, x509.Certificate]:
    """The product (and its ASK) whose ASK issued the VCEK."""
    for product, product_roots in roots.items():
        ask = load_certificate(product_roots.ask, provider=PROVIDER, what=f"{product} ASK")
        if _issues(ask, vcek):
            return product, product_roots, ask
    raise _fail("chain", "the VCEK is not issued by a pinned AMD ASK")


def _issues(issuer: x509.Certificate, certificate: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _verify_signature(report: Report, vcek: x509.Certificate) -> None:
    key = vcek.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):  # checked by _verify_vcek
        raise _fail("algorithm", "the VCEK key is not EC P-384")
    if any(report.signature_reserved):
        raise _fail("signature", "the signature's reserved bytes are not zero")
    try:
        key.verify(report.signature, report.signed, ec.ECDSA(hashes.SHA384()))
    except (InvalidSignature, ValueError) as exc:
        raise _fail("signature", "the report signature does not verify") from exc


def _extension(certificate: x509.Certificate, oid: x509.ObjectIdentifier) -> bytes | None:
    """The raw ``extnValue`` octets of an extension, or ``None`` when absent."""
    try:
        extension = certificate.extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        return None
    value = extension.value
    return value.value if isinstance(value, x509.UnrecognizedExtension) else None


def _check_hwid(vcek: x509.Certificate, chip_id: bytes, turin_layout: bool) -> None:
    size = _TURIN_HWID_SIZE if turin_layout else _LEGACY_HWID_SIZE
    hwid = _extension(vcek, OID_HWID)
    if hwid is not None and len(hwid) == size + 2 and hwid[:2] == bytes((0x04, size)):
        hwid = hwid[2:]  # a DER OCTET STRING, though AMD puts the raw octets
    if hwid is None or len(hwid) != size:
        raise _fail("chain", "the VCEK has no valid hwID")
    if hwid != chip_id[:size] or any(chip_id[size:]):
        raise _fail("chain", "the VCEK hwID is not the report's CHIP_ID")


def _check_tcb(vcek: x509.Certificate, reported_tcb: int, turin_layout: bool) -> None:
    layout = _TCB_LAYOUT_TURIN if turin_layout else _TCB_LAYOUT_LEGACY
    tcb = reported_tcb.to_bytes(8, "little")
    for oid, index in layout.items():
        value = _der_small_integer(_extension(vcek, oid))
        if value is None:
            raise _fail("tcb", "the VCEK lacks a valid TCB extension")
        if value != tcb[index]:
            raise _fail("tcb", "the VCEK TCB is not the report's REPORTED_TCB")


def _der_small_integer(der: bytes | None) -> int | None:
    """A DER INTEGER of 0 to 255, or ``None`` for anything else."""
    if der is None or len(der) < 3 or der[0] != 0x02 or der[1] != len(der) - 2 or der[1] > 2:
        return None
    value = int.from_bytes(der[2:], "big", signed=True)
    return value if 0 <= value <= 255 else None


def _claims(report: Report, product: str) -> VerifiedClaims:
    return VerifiedClaims(
        provider=PROVIDER,
        measurements={
            "MEASUREMENT": report.measurement.hex(),
            "HOST_DATA": report.host_data.hex(),
            "ID_KEY_DIGEST": report.id_key_digest.hex(),
            "AUTHOR_KEY_DIGEST": report.author_key_digest.hex(),
            "FAMILY_ID": report.family_id.hex(),
            "IMAGE_ID": report.image_id.hex(),
            "GUEST_SVN": f"{report.guest_svn:08x}",
            "POLICY": f"{report.policy:016x}",
            "VMPL": f"{report.vmpl:08x}",
        },
        report_data=(report.report_data,),
        platform={
            "product": product,
            "chip_id": report.chip_id.hex(),
            "reported_tcb": f"{report.reported_tcb:016x}",
            "version": str(report.version),
        },
        debug=bool((report.policy >> POLICY_DEBUG_BIT) & 1),
    )
