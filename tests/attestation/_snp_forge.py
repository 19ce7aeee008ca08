"""A synthetic AMD-like SEV-SNP world for tests: ARK -> ASK -> VCEK certificates and signed
attestation reports, laid out as AMD's specifications say (see ``sdk.protocol.attestation.snp``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from sdk.protocol.attestation import snp
from sdk.protocol.attestation.x509chain import fingerprint

PSS_SHA384 = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
NOT_BEFORE = datetime(2024, 1, 1, tzinfo=UTC)
NOT_AFTER = datetime(2030, 1, 1, tzinfo=UTC)
NOW = datetime(2025, 7, 4, tzinfo=UTC)

CHIP_ID = bytes(range(1, 65))
TURIN_CHIP_ID = bytes(range(0xA1, 0xA9)) + bytes(56)
TCB = bytes((3, 0, 0, 0, 0, 0, 8, 115))  # bootloader, tee, 4 reserved, snp, microcode
TURIN_TCB = bytes((1, 4, 0, 9, 0, 0, 0, 72))  # fmc, bootloader, tee, snp, 3 reserved, microcode
MEASUREMENT = bytes.fromhex("11" * 48)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Not Advanced Micro Devices"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def ca_certificate(
    key: rsa.RSAPrivateKey, subject: str, issuer_key: rsa.RSAPrivateKey, issuer: str
) -> x509.Certificate:
    """An ARK (self-signed when ``issuer_key`` is ``key``) or ASK, RSA-PSS SHA-384."""
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA384(), rsa_padding=PSS_SHA384)
    )


def tcb_extensions(tcb: bytes, *, turin: bool = False) -> dict[str, int]:
    """The VCEK TCB extensions (OID suffix -> SPL) for a REPORTED_TCB's 8 bytes."""
    if turin:
        return {"3.9": tcb[0], "3.1": tcb[1], "3.2": tcb[2], "3.3": tcb[3], "3.8": tcb[7]}
    return {"3.1": tcb[0], "3.2": tcb[1], "3.3": tcb[6], "3.8": tcb[7]}


def _der_integer(value: int) -> bytes:
    body = value.to_bytes(value.bit_length() // 8 + 1, "big")  # minimal, non-negative
    return bytes((0x02, len(body))) + body


def vcek_certificate(
    key: ec.EllipticCurvePrivateKey,
    issuer_key: rsa.RSAPrivateKey,
    issuer: str,
    *,
    hwid: bytes | None = CHIP_ID,
    tcb: dict[str, int] | None = None,
    hash_algorithm: hashes.SHA256 | hashes.SHA384 | None = None,
    rsa_padding: padding.PSS | padding.PKCS1v15 = PSS_SHA384,
) -> bytes:
    """A DER VCEK carrying ``hwid`` (raw octets) and the TCB extensions (by OID suffix)."""
    if tcb is None:
        tcb = tcb_extensions(TCB)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name("SEV-VCEK"))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
    )
    for suffix, value in tcb.items():
        oid = x509.ObjectIdentifier(f"1.3.6.1.4.1.3704.1.{suffix}")
        builder = builder.add_extension(
            x509.UnrecognizedExtension(oid, _der_integer(value)), critical=False
        )
    if hwid is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(snp.OID_HWID, hwid), critical=False
        )
    certificate = builder.sign(
        issuer_key, hash_algorithm or hashes.SHA384(), rsa_padding=rsa_padding
    )
    return certificate.public_bytes(Encoding.DER)


def report(
    key: ec.EllipticCurvePrivateKey,
    *,
    version: int = 2,
    policy: int = 0x30000,
    vmpl: int = 0,
    signature_algo: int = 1,
    report_data: bytes = bytes(64),
    measurement: bytes = MEASUREMENT,
    reported_tcb: bytes = TCB,
    chip_id: bytes = CHIP_ID,
) -> bytes:
    """A 1184-byte ATTESTATION_REPORT signed by ``key`` (r and s 72-byte little-endian)."""
    raw = bytearray(snp.REPORT_SIZE)
    struct.pack_into("<IIQ", raw, snp.OFF_VERSION, version, 7, policy)
    struct.pack_into("<II", raw, snp.OFF_VMPL, vmpl, signature_algo)
    raw[snp.OFF_FAMILY_ID : snp.OFF_FAMILY_ID + 16] = b"F" * 16
    raw[snp.OFF_IMAGE_ID : snp.OFF_IMAGE_ID + 16] = b"I" * 16
    raw[snp.OFF_REPORT_DATA : snp.OFF_REPORT_DATA + 64] = report_data
    raw[snp.OFF_MEASUREMENT : snp.OFF_MEASUREMENT + 48] = measurement
    raw[snp.OFF_REPORTED_TCB : snp.OFF_REPORTED_TCB + 8] = reported_tcb
    raw[snp.OFF_CHIP_ID : snp.OFF_CHIP_ID + 64] = chip_id
    r, s = decode_dss_signature(key.sign(bytes(raw[: snp.SIGNED_END]), ec.ECDSA(hashes.SHA384())))
    raw[snp.OFF_SIGNATURE_R : snp.OFF_SIGNATURE_R + 72] = r.to_bytes(72, "little")
    raw[snp.OFF_SIGNATURE_S : snp.OFF_SIGNATURE_S + 72] = s.to_bytes(72, "little")
    return bytes(raw)


@dataclass(frozen=True)
class Forge:
    """One synthetic product line: its keys, certificates, and the roots to verify against."""

    ark_key: rsa.RSAPrivateKey
    ask_key: rsa.RSAPrivateKey
    ark: x509.Certificate
    ask: x509.Certificate
    ask_name: str
    turin: bool

    @classmethod
    def create(
        cls, ark_key: rsa.RSAPrivateKey, ask_key: rsa.RSAPrivateKey, *, turin: bool = False
    ) -> Forge:
        product = "Turin" if turin else "Milan"
        ark = ca_certificate(ark_key, f"ARK-{product}", ark_key, f"ARK-{product}")
        ask = ca_certificate(ask_key, f"SEV-{product}", ark_key, f"ARK-{product}")
        return cls(ark_key, ask_key, ark, ask, f"SEV-{product}", turin)

    def roots(self) -> dict[str, snp.ProductRoots]:
        product = "Turin" if self.turin else "Milan"
        return {
            product: snp.ProductRoots(
                ark=self.ark.public_bytes(Encoding.PEM),
                ask=self.ask.public_bytes(Encoding.DER),
                ark_sha256=fingerprint(self.ark),
                ask_sha256=fingerprint(self.ask),
                turin_layout=self.turin,
            )
        }
