"""Sealed files: streaming chunked AEAD under a fresh data key wrapped to an X25519 key.

Format (all integers big-endian)::

    magic "SEALRM01" | header length (4 bytes) | header (canonical JSON) | chunk 0 | chunk 1 | ...

Each chunk is AES-256-GCM over at most ``chunk_size`` plaintext bytes, nonce = chunk index
(8 bytes) || 4 zero bytes (the data key is fresh per file, so nonces never repeat under a key),
associated data = SHA-256(header) || chunk index || final flag. Every chunk but the last holds
exactly ``chunk_size`` bytes; the last holds fewer (an empty final chunk follows a plaintext
that fills its chunks exactly). So truncation, reordering, a chunk from another file and a
swapped header are all detected.

The data key is wrapped to the recipient's X25519 key with a libsodium sealed box. A sealed
box does not authenticate its sender, so the party also signs a *key commitment* in its upload
statement (``SHA-256("sealroom-key-commitment" || data key || file id)``): a sealed file that
someone else built under another key fails the commitment check before any chunk is read.

Every failure of opening gives the same opaque :class:`DecryptionError`. Memory stays flat:
one chunk buffer, whatever the file size. Sealing hashes the ciphertext once as it is written;
opening hashes nothing (the committed key authenticates every chunk).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import os
import queue
import struct
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from sdk.errors import DecryptionError, InputError, ResourceError
from sdk.protocol.canonical import canonical_json, parse_json

MAGIC = b"SEALRM01"
DEFAULT_CHUNK_SIZE = 1 << 20
MAX_CHUNK_SIZE = 1 << 24
MAX_HEADER_BYTES = 16 * 1024
TAG_SIZE = 16
CIPHER = "AES-256-GCM"


@dataclass(frozen=True)
class SealedHeader:
    """The parsed header of a sealed file. ``raw`` is exactly the authenticated bytes."""

    raw: bytes
    chunk_size: int
    file_id: bytes
    wrapped_key: bytes
    recipient_key: bytes
    binding: dict[str, Any]

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.raw).digest()

    @property
    def length(self) -> int:
        """Bytes taken by magic, length prefix and header."""
        return len(MAGIC) + 4 + len(self.raw)


@dataclass(frozen=True)
class SealResult:
    """What sealing produced: the digests and sizes the upload statement signs."""

    ciphertext_digest: str
    ciphertext_size: int
    plaintext_size: int
    key_commitment: str
    header: SealedHeader


def key_commitment(data_key: bytes, file_id: bytes) -> str:
    """The commitment a party signs to bind its upload to one data key."""
    return hashlib.sha256(b"sealroom-key-commitment" + data_key + file_id).hexdigest()


def _aad(header_digest: bytes, index: int, final: bool) -> bytes:
    return header_digest + struct.pack(">QB", index, 1 if final else 0)


def _nonce(index: int) -> bytes:
    return struct.pack(">Q", index) + b"\x00\x00\x00\x00"


class _HashingWriter:
    """Hashes and writes ciphertext on a second thread while the caller encrypts the next
    chunk: SHA-256 and file writes release the GIL, AES-GCM encryption does not, so the two
    overlap on two cores. At most ``depth`` chunks wait in the queue (memory stays bounded)."""

    def __init__(self, dst: BinaryIO, depth: int = 2) -> None:
        self.dst = dst
        self.hash = hashlib.sha256()
        self.size = 0
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name="seal-writer", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while True:
            data = self._queue.get()
            if data is None:
                return
            if self._error is not None:
                continue
            try:
                self.hash.update(data)
                self.dst.write(data)
                self.size += len(data)
            except BaseException as exc:  # re-raised in the caller's thread
                self._error = exc

    def write(self, data: bytes) -> None:
        if self._error is not None:
            self.close()
        self._queue.put(data)

    def close(self) -> None:
        """Wait for every queued chunk; re-raise a write error in the caller's thread."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error


def seal_stream(
    src: BinaryIO,
    dst: BinaryIO,
    recipient_public: bytes,
    binding: Mapping[str, Any],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> SealResult:
    """Seal everything read from ``src`` to ``recipient_public`` (X25519), writing to ``dst``.

    ``binding`` (room, dataset, version, ...) is written into the authenticated header.
    Memory use is one chunk. Raises ``InputError`` for a bad key or chunk size.
    """
    if not 1024 <= chunk_size <= MAX_CHUNK_SIZE:
        raise InputError("sealing: chunk size out of range")
    if len(recipient_public) != 32:
        raise InputError("sealing: recipient key must be 32 bytes")
    data_key = AESGCM.generate_key(bit_length=256)
    file_id = os.urandom(16)
    wrapped = SealedBox(PublicKey(recipient_public)).encrypt(data_key)
    header_raw = canonical_json(
        {
            "version": 1,
            "cipher": CIPHER,
            "chunk_size": chunk_size,
            "file_id": file_id.hex(),
            "wrapped_key": base64.b64encode(wrapped).decode("ascii"),
            "recipient_key": recipient_public.hex(),
            "binding": dict(binding),
        }
    )
    if len(header_raw) > MAX_HEADER_BYTES:
        raise InputError("sealing: binding too large")
    header = SealedHeader(header_raw, chunk_size, file_id, wrapped, recipient_public, dict(binding))
    out = _HashingWriter(dst)
    try:
        plaintext_size = _encrypt_chunks(src, out, data_key, header, chunk_size)
    finally:
        out.close()
    return SealResult(
        ciphertext_digest=out.hash.hexdigest(),
        ciphertext_size=out.size,
        plaintext_size=plaintext_size,
        key_commitment=key_commitment(data_key, file_id),
        header=header,
    )


def _encrypt_chunks(
    src: BinaryIO, out: _HashingWriter, data_key: bytes, header: SealedHeader, chunk_size: int
) -> int:
    out.write(MAGIC + struct.pack(">I", len(header.raw)) + header.raw)
    aead = AESGCM(data_key)
    hdigest = header.digest
    index = 0
    plaintext_size = 0
    buffer = bytearray(chunk_size)
    view = memoryview(buffer)
    pending: bytes | None = None
    while True:
        filled = _read_full(src, view)
        if filled == chunk_size:
            # a full chunk is never final: more data (or an empty final chunk) follows
            out.write(aead.encrypt(_nonce(index), view[:filled], _aad(hdigest, index, False)))
            plaintext_size += filled
            index += 1
            continue
        pending = bytes(view[:filled])
        break
    out.write(aead.encrypt(_nonce(index), pending, _aad(hdigest, index, True)))
    return plaintext_size + len(pending)


def _read_full(src: BinaryIO, view: memoryview) -> int:
    """Fill ``view`` from ``src`` as far as the stream allows; return bytes read."""
    filled = 0
    total = len(view)
    while filled < total:
        readinto = getattr(src, "readinto", None)
        if readinto is not None:
            n = readinto(view[filled:])
        else:  # pragma: no cover - every stream we use has readinto
            chunk = src.read(total - filled)
            n = len(chunk)
            view[filled : filled + n] = chunk
        if not n:
            break
        filled += n
    return filled


def read_header(src: BinaryIO) -> SealedHeader:
    """Read and parse the header of a sealed file (size-capped). Raises ``DecryptionError``."""
    try:
        prefix = src.read(len(MAGIC) + 4)
        if len(prefix) != len(MAGIC) + 4 or prefix[: len(MAGIC)] != MAGIC:
            raise DecryptionError()
        (length,) = struct.unpack(">I", prefix[len(MAGIC) :])
        if length > MAX_HEADER_BYTES:
            raise DecryptionError()
        raw = src.read(length)
        if len(raw) != length:
            raise DecryptionError()
        d = parse_json(raw, max_bytes=MAX_HEADER_BYTES)
        if not isinstance(d, dict) or set(d) != {
            "version",
            "cipher",
            "chunk_size",
            "file_id",
            "wrapped_key",
            "recipient_key",
            "binding",
        }:
            raise DecryptionError()
        if d["version"] != 1 or d["cipher"] != CIPHER:
            raise DecryptionError()
        chunk_size = d["chunk_size"]
        if not isinstance(chunk_size, int) or not 1024 <= chunk_size <= MAX_CHUNK_SIZE:
            raise DecryptionError()
        if not isinstance(d["binding"], dict) or canonical_json(d) != raw:
            raise DecryptionError()
        return SealedHeader(
            raw=raw,
            chunk_size=chunk_size,
            file_id=bytes.fromhex(d["file_id"]),
            wrapped_key=base64.b64decode(d["wrapped_key"], validate=True),
            recipient_key=bytes.fromhex(d["recipient_key"]),
            binding=d["binding"],
        )
    except DecryptionError:
        raise
    except (InputError, ValueError, TypeError, struct.error) as exc:
        raise DecryptionError() from exc


def _open_header(
    src: BinaryIO,
    recipient_private: PrivateKey,
    expected_commitment: str | None,
    expected_binding: Mapping[str, Any] | None,
) -> tuple[SealedHeader, AESGCM]:
    """Read the header, unwrap the data key and check commitment and binding (the checks that
    come before any chunk). Raises ``DecryptionError``."""
    header = read_header(src)
    try:
        data_key = SealedBox(recipient_private).decrypt(header.wrapped_key)
    except (CryptoError, ValueError, TypeError) as exc:
        raise DecryptionError() from exc
    if len(data_key) != 32:
        raise DecryptionError()
    if expected_commitment is not None and not hmac.compare_digest(
        key_commitment(data_key, header.file_id), expected_commitment
    ):
        raise DecryptionError()
    if expected_binding is not None and canonical_json(dict(expected_binding)) != canonical_json(
        header.binding
    ):
        raise DecryptionError()
    return header, AESGCM(data_key)


def open_stream(
    src: BinaryIO,
    recipient_private: PrivateKey,
    *,
    expected_commitment: str | None = None,
    expected_binding: Mapping[str, Any] | None = None,
) -> Iterator[bytes]:
    """Yield the plaintext of a sealed stream chunk by chunk, authenticating each.

    When ``expected_commitment`` is given (from the owner's signed upload statement), the
    unwrapped data key must match it before any chunk is decrypted. When ``expected_binding``
    is given, the header's binding must equal it.

    Raises:
        DecryptionError: on any failure, always the same opaque error. A consumer must
            discard what it received when the iterator raises.
    """
    header, aead = _open_header(src, recipient_private, expected_commitment, expected_binding)
    hdigest = header.digest
    block = header.chunk_size + TAG_SIZE
    buffer = bytearray(block)
    view = memoryview(buffer)
    index = 0
    while True:
        filled = _read_full(src, view)
        final = filled < block
        if filled < TAG_SIZE:
            raise DecryptionError()
        try:
            plain = aead.decrypt(_nonce(index), view[:filled], _aad(hdigest, index, final))
        except InvalidTag as exc:
            raise DecryptionError() from exc
        yield plain
        if final:
            if src.read(1):
                raise DecryptionError()
            return
        index += 1


def open_to(
    src: BinaryIO,
    dst: BinaryIO,
    recipient_private: PrivateKey,
    *,
    expected_commitment: str | None = None,
    expected_binding: Mapping[str, Any] | None = None,
) -> int:
    """Decrypt ``src`` into ``dst``; return the plaintext size. Raises ``DecryptionError``."""
    total = 0
    for chunk in open_stream(
        src,
        recipient_private,
        expected_commitment=expected_commitment,
        expected_binding=expected_binding,
    ):
        dst.write(chunk)
        total += len(chunk)
    return total


def open_to_buffer(
    src: BinaryIO,
    recipient_private: PrivateKey,
    *,
    ciphertext_size: int,
    max_plaintext_bytes: int,
    expected_commitment: str | None = None,
    expected_binding: Mapping[str, Any] | None = None,
    allocate: Callable[[int], Any] = bytearray,
) -> Any:
    """Decrypt a sealed stream of exactly ``ciphertext_size`` bytes into one buffer.

    ``allocate(size)`` makes that buffer (default ``bytearray``; the worker passes a
    memory-backed file, so the query engine can read the plaintext in place); it must support
    slice assignment. Returns it.

    The buffer is allocated once, at the exact plaintext size (which the header's chunk size and
    ``ciphertext_size`` determine), before any chunk is decrypted, and each chunk is written
    into its place once decrypted: whatever the size, the plaintext exists once, plus one chunk
    in flight. The checks are :func:`open_stream`'s, in the same order.

    Raises:
        DecryptionError: on any failure, always the same opaque error, including a stream that
            is not exactly ``ciphertext_size`` bytes long.
        ResourceError: the plaintext would be larger than ``max_plaintext_bytes`` (checked after
            the header's checks and before the buffer is allocated).
    """
    header, aead = _open_header(src, recipient_private, expected_commitment, expected_binding)
    block = header.chunk_size + TAG_SIZE
    full, last = divmod(ciphertext_size - header.length, block)
    if full < 0 or last < TAG_SIZE:  # the final chunk holds less than a chunk, and its tag
        raise DecryptionError()
    size = full * header.chunk_size + last - TAG_SIZE
    if size > max_plaintext_bytes:
        raise ResourceError("input larger than the plaintext cap")
    out = allocate(size)
    hdigest = header.digest
    buffer = bytearray(block)
    view = memoryview(buffer)
    position = 0
    for index in range(full + 1):
        final = index == full
        want = last if final else block
        if _read_full(src, view[:want]) != want:
            raise DecryptionError()
        try:
            plain = aead.decrypt(_nonce(index), view[:want], _aad(hdigest, index, final))
            n = len(plain)
            out[position : position + n] = plain
        except InvalidTag as exc:
            raise DecryptionError() from exc
        position += n
    if position != size or src.read(1):
        raise DecryptionError()
    return out


def seal_bytes(
    data: bytes, recipient_public: bytes, binding: Mapping[str, Any]
) -> tuple[bytes, SealResult]:
    """Seal a small in-memory payload (e.g. a run output); returns the sealed bytes."""
    out = io.BytesIO()
    result = seal_stream(io.BytesIO(data), out, recipient_public, binding)
    return out.getvalue(), result


def open_bytes(
    data: bytes,
    recipient_private: PrivateKey,
    *,
    expected_binding: Mapping[str, Any] | None = None,
    max_bytes: int = 1 << 30,
) -> bytes:
    """Open a sealed in-memory payload. Raises ``DecryptionError``."""
    out = io.BytesIO()
    for chunk in open_stream(
        io.BytesIO(data), recipient_private, expected_binding=expected_binding
    ):
        out.write(chunk)
        if out.tell() > max_bytes:
            raise DecryptionError()
    return out.getvalue()


def upload_binding(
    room_id: str, manifest_digest: str, dataset: str, version: int
) -> dict[str, Any]:
    """The binding a party writes into the sealed header of an upload; the worker requires the
    header to carry exactly this for the upload statement it verified."""
    return {
        "room_id": room_id,
        "manifest_digest": manifest_digest,
        "dataset": dataset,
        "version": version,
    }


def output_binding(room_id: str, run_id: str, recipient: str) -> dict[str, str]:
    """The binding a run output's sealed header carries; the worker writes it and a recipient
    requires exactly it when opening the output."""
    return {"room_id": room_id, "run_id": run_id, "recipient": recipient}
