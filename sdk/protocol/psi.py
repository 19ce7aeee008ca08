"""Match previews: ECDH private-set-intersection cardinality (PSI-CA), a thin safe recipe over
``openmined-psi`` (the ``party`` extra; imported lazily, and only here).

Two parties each learn ``|A ∩ B|`` of their normalised identifiers and nothing else about the
other's set but its size. The protocol is run **in both directions** (each party is the PSI
client once) so that each side computes the size itself; the coordinator relays opaque messages.

**Elements.** An identifier enters the protocol as ``SHA-256(prefix ‖ id)`` with
``prefix = "sealroom-psi-v1" 0x00 ‖ JCS([room_id, manifest_digest, session, id_kind]) ‖ 0x00``
(RFC 8785 JSON, which never contains 0x00, so the encoding is injective). The library maps it
to P-256 (SHA-256 try-and-increment) and encrypts it under a key used for this session only:
an encrypted element from another room, manifest, session or identifier kind matches nothing.
Identifiers are de-duplicated and shuffled first.

**Messages.** Each message is a *frame*: ``"SRPSI01\\n" ‖ u32be(len(header)) ‖ header ‖ body``,
where the header is a DSSE envelope (kind ``psi_message``) signed by the sender's party key
naming room, manifest, session, sender, kind (``request``, ``setup``, ``response``), part,
number of parts, element count, set size and the body's SHA-256 and size; the body is the
library's protobuf. A coordinator cannot inject, alter, swap or replay messages (it can only
withhold them): a receiver opens a frame only when the sender's manifest key signed it for
exactly this session, kind and part.
Requests and responses are cut into parts of at most :data:`PART_ELEMENTS` elements (parallel
work, bounded bodies); a server re-encrypts every request part, sorts the union and cuts it
into parts again, so the per-part counts the client sees are of random subsets of its set.

**Checks before the library sees a byte.** A frame is refused (one opaque :class:`PsiError`,
``E_INPUT``; a bad signature is ``E_SIGNATURE``) when it exceeds the cap of its kind and
sizes (:func:`message_cap`), when its header does not verify or does not name exactly what is
expected, when the body's digest or size differ, when the protobuf does not parse, when the
element counts are not the ones the sizes imply, when an element is not a 33-byte compressed
point, and — for a setup — unless it is a Golomb-compressed set whose ``hash_range`` is exactly
the one the two sizes imply, whose ``div`` is in [0, 62] and whose bits fit the cap (the bits
are then zero-padded so that the library's decoder never reads past them). The library's own
errors become the same opaque error.

**False positives.** The setup is a Golomb-compressed set (GCS) of hashes modulo
``hash_range``; ``fpr = n_client · max(n_client, n_server) / R`` makes ``hash_range`` = ``R`` =
``min(2^60, n_server · 2^50)``: as large as the library's arithmetic allows with margin (its
``hash_range`` is a signed 64-bit integer — ``fpr`` 1e-9 at 100k × 100k would overflow it —
and its Golomb parameter is computed in doubles from ``n_server / hash_range``, which breaks
below 2^-53: a set of one element with ``hash_range`` 2^60 makes it throw). The expected number
of false positives of one direction is ``n_client · n_server / R`` (≈ 8.7e-9 at 100k × 100k,
8.7e-7 at 1M × 1M; ``n_client / 2^50`` when the server's set has fewer than 1024 ids); a false
positive can only add to the count, never remove from it. Identifiers are de-duplicated, so a count is of distinct
identifiers.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from sdk.errors import ConfigError, InputError, PrivacyError, SignatureError
from sdk.protocol.canonical import canonical_json
from sdk.protocol.dsse import Envelope, open_envelope, sign_envelope
from sdk.protocol.fields import (
    check_keys,
    expect_mapping,
    get_choice,
    get_hex64,
    get_int,
    get_name,
)
from sdk.protocol.keys import Signer

PROTOCOL = "sealroom-psi-v1"
KINDS = ("request", "setup", "response")
#: elements of one request or response part
PART_ELEMENTS = 1 << 16
#: the largest set a preview takes (about 80 minutes of one core per party at this size)
MAX_SET_SIZE = 10_000_000
ELEMENT_BYTES = 33  # a compressed P-256 point: 0x02 or 0x03, then x
HASH_RANGE_BITS = 60
#: hash_range / n_server stays below 2^50 (the library's Golomb parameter needs n_s / range > 2^-53)
SPREAD_BITS = 50
MAX_DIV = 62
FRAME_MAGIC = b"SRPSI01\n"
MAX_HEADER_BYTES = 8 * 1024
FRAME_OVERHEAD = len(FRAME_MAGIC) + 4 + MAX_HEADER_BYTES
_PAD = bytes(16)  # zero bytes after the Golomb bits: the decoder reads at most 8 past its end
_SESSION_CHARS = frozenset("0123456789abcdef")


class PsiError(InputError):
    """A match-preview message is malformed, oversized or not the one expected.

    Deliberately opaque: a truncated, altered, foreign or replayed message, a wrong count or a
    library failure all give this one message naming only the kind and part, never content."""

    def __init__(self, kind: str = "message", part: int = 0) -> None:
        super().__init__(f"match preview: malformed or unexpected {kind} message (part {part})")


def _lib() -> Any:
    try:
        import private_set_intersection.python as lib
    except ImportError as exc:  # pragma: no cover - the party extra is installed in tests
        raise ConfigError("match previews need openmined-psi: install the party extra "
                          "(pip install 'sealroom[party]')") from exc
    return lib


def check_session_id(value: object, where: str = "session") -> str:
    """A session id: 32 lowercase hex characters (the coordinator draws it at random)."""
    if not isinstance(value, str) or len(value) != 32 or not set(value) <= _SESSION_CHARS:
        raise InputError(f"{where}: expected 32 lowercase hex characters")
    return value


# -- sizes ------------------------------------------------------------------------------------


def check_set_size(size: int, minimum: int, whose: str) -> int:
    """``size`` when it is at least ``minimum`` (the room's minimum group size for the pair)
    and at most :data:`MAX_SET_SIZE`. Raises ``PrivacyError`` below, ``InputError`` above."""
    if size < minimum:
        raise PrivacyError(f"match preview refused: {whose} set has {size} distinct ids, "
                           f"below the minimum group size {minimum}")
    if size > MAX_SET_SIZE:
        raise InputError(f"match preview: {whose} set has {size} distinct ids, more than "
                         f"{MAX_SET_SIZE}")
    return size


def part_sizes(total: int) -> list[int]:
    """The element counts of the parts of a request (or response) of ``total`` elements."""
    full, rest = divmod(total, PART_ELEMENTS)
    return [PART_ELEMENTS] * full + ([rest] if rest else [])


def hash_range_target(n_server: int) -> int:
    """The ``hash_range`` a setup of ``n_server`` elements aims at (module doc)."""
    return min(1 << HASH_RANGE_BITS, max(1, n_server) << SPREAD_BITS)


def false_positive_rate(n_client: int, n_server: int) -> float:
    """The ``fpr`` argument of the setup, for :func:`hash_range_target` (module doc)."""
    return n_client * max(n_client, n_server) / float(hash_range_target(n_server))


def expected_hash_range(n_client: int, n_server: int) -> int:
    """The ``hash_range`` the library derives from the sizes, computed the way it does
    (``int64(max(n_c, n_s) / (fpr / n_c))``, IEEE doubles, truncated)."""
    corrected = false_positive_rate(n_client, n_server) / n_client
    return int(max(n_client, n_server) / corrected)


def _setup_bits_cap(n_server: int) -> int:
    return 9 * n_server + 64


def message_names(sender_size: int, receiver_size: int) -> list[str]:
    """The messages a party of a session sends: its request parts, its setup, and its
    response parts (one per part of the partner's request)."""
    return ([f"request-{i}" for i in range(len(part_sizes(sender_size)))] + ["setup"]
            + [f"response-{i}" for i in range(len(part_sizes(receiver_size)))])


def _parse_name(name: str) -> tuple[str, int]:
    kind, _, part = name.partition("-")
    if name == "setup":
        return "setup", 0
    if kind not in ("request", "response") or not part.isdigit() or len(part) > 6 \
            or str(int(part)) != part:
        raise InputError("match preview: unknown message name")
    return kind, int(part)


def message_cap(name: str, sender_size: int, receiver_size: int) -> int:
    """The most bytes message ``name`` (see :func:`message_names`) of a sender whose set has
    ``sender_size`` ids, to a partner with ``receiver_size``, may have. Raises ``InputError``
    for a name that is not one of them."""
    if name not in message_names(sender_size, receiver_size):
        raise InputError("match preview: unknown message name")
    kind, part = _parse_name(name)
    if kind == "setup":
        return FRAME_OVERHEAD + 32 + _setup_bits_cap(sender_size)
    count = part_sizes(sender_size if kind == "request" else receiver_size)[part]
    return FRAME_OVERHEAD + 8 + count * (ELEMENT_BYTES + 2)


# -- elements ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PsiContext:
    """What every element and message of one session is bound to."""

    room_id: str
    manifest_digest: str
    session: str
    id_kind: str

    def prefix(self) -> bytes:
        """The domain-separation prefix of this session's elements (module doc)."""
        parts = [self.room_id, self.manifest_digest, self.session, self.id_kind]
        return PROTOCOL.encode() + b"\x00" + canonical_json(parts) + b"\x00"


def encode_ids(context: PsiContext, ids: Iterable[str]) -> list[bytes]:
    """The distinct ``ids`` as this session's elements, in random order."""
    base = hashlib.sha256(context.prefix())
    out: list[bytes] = []
    for text in dict.fromkeys(ids):
        h = base.copy()
        h.update(text.encode("utf-8"))
        out.append(h.digest())
    secrets.SystemRandom().shuffle(out)
    return out


# -- frames -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PsiHeader:
    """The signed header of one message (DSSE kind ``psi_message``)."""

    KIND: ClassVar[str] = "psi_message"

    room_id: str
    manifest_digest: str
    session: str
    sender: str
    kind: str
    part: int
    parts: int
    count: int
    total: int
    body_sha256: str
    body_size: int

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: object) -> PsiHeader:
        where = "psi_message"
        d = expect_mapping(data, where)
        check_keys(d, where, [f.name for f in fields(cls)])
        return cls(
            room_id=get_name(d, "room_id", where),
            manifest_digest=get_hex64(d, "manifest_digest", where),
            session=check_session_id(d["session"], f"{where}.session"),
            sender=get_name(d, "sender", where),
            kind=get_choice(d, "kind", where, KINDS),
            part=get_int(d, "part", where, maximum=MAX_SET_SIZE),
            parts=get_int(d, "parts", where, minimum=1, maximum=MAX_SET_SIZE),
            count=get_int(d, "count", where, maximum=MAX_SET_SIZE),
            total=get_int(d, "total", where, maximum=MAX_SET_SIZE),
            body_sha256=get_hex64(d, "body_sha256", where),
            body_size=get_int(d, "body_size", where, maximum=1 << 40),
        )


def _frame(context: PsiContext, signer: Signer, sender: str, kind: str, part: int, parts: int,
           count: int, total: int, body: bytes) -> bytes:
    header = PsiHeader(context.room_id, context.manifest_digest, context.session, sender, kind,
                       part, parts, count, total, hashlib.sha256(body).hexdigest(), len(body))
    head = sign_envelope(PsiHeader.KIND, header.to_dict(), [signer]).to_json()
    if len(head) > MAX_HEADER_BYTES:  # pragma: no cover - a header is a few hundred bytes
        raise InputError("match preview: header too large")
    return FRAME_MAGIC + len(head).to_bytes(4, "big") + head + body


def _open_frame(frame: bytes, context: PsiContext, sender: str, sender_key: bytes, kind: str,
                part: int, cap: int) -> tuple[PsiHeader, bytes]:
    """Check size, framing, signature and header of a frame; returns the header and body."""
    if not isinstance(frame, bytes | bytearray) or len(frame) > cap \
            or not frame.startswith(FRAME_MAGIC) or len(frame) < FRAME_OVERHEAD - MAX_HEADER_BYTES:
        raise PsiError(kind, part)
    at = len(FRAME_MAGIC)
    size = int.from_bytes(frame[at:at + 4], "big")
    if size > MAX_HEADER_BYTES or at + 4 + size > len(frame):
        raise PsiError(kind, part)
    head, body = bytes(frame[at + 4:at + 4 + size]), bytes(frame[at + 4 + size:])
    try:
        envelope = Envelope.from_json(head, max_bytes=MAX_HEADER_BYTES)
        payload, _ = open_envelope(envelope, PsiHeader.KIND, {sender: sender_key},
                                   max_payload_bytes=MAX_HEADER_BYTES)
        header = PsiHeader.from_dict(payload)
    except SignatureError:
        raise SignatureError(f"match preview: {kind} message (part {part}) is not signed by "
                             f"{sender}") from None
    except InputError:
        raise PsiError(kind, part) from None
    expected = (context.room_id, context.manifest_digest, context.session, sender, kind, part)
    got = (header.room_id, header.manifest_digest, header.session, header.sender, header.kind,
           header.part)
    if got != expected or header.body_size != len(body) \
            or hashlib.sha256(body).hexdigest() != header.body_sha256:
        raise PsiError(kind, part)
    return header, body


def _points(elements: Sequence[bytes], kind: str, part: int) -> list[bytes]:
    for element in elements:
        if len(element) != ELEMENT_BYTES or element[0] not in (2, 3):
            raise PsiError(kind, part)
    return list(elements)


@dataclass(frozen=True)
class VerifiedSetup:
    """A partner's setup that passed every check, re-serialised with its bits padded."""

    data: bytes
    n_server: int


class PsiParty:
    """One party's side of a two-way PSI-CA session: the client of its own request and the
    server of its partner's. Holds two fresh keys (one per role) that never leave it; every
    library object is created from them inside one method call, so methods may run in
    parallel threads (the library releases the GIL) on different parts."""

    def __init__(self, context: PsiContext, name: str, signer: Signer, partner: str,
                 partner_key: bytes, elements: Sequence[bytes]) -> None:
        lib = _lib()
        self.context = context
        self.name = name
        self.partner = partner
        self._signer = signer
        self._partner_key = partner_key
        self._elements = list(elements)
        self._client_key: bytes = lib.client.CreateWithNewKey(False).GetPrivateKeyBytes()
        self._server_key: bytes = lib.server.CreateWithNewKey(False).GetPrivateKeyBytes()

    @property
    def size(self) -> int:
        """How many distinct elements this party brings."""
        return len(self._elements)

    def _part(self, part: int) -> list[bytes]:
        return self._elements[part * PART_ELEMENTS:(part + 1) * PART_ELEMENTS]

    # -- as the client of its own request ------------------------------------------------------

    def request(self, part: int) -> bytes:
        """The frame of request part ``part`` (this party's elements, under its client key)."""
        lib = _lib()
        sizes = part_sizes(self.size)
        client = lib.client.CreateFromKey(self._client_key, False)
        body = client.CreateRequest(self._part(part)).SerializeToString()
        return _frame(self.context, self._signer, self.name, "request", part, len(sizes),
                      sizes[part], self.size, body)

    def read_setup(self, frame: bytes, partner_size: int) -> VerifiedSetup:
        """Check the partner's setup (module doc); ``partner_size`` is what its request said."""
        cap = message_cap("setup", partner_size, self.size)
        header, body = _open_frame(frame, self.context, self.partner, self._partner_key,
                                   "setup", 0, cap)
        if (header.parts, header.count, header.total) != (1, partner_size, partner_size):
            raise PsiError("setup", 0)
        lib = _lib()
        try:
            setup = lib.ServerSetup()
            setup.ParseFromString(body)
            ok = setup.WhichOneof("data_structure") == "gcs"
            gcs = setup.gcs
            ok = ok and gcs.hash_range == expected_hash_range(self.size, partner_size)
            ok = ok and 0 <= gcs.div <= MAX_DIV and len(gcs.bits) <= _setup_bits_cap(partner_size)
            if not ok:
                raise PsiError("setup", 0)
            gcs.bits = bytes(gcs.bits) + _PAD
            data: bytes = setup.SerializeToString()
        except PsiError:
            raise
        except Exception:
            raise PsiError("setup", 0) from None
        return VerifiedSetup(data, partner_size)

    def count(self, setup: VerifiedSetup, part: int, frame: bytes) -> int:
        """How many of this party's elements in response part ``part`` the setup holds."""
        sizes = part_sizes(self.size)
        if not 0 <= part < len(sizes):
            raise PsiError("response", part)
        cap = message_cap(f"response-{part}", setup.n_server, self.size)
        header, body = _open_frame(frame, self.context, self.partner, self._partner_key,
                                   "response", part, cap)
        if (header.parts, header.count, header.total) != (len(sizes), sizes[part], self.size):
            raise PsiError("response", part)
        lib = _lib()
        try:
            response = lib.Response()
            response.ParseFromString(body)
            if len(response.encrypted_elements) != sizes[part]:
                raise PsiError("response", part)
            _points(response.encrypted_elements, "response", part)
            server_setup = lib.ServerSetup()
            server_setup.ParseFromString(setup.data)
            client = lib.client.CreateFromKey(self._client_key, False)
            found = int(client.GetIntersectionSize(server_setup, response))
        except PsiError:
            raise
        except Exception:
            raise PsiError("response", part) from None
        if not 0 <= found <= sizes[part]:
            raise PsiError("response", part)
        return found

    # -- as the server of the partner's request ------------------------------------------------

    def setup(self, partner_size: int) -> bytes:
        """The frame of this party's setup (its elements, under its server key) for a partner
        request of ``partner_size`` elements."""
        lib = _lib()
        server = lib.server.CreateFromKey(self._server_key, False)
        fpr = false_positive_rate(partner_size, self.size)
        body = server.CreateSetupMessage(fpr, partner_size, self._elements,
                                         lib.DataStructure.GCS).SerializeToString()
        return _frame(self.context, self._signer, self.name, "setup", 0, 1, self.size,
                      self.size, body)

    def answer(self, part: int, frame: bytes, partner_size: int) -> list[bytes]:
        """Check the partner's request part ``part`` and re-encrypt it under the server key;
        returns the re-encrypted elements (for :meth:`responses`)."""
        sizes = part_sizes(partner_size)
        if not 0 <= part < len(sizes):
            raise PsiError("request", part)
        cap = message_cap(f"request-{part}", partner_size, self.size)
        header, body = _open_frame(frame, self.context, self.partner, self._partner_key,
                                   "request", part, cap)
        if (header.parts, header.count, header.total) != (len(sizes), sizes[part], partner_size):
            raise PsiError("request", part)
        lib = _lib()
        try:
            request = lib.Request()
            request.ParseFromString(body)
            if request.reveal_intersection or len(request.encrypted_elements) != sizes[part]:
                raise PsiError("request", part)
            _points(request.encrypted_elements, "request", part)
            server = lib.server.CreateFromKey(self._server_key, False)
            answered = list(server.ProcessRequest(request).encrypted_elements)
        except PsiError:
            raise
        except Exception:
            raise PsiError("request", part) from None
        return _points(answered, "request", part)

    def responses(self, answered: Sequence[Sequence[bytes]], partner_size: int) -> list[bytes]:
        """The response frames: every answered part, sorted together and cut again into parts
        (so per-part counts say nothing about how the partner cut its request)."""
        merged = sorted(e for part in answered for e in part)
        if len(merged) != partner_size:
            raise InputError("match preview: the partner's request parts are incomplete")
        lib = _lib()
        sizes = part_sizes(partner_size)
        frames = []
        at = 0
        for part, count in enumerate(sizes):
            response = lib.Response()
            response.encrypted_elements.extend(merged[at:at + count])
            at += count
            frames.append(_frame(self.context, self._signer, self.name, "response", part,
                                 len(sizes), count, partner_size, response.SerializeToString()))
        return frames

    def request_size(self, frame: bytes, part: int = 0) -> int:
        """The set size a partner's request part declares in its signed header (checked again,
        part by part, by :meth:`answer`)."""
        header, _ = _open_frame(frame, self.context, self.partner, self._partner_key, "request",
                                part, FRAME_OVERHEAD + 8 + PART_ELEMENTS * (ELEMENT_BYTES + 2))
        return header.total


__all__ = [
    "MAX_SET_SIZE",
    "PART_ELEMENTS",
    "PsiContext",
    "PsiError",
    "PsiHeader",
    "PsiParty",
    "VerifiedSetup",
    "check_session_id",
    "check_set_size",
    "encode_ids",
    "expected_hash_range",
    "false_positive_rate",
    "message_cap",
    "message_names",
    "part_sizes",
]
