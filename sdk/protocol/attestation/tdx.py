"""Intel TDX DCAP quotes (version 4 or 5, ECDSA P-256), verified offline with ``dcap-qvl``.

The evidence is the binary quote a TD gets from its quoting enclave (the TD quote format of
Intel's TDX DCAP Quoting Library API documentation): a 48-byte header, the TD report
(``TDREPORT``, 584 bytes for TDX 1.0; in version 5 after a 6-byte body descriptor), the
signature data length and the signature data (the attestation key's ECDSA signature over
header and TD report, the QE report signed by the PCK leaf, and the PCK certificate chain).
The collateral is ``collateral.json``: dcap-qvl's ``QuoteCollateralV3`` JSON (the PCK CRL and
its issuer chain, the root CA CRL, the TCB info and the QE identity with their signatures and
issuer chains), as Intel's PCS or a PCCS serves them.

Checks, in order, each failing with its ``AttestationError.step``:

1. ``parse``: at least a header, a TD report and the signature data length; TEE type TDX
   (``0x81``; an SGX quote is refused); version 4 or 5; the signature data lies inside the
   quote and is framed exactly (its certification data is type 6, QE report, and the sizes
   nested in it add up to its end); any bytes after it are zero padding. ``algorithm``: the
   attestation key type is 2 (ECDSA P-256).
2. ``collateral``: ``collateral.json`` is present, UTF-8, one JSON object of the nine string
   fields of ``QuoteCollateralV3`` (plus an optional ``pck_certificate_chain``).
3. ``chain``/``expiry``: the embedded Intel SGX Root CA has the pinned SHA-256, signs itself
   and is valid at ``now``; it is the only trust anchor handed to dcap-qvl.
4. dcap-qvl's ``verify_with_root_ca`` at ``now`` (whole seconds): the root CA CRL and the PCK
   CRL; the TCB info and the QE identity (issuer chains to the root, signatures, validity
   windows, ids); the PCK chain to the root; the QE report signature under the PCK key; the QE
   report binding ``SHA-256(attestation key || QE auth data)``; the QE report against the QE
   identity; the quote signature; the TCB level of the PCK certificate's SVNs, the TDX module
   and the QE; and the TD attributes (debug, reserved bits, ``SEPT_VE_DISABLE``, ...). Its
   failures map to steps by :func:`classify_library_error` (see ``_RULES``).
5. ``parse``: the verified report dcap-qvl returns is a TDX report whose fields are exactly the
   signed TD report bytes at their specified offsets (a guard against a library mix-up).
6. ``tcb``: the TCB status is in :data:`ACCEPTED_TCB_STATUSES` (only ``UpToDate``).
7. :func:`check_claims`: debug (``TD_ATTRIBUTES`` bit 0, ``TUD.DEBUG``), pinned measurements,
   key binding in ``REPORTDATA``.

Not checked here: collateral freshness beyond its own validity windows (nothing is fetched:
the caller supplies collateral, and an auditor may verify old evidence with the collateral of
its time); advisories of an ``UpToDate`` status (reported in ``platform``, not refused); TCB
evaluation data numbers; the QE identity beyond dcap-qvl's checks; platform properties of the
PCK certificate (dynamic platform, cached keys, SMT); the bytes of the PCK chain PEM that do
not change the certificates (whitespace, the optional copy of the root), which no signature
covers.
"""

from __future__ import annotations

import functools
import hashlib
import json
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, cast

import dcap_qvl
from cryptography import x509

from sdk.errors import AttestationError
from sdk.protocol.attestation.claims import EvidencePolicy, VerifiedClaims, check_claims
from sdk.protocol.attestation.x509chain import load_certificate, verify_chain

PROVIDER = "intel-tdx"

# CN=Intel SGX Root CA, O=Intel Corporation, L=Santa Clara, ST=CA, C=US; P-256; valid
# 2018-05-21 to 2049-12-31. Intel publishes it at
# https://certificates.trustedservices.intel.com/Intel_SGX_Provisioning_Certification_RootCA.cer
# (the same DER as dcap-qvl's src/TrustedRootCA.der).
INTEL_SGX_ROOT_CA_DER = bytes.fromhex(
    "3082028f30820234a003020102021422650cd65a9d3489f383b49552bf501b392706ac300a06082a8648ce3d"
    "0403023068311a301806035504030c11496e74656c2053475820526f6f74204341311a3018060355040a0c11"
    "496e74656c20436f72706f726174696f6e3114301206035504070c0b53616e746120436c617261310b300906"
    "035504080c024341310b3009060355040613025553301e170d3138303532313130343531305a170d34393132"
    "33313233353935395a3068311a301806035504030c11496e74656c2053475820526f6f74204341311a301806"
    "0355040a0c11496e74656c20436f72706f726174696f6e3114301206035504070c0b53616e746120436c6172"
    "61310b300906035504080c024341310b30090603550406130255533059301306072a8648ce3d020106082a86"
    "48ce3d030107034200040ba9c4c0c0c86193a3fe23d6b02cda10a8bbd4e88e48b4458561a36e705525f56791"
    "8e2edc88e40d860bd0cc4ee26aacc988e505a953558c453f6b0904ae7394a381bb3081b8301f0603551d2304"
    "183016801422650cd65a9d3489f383b49552bf501b392706ac30520603551d1f044b30493047a045a0438641"
    "68747470733a2f2f6365727469666963617465732e7472757374656473657276696365732e696e74656c2e63"
    "6f6d2f496e74656c534758526f6f7443412e646572301d0603551d0e0416041422650cd65a9d3489f383b495"
    "52bf501b392706ac300e0603551d0f0101ff04040302010630120603551d130101ff040830060101ff020101"
    "300a06082a8648ce3d0403020349003046022100e5bfe50911f92f428920dc368a302ee3d12ec5867ff622ec"
    "6497f78060c13c20022100e09d25ac7a0cb3e5e8e68fec5fa3bd416c47440bd950639d450edcbea4576aa2"
)
INTEL_SGX_ROOT_CA_SHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"

# TCB statuses accepted. Only UpToDate: SWHardeningNeeded means the platform is patched but
# the TD software must carry mitigations the quote cannot show; ConfigurationNeeded means a
# platform setting is unsafe; OutOfDate means a known vulnerability is unpatched.
ACCEPTED_TCB_STATUSES = frozenset({"UpToDate"})

COLLATERAL_NAME = "collateral.json"
_COLLATERAL_FIELDS = frozenset(
    {
        "pck_crl_issuer_chain",
        "root_ca_crl",
        "pck_crl",
        "tcb_info_issuer_chain",
        "tcb_info",
        "tcb_info_signature",
        "qe_identity_issuer_chain",
        "qe_identity",
        "qe_identity_signature",
    }
)
_OPTIONAL_COLLATERAL_FIELDS = frozenset({"pck_certificate_chain"})

# quote layout (all integers little-endian)
HEADER_SIZE = 48
TD_REPORT10_SIZE = 584
_V5_BODY_DESCRIPTOR_SIZE = 6  # u16 body type, u32 body size
_SIG_DATA_LEN_SIZE = 4
MIN_QUOTE_SIZE = HEADER_SIZE + TD_REPORT10_SIZE + _SIG_DATA_LEN_SIZE
SUPPORTED_VERSIONS = (4, 5)
TEE_TYPE_TDX = 0x81
TEE_TYPE_SGX = 0x00
ATTESTATION_KEY_ECDSA_P256 = 2
_ECDSA_SIGNATURE_AND_KEY_SIZE = 64 + 64  # the quote signature r||s, the attestation key x||y
CERT_TYPE_QE_REPORT = 6  # the outer certification data of a v4/v5 quote
_CERT_DATA_HEADER = struct.Struct("<HI")  # certification data type, size
_QE_REPORT_AND_SIGNATURE_SIZE = 384 + 64  # the QE's SGX report, the PCK key's signature
_HEADER = struct.Struct("<HHI")  # version, attestation key type, TEE type
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")

# TDREPORT (TDX 1.0 part, also the start of the 1.5 ones):
# (claim name, dcap-qvl field name, offset in the TD report, size)
_TD_REPORT_FIELDS: tuple[tuple[str, str, int, int], ...] = (
    ("TEE_TCB_SVN", "tee_tcb_svn", 0, 16),
    ("MRSEAM", "mr_seam", 16, 48),
    ("MRSIGNERSEAM", "mr_signer_seam", 64, 48),
    ("SEAMATTRIBUTES", "seam_attributes", 112, 8),
    ("TD_ATTRIBUTES", "td_attributes", 120, 8),
    ("XFAM", "xfam", 128, 8),
    ("MRTD", "mr_td", 136, 48),
    ("MRCONFIGID", "mr_config_id", 184, 48),
    ("MROWNER", "mr_owner", 232, 48),
    ("MROWNERCONFIG", "mr_owner_config", 280, 48),
    ("RTMR0", "rt_mr0", 328, 48),
    ("RTMR1", "rt_mr1", 376, 48),
    ("RTMR2", "rt_mr2", 424, 48),
    ("RTMR3", "rt_mr3", 472, 48),
    ("REPORTDATA", "report_data", 520, 64),
)
MEASUREMENT_REGISTERS = (
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
)
TD_ATTRIBUTES_DEBUG_BIT = 0  # TUD.DEBUG: bit 0 of byte 0 of TD_ATTRIBUTES

_LIBRARY_TEXT_MAX = 80
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_UNIX_SECONDS = 2**63 - 1

# dcap-qvl error text -> step, first match wins; matched case-insensitively against the whole
# text (the message and its "Caused by" chain). Anything unmatched is ``collateral``.
_RULES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("parse", ("failed to decode quote", "failed to parse quote"), "not a well-formed quote"),
    (
        "tcb",
        (
            "tcb status is invalid",
            "no matching tcb level",
            "tcb level mismatch",
            "below minimum required",
        ),
        "the platform's TCB level is not acceptable",
    ),
    (
        "expiry",
        ("expired", "notvalidyet", "not valid yet", "in the future", "not valid after"),
        "a certificate, CRL, TCB info or QE identity is not valid at",
    ),
    ("collateral", ("revoked",), "a certificate is revoked"),
    (
        "signature",
        (
            "isv enclave report signature",
            "for qe_report",
            "qe report hash mismatch",
            "qe auth data",
            "decode qe report",
        ),
        "the quote or QE report signature does not verify",
    ),
    ("collateral", ("crl", "revocation"), "a CRL is malformed or not signed by its issuer"),
    (
        "chain",
        ("pck cert format",),
        "no PCK certificate chain: the quote's certification data is not type 5",
    ),
    (
        "chain",
        ("qe mrsigner", "qe isvprodid", "qe miscselect", "qe attributes", "qe report validation"),
        "the quoting enclave is not the one Intel's QE identity names",
    ),
    ("tcb", ("tdx module",), "the TDX module does not match the TCB info"),
    (
        "collateral",
        (
            "tcb_info",
            "tcbinfo",
            "tcb info",
            "qe_identity",
            "qeidentity",
            "qe identity",
            "fmspc",
            "tdxmodule",
            "collateral",
        ),
        "the TCB info or QE identity is malformed, unsigned or for another platform",
    ),
    ("debug", ("debug mode",), "the TD runs in debug mode"),
    (
        "measurement",
        (
            "td attributes",
            "sept_ve_disable",
            "td profiling",
            "servtd_ext",
            "td migration",
            "mr service td",
        ),
        "the TD attributes are not acceptable",
    ),
    ("algorithm", ("attestation key type",), "the attestation key is not ECDSA P-256"),
    (
        "parse",
        (
            "quote version",
            "qe vendor",
            "tee type",
            "tee quote",
            "body type",
            "body size",
            "signed quote scope",
            "could not decode",
            "data length exceeds",
        ),
        "not a well-formed quote",
    ),
    (
        "chain",
        (
            "certificate",
            "pck",
            "root ca",
            "unknownissuer",
            "signature",
            "issuer",
            "causedasendentity",
            "endentityusedasca",
            "badder",
            "intel extension",
        ),
        "the PCK certificate chain does not verify to the pinned Intel root",
    ),
)
_FALLBACK = ("collateral", "verification failed")


@dataclass(frozen=True)
class _Layout:
    """Where the parts of a quote are: the TD report at ``report_offset`` (``body_size``
    bytes) and the signature data ending at ``signature_end``."""

    version: int
    report_offset: int
    body_size: int
    signature_end: int


@dataclass(frozen=True)
class _LibraryResult:
    """What dcap-qvl returned for a verified quote, as plain values."""

    status: str
    advisory_ids: tuple[str, ...]
    report: Mapping[str, Any]


def verify(
    evidence: bytes,
    policy: EvidencePolicy,
    now: datetime,
    collateral: Mapping[str, bytes],
) -> VerifiedClaims:
    """Verify a TDX quote with its collateral at ``now`` (timezone-aware), then ``policy``.

    Returns the claims of the verified TD report: ``MRTD``, ``RTMR0``-``RTMR3``,
    ``MRCONFIGID``, ``MROWNER``, ``MROWNERCONFIG``, ``MRSEAM``, ``TD_ATTRIBUTES`` and ``XFAM``
    as lowercase hex, ``REPORTDATA`` as the one report-data field, and the platform's
    ``tcb_status``, ``advisory_ids``, ``fmspc``, ``tee_tcb_svn`` and ``quote_version``.

    Raises:
        AttestationError: for any input that is not a genuine, current, acceptable quote;
            ``error.step`` is ``parse``, ``algorithm``, ``collateral``, ``chain``, ``expiry``,
            ``signature``, ``tcb``, ``debug``, ``measurement`` or ``report_data`` as the module
            docstring lists. No other exception escapes.
    """
    if not isinstance(evidence, bytes | bytearray | memoryview):
        raise AttestationError(f"{PROVIDER}: parse: the evidence is not bytes", step="parse")
    evidence = bytes(evidence)
    layout = _parse_layout(evidence)
    collateral_json, tcb_info = _load_collateral(collateral)
    now_secs = _unix_seconds(now)
    _check_pinned_root(now)
    result = _run_dcap_qvl(evidence, collateral_json, now_secs, now)
    fields = _td_report_fields(result.report)
    signed_report = evidence[layout.report_offset : layout.report_offset + TD_REPORT10_SIZE]
    for _, key, offset, size in _TD_REPORT_FIELDS:
        if fields[key] != signed_report[offset : offset + size]:
            raise AttestationError(
                f"{PROVIDER}: parse: the verified report differs from the signed TD report",
                step="parse",
            )
    _check_tcb_status(result.status, result.advisory_ids)
    claims = build_claims(
        fields,
        tcb_status=result.status,
        advisory_ids=result.advisory_ids,
        fmspc=_tcb_info_fmspc(tcb_info),
        quote_version=layout.version,
    )
    return check_claims(claims, policy)


def build_claims(
    fields: Mapping[str, bytes],
    *,
    tcb_status: str,
    advisory_ids: Sequence[str],
    fmspc: str | None,
    quote_version: int,
) -> VerifiedClaims:
    """The claims of a verified TD report, given its fields by dcap-qvl name (``mr_td``,
    ``rt_mr0``, ``td_attributes``, ``report_data``, ...; bytes as signed).

    ``debug`` is ``TUD.DEBUG``, bit 0 of the first byte of ``td_attributes``. Call it only
    with fields of a report whose signature and collateral have been verified.

    Raises ``AttestationError`` (step ``parse``) when a field is missing or of the wrong size.
    """
    by_claim: dict[str, bytes] = {}
    for claim, key, _, size in _TD_REPORT_FIELDS:
        value = fields.get(key)
        if not isinstance(value, bytes) or len(value) != size:
            raise AttestationError(f"{PROVIDER}: parse: the TD report lacks {key}", step="parse")
        by_claim[claim] = value
    platform = {
        "tcb_status": _printable(tcb_status),
        "advisory_ids": _printable(",".join(advisory_ids), limit=512),
        "tee_tcb_svn": by_claim["TEE_TCB_SVN"].hex(),
        "quote_version": str(quote_version),
    }
    if fmspc is not None:
        platform["fmspc"] = fmspc
    return VerifiedClaims(
        provider=PROVIDER,
        measurements={name: by_claim[name].hex() for name in MEASUREMENT_REGISTERS},
        report_data=(by_claim["REPORTDATA"],),
        platform=platform,
        debug=bool(by_claim["TD_ATTRIBUTES"][0] >> TD_ATTRIBUTES_DEBUG_BIT & 1),
        issued_at=None,
    )


def classify_library_error(text: str) -> tuple[str, str]:
    """The step and a short description for one dcap-qvl error text (first rule of
    ``_RULES`` that matches; ``collateral`` with a generic description otherwise)."""
    lowered = text.lower()
    for step, needles, description in _RULES:
        if any(needle in lowered for needle in needles):
            return step, description
    return _FALLBACK


def _parse_layout(evidence: bytes) -> _Layout:
    """Check the quote's framing: sizes, version, TEE type, key type, signature data bounds,
    outer certification data type, zero padding.

    Raises ``AttestationError``: step ``parse``, or ``algorithm`` for another key type.
    """
    if len(evidence) < MIN_QUOTE_SIZE:
        raise AttestationError(
            f"{PROVIDER}: parse: {len(evidence)} bytes is shorter than a TDX quote", step="parse"
        )
    version, key_type, tee_type = _HEADER.unpack_from(evidence, 0)
    if tee_type == TEE_TYPE_SGX:
        raise AttestationError(f"{PROVIDER}: parse: an SGX quote, not a TDX one", step="parse")
    if tee_type != TEE_TYPE_TDX:
        raise AttestationError(
            f"{PROVIDER}: parse: TEE type {tee_type:#x} is not TDX (0x81)", step="parse"
        )
    if version not in SUPPORTED_VERSIONS:
        raise AttestationError(
            f"{PROVIDER}: parse: quote version {version} is not 4 or 5", step="parse"
        )
    if key_type != ATTESTATION_KEY_ECDSA_P256:
        raise AttestationError(
            f"{PROVIDER}: algorithm: attestation key type {key_type} is not ECDSA P-256 (2)",
            step="algorithm",
        )
    if version == 4:
        report_offset, body_size = HEADER_SIZE, TD_REPORT10_SIZE
    else:
        body_size = _U32.unpack_from(evidence, HEADER_SIZE + 2)[0]
        report_offset = HEADER_SIZE + _V5_BODY_DESCRIPTOR_SIZE
        if body_size < TD_REPORT10_SIZE:
            raise AttestationError(
                f"{PROVIDER}: parse: a quote body of {body_size} bytes is too short",
                step="parse",
            )
    length_offset = report_offset + body_size
    if length_offset + _SIG_DATA_LEN_SIZE > len(evidence):
        raise AttestationError(f"{PROVIDER}: parse: the quote is truncated", step="parse")
    signature_size = _U32.unpack_from(evidence, length_offset)[0]
    signature_end = length_offset + _SIG_DATA_LEN_SIZE + signature_size
    if signature_end > len(evidence):
        raise AttestationError(f"{PROVIDER}: parse: the signature data is truncated", step="parse")
    _check_certification_data(evidence, length_offset + _SIG_DATA_LEN_SIZE, signature_end)
    if any(evidence[signature_end:]):
        raise AttestationError(
            f"{PROVIDER}: parse: non-zero bytes after the signature data", step="parse"
        )
    return _Layout(version, report_offset, body_size, signature_end)


def _check_certification_data(evidence: bytes, start: int, end: int) -> None:
    """The signature data ``evidence[start:end]`` is framed exactly: the quote signature and
    the attestation key, then certification data of type 6 (QE report) filling the rest, in
    which the QE report, its signature, the QE authentication data and the inner (PCK)
    certification data fill the rest again. dcap-qvl tolerates slack in these sizes; no
    signature covers them, so slack would make the quote malleable.

    Raises ``AttestationError`` (step ``parse``) otherwise.
    """

    def fail(what: str) -> NoReturn:
        raise AttestationError(f"{PROVIDER}: parse: {what}", step="parse")

    offset = start + _ECDSA_SIGNATURE_AND_KEY_SIZE
    if offset + _CERT_DATA_HEADER.size > end:
        fail("the signature data is truncated")
    cert_type, size = _CERT_DATA_HEADER.unpack_from(evidence, offset)
    if cert_type != CERT_TYPE_QE_REPORT:
        fail(f"certification data type {cert_type} is not 6 (QE report)")
    offset += _CERT_DATA_HEADER.size
    if offset + size != end:
        fail("the certification data does not fill the signature data")
    offset += _QE_REPORT_AND_SIGNATURE_SIZE
    if offset + _U16.size > end:
        fail("the QE report certification data is truncated")
    offset += _U16.size + _U16.unpack_from(evidence, offset)[0]
    if offset + _CERT_DATA_HEADER.size > end:
        fail("the QE report certification data is truncated")
    _, size = _CERT_DATA_HEADER.unpack_from(evidence, offset)
    if offset + _CERT_DATA_HEADER.size + size != end:
        fail("the PCK certification data does not fill the QE report certification data")


def _load_collateral(collateral: Mapping[str, bytes]) -> tuple[str, str]:
    """``collateral.json`` checked for shape and re-serialized (so dcap-qvl reads exactly the
    fields checked here), and its ``tcb_info`` text.

    Raises ``AttestationError`` (step ``collateral``) when it is missing or malformed.
    """
    raw = collateral.get(COLLATERAL_NAME)
    if raw is None:
        raise AttestationError(
            f"{PROVIDER}: collateral: {COLLATERAL_NAME} is missing", step="collateral"
        )
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise AttestationError(
            f"{PROVIDER}: collateral: {COLLATERAL_NAME} is not bytes", step="collateral"
        )
    try:
        document = json.loads(bytes(raw).decode("utf-8"), object_pairs_hook=_unique_keys)
    except (TypeError, ValueError, RecursionError) as exc:
        raise AttestationError(
            f"{PROVIDER}: collateral: {COLLATERAL_NAME} is not UTF-8 JSON", step="collateral"
        ) from exc
    if not isinstance(document, dict):
        raise AttestationError(
            f"{PROVIDER}: collateral: {COLLATERAL_NAME} is not a JSON object", step="collateral"
        )
    missing = sorted(_COLLATERAL_FIELDS - document.keys())
    if missing:
        raise AttestationError(
            f"{PROVIDER}: collateral: {COLLATERAL_NAME} lacks {missing[0]}", step="collateral"
        )
    unknown = sorted(document.keys() - _COLLATERAL_FIELDS - _OPTIONAL_COLLATERAL_FIELDS)
    if unknown:
        raise AttestationError(
            f"{PROVIDER}: collateral: {COLLATERAL_NAME} has an unknown field "
            f"{_printable(unknown[0], limit=40)!r}",
            step="collateral",
        )
    for name in sorted(_COLLATERAL_FIELDS):
        if not isinstance(document[name], str):
            raise AttestationError(
                f"{PROVIDER}: collateral: {name} is not a string", step="collateral"
            )
    chain = document.get("pck_certificate_chain")
    if chain is not None and not isinstance(chain, str):
        raise AttestationError(
            f"{PROVIDER}: collateral: pck_certificate_chain is not a string", step="collateral"
        )
    return json.dumps(document), cast(str, document["tcb_info"])


def _unique_keys(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object hook refusing duplicate names (parsers disagree on which one wins)."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError("duplicate name in a JSON object")
        result[key] = value
    return result


def _unix_seconds(now: datetime) -> int:
    """``now`` as whole Unix seconds (rounded down).

    Raises ``AttestationError`` (step ``expiry``) for a naive or out-of-range time.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise AttestationError(
            f"{PROVIDER}: expiry: the verification time needs a timezone", step="expiry"
        )
    seconds = (now - _EPOCH) // timedelta(seconds=1)
    if not 0 <= seconds <= _MAX_UNIX_SECONDS:
        raise AttestationError(
            f"{PROVIDER}: expiry: the verification time is before 1970", step="expiry"
        )
    return seconds


@functools.cache
def _pinned_root() -> x509.Certificate:
    """The embedded Intel SGX Root CA, after checking its SHA-256 against the pin.

    Raises ``AttestationError`` (step ``chain``) if the constant was altered.
    """
    if hashlib.sha256(INTEL_SGX_ROOT_CA_DER).hexdigest() != INTEL_SGX_ROOT_CA_SHA256:
        raise AttestationError(
            f"{PROVIDER}: chain: the embedded Intel root is not the pinned one", step="chain"
        )
    return load_certificate(INTEL_SGX_ROOT_CA_DER, provider=PROVIDER, what="Intel SGX Root CA")


def _check_pinned_root(now: datetime) -> None:
    """The pinned root signs itself and is valid at ``now`` (dcap-qvl takes a trust anchor's
    name and key only, checking neither).

    Raises ``AttestationError``: step ``chain`` or ``expiry``.
    """
    verify_chain([_pinned_root()], roots={INTEL_SGX_ROOT_CA_SHA256}, now=now, provider=PROVIDER)


def _run_dcap_qvl(
    quote: bytes, collateral_json: str, now_secs: int, now: datetime
) -> _LibraryResult:
    """Verify with dcap-qvl (its one untyped call site) against the pinned root only.

    Raises ``AttestationError`` for every failure the library reports, with the step of
    :func:`classify_library_error` and at most 80 printable characters of its text.
    """
    try:
        collateral = dcap_qvl.QuoteCollateralV3.from_json(collateral_json)
    except BaseException as exc:
        _reraise_foreign(exc)
        raise AttestationError(
            f"{PROVIDER}: collateral: dcap-qvl refuses {COLLATERAL_NAME} ({_library_text(exc)})",
            step="collateral",
        ) from exc
    try:
        verified = dcap_qvl.verify_with_root_ca(quote, collateral, INTEL_SGX_ROOT_CA_DER, now_secs)
        status = str(verified.status)
        advisory_ids = tuple(str(advisory) for advisory in verified.advisory_ids)
        document = json.loads(str(verified.to_json()))
    except BaseException as exc:
        _reraise_foreign(exc)
        step, description = classify_library_error(str(exc))
        if step == "expiry":
            description += f" {now.isoformat(timespec='seconds')}"
        raise AttestationError(
            f"{PROVIDER}: {step}: {description} (dcap-qvl: {_library_text(exc)})", step=step
        ) from exc
    report = document.get("report") if isinstance(document, dict) else None
    if not isinstance(report, dict):
        raise AttestationError(f"{PROVIDER}: parse: dcap-qvl returned no TD report", step="parse")
    return _LibraryResult(status, advisory_ids, report)


def _reraise_foreign(exc: BaseException) -> None:
    """Re-raise what is not the library's failure (interrupts, exits); keep ``Exception``s
    and pyo3's ``PanicException`` (a ``BaseException``) to be mapped."""
    if isinstance(exc, Exception) or type(exc).__name__ == "PanicException":
        return
    raise exc


def _td_report_fields(report: Mapping[str, Any]) -> dict[str, bytes]:
    """The TD report fields (TDX 1.0 part) of dcap-qvl's verified report, as bytes.

    dcap-qvl serializes ``{"TD10": {...}}``, or ``{"TD15": {"base": {...}, ...}}`` (and
    deeper ``base`` nesting for later layouts), with hex strings.

    Raises ``AttestationError`` (step ``parse``) for an SGX report or an unexpected shape.
    """
    if len(report) != 1:
        raise AttestationError(f"{PROVIDER}: parse: an unexpected verified report", step="parse")
    ((kind, node),) = report.items()
    if not str(kind).startswith("TD"):
        raise AttestationError(
            f"{PROVIDER}: parse: the verified report is not a TD report", step="parse"
        )
    for _ in range(4):
        if not isinstance(node, dict) or "mr_td" in node:
            break
        node = node.get("base")
    if not isinstance(node, dict):
        raise AttestationError(f"{PROVIDER}: parse: an unexpected verified report", step="parse")
    fields: dict[str, bytes] = {}
    for _, key, _, size in _TD_REPORT_FIELDS:
        value = node.get(key)
        try:
            decoded = bytes.fromhex(value) if isinstance(value, str) else None
        except ValueError:
            decoded = None
        if decoded is None or len(decoded) != size:
            raise AttestationError(
                f"{PROVIDER}: parse: the verified report lacks {key}", step="parse"
            )
        fields[key] = decoded
    return fields


def _check_tcb_status(status: str, advisory_ids: Sequence[str]) -> None:
    """Raises ``AttestationError`` (step ``tcb``) for a status not in
    :data:`ACCEPTED_TCB_STATUSES`, naming it and its advisories."""
    if status in ACCEPTED_TCB_STATUSES:
        return
    advisories = _printable(", ".join(advisory_ids), limit=_LIBRARY_TEXT_MAX) or "none"
    raise AttestationError(
        f"{PROVIDER}: tcb: TCB status {_printable(status, limit=40)} is not accepted "
        f"(advisories: {advisories})",
        step="tcb",
    )


def _tcb_info_fmspc(tcb_info: str) -> str | None:
    """The FMSPC of the TCB info dcap-qvl verified (it checks that the PCK certificate's
    FMSPC is this one), lowercase hex; ``None`` when it cannot be read."""
    try:
        value = json.loads(tcb_info).get("fmspc")
        if isinstance(value, str) and len(value) == 12:
            return bytes.fromhex(value).hex()
    except (AttributeError, TypeError, ValueError, RecursionError):
        pass
    return None


def _library_text(exc: BaseException) -> str:
    """At most 80 printable ASCII characters of a library error, whitespace collapsed,
    without dcap-qvl's "Verification failed: " prefix."""
    text = " ".join(str(exc).split())
    for prefix in ("Verification failed: ", "Failed to parse JSON: "):
        text = text.removeprefix(prefix)
    return _printable(text, limit=_LIBRARY_TEXT_MAX)


def _printable(text: str, *, limit: int = _LIBRARY_TEXT_MAX) -> str:
    """``text`` reduced to printable ASCII and cut to ``limit`` characters."""
    return "".join(ch for ch in text if " " <= ch <= "~")[:limit]
