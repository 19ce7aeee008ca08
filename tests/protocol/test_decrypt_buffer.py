"""Decrypting an upload into one buffer (``open_to_buffer``, what the worker uses): exactly the
plaintext and exactly the refusals of ``open_stream``, one allocation at the exact size, the
plaintext cap checked before allocating, and a stream of another length refused."""

from __future__ import annotations

import hashlib
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.public import PrivateKey

from sdk.errors import DecryptionError, ResourceError
from sdk.protocol.sealing import (
    SealResult,
    open_stream,
    open_to_buffer,
    seal_stream,
    upload_binding,
)

KEY = PrivateKey(hashlib.sha256(b"buffer-worker").digest())
PUB = bytes(KEY.public_key)
BINDING = upload_binding("room1", "a" * 64, "crm", 1)
CHUNK = 1024


def seal(data: bytes, chunk: int = CHUNK) -> tuple[bytes, SealResult]:
    out = io.BytesIO()
    result = seal_stream(io.BytesIO(data), out, PUB, BINDING, chunk_size=chunk)
    return out.getvalue(), result


def open_buf(sealed: bytes, size: int | None = None, cap: int = 1 << 30, **kw: object) -> bytes:
    buf = open_to_buffer(
        io.BytesIO(sealed),
        KEY,
        ciphertext_size=len(sealed) if size is None else size,
        max_plaintext_bytes=cap,
        **kw,  # type: ignore[arg-type]
    )
    assert isinstance(buf, bytearray)
    return bytes(buf)


def open_ref(sealed: bytes, **kw: object) -> bytes:
    return b"".join(open_stream(io.BytesIO(sealed), KEY, **kw))  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 5 * CHUNK + 7])
def test_exact_plaintext_at_every_boundary(size: int) -> None:
    data = bytes(i % 251 for i in range(size))
    sealed, result = seal(data)
    got = open_buf(
        sealed, expected_commitment=result.key_commitment, expected_binding=BINDING
    )
    assert got == data == open_ref(sealed)


def test_buffer_is_allocated_at_the_exact_size() -> None:
    data = b"x" * (4 * CHUNK + 10)
    sealed, _ = seal(data)
    buf = open_to_buffer(
        io.BytesIO(sealed), KEY, ciphertext_size=len(sealed), max_plaintext_bytes=len(data)
    )
    assert len(buf) == len(data)


def test_plaintext_cap_before_allocating() -> None:
    sealed, result = seal(b"y" * (2 * CHUNK))
    with pytest.raises(ResourceError):
        open_buf(sealed, cap=2 * CHUNK - 1, expected_commitment=result.key_commitment)
    assert open_buf(sealed, cap=2 * CHUNK) == b"y" * (2 * CHUNK)


def test_commitment_and_binding_checked_first() -> None:
    sealed, _ = seal(b"z" * 100)
    with pytest.raises(DecryptionError):
        open_buf(sealed, cap=0, expected_commitment="0" * 64)  # not ResourceError: key first
    with pytest.raises(DecryptionError):
        open_buf(sealed, expected_binding=upload_binding("room1", "a" * 64, "crm", 2))


@pytest.mark.parametrize("delta", [-CHUNK - 16, -17, -16, -1, 1, 15, 16, CHUNK + 16])
def test_stream_of_another_length_is_refused(delta: int) -> None:
    sealed, _ = seal(bytes(3 * CHUNK + 5))
    with pytest.raises(DecryptionError):
        open_buf(sealed, size=len(sealed) + delta)  # the size the statement signs is wrong
    with pytest.raises(DecryptionError):
        cut = sealed[: len(sealed) + delta] if delta < 0 else sealed + bytes(delta)
        open_buf(cut, size=len(sealed))  # the file is not the size the statement signs


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_accepts_exactly_what_open_stream_accepts(data: st.DataObject) -> None:
    plain = data.draw(st.binary(max_size=3 * CHUNK + 40))
    sealed, _ = seal(plain)
    mutated = bytearray(sealed)
    for _ in range(data.draw(st.integers(0, 2))):
        i = data.draw(st.integers(0, len(mutated) - 1))
        mutated[i] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, 2 * CHUNK))
    candidate = bytes(mutated[: max(0, len(mutated) - cut)] if data.draw(st.booleans())
                      else mutated)
    try:
        expected: bytes | None = open_ref(candidate)
    except DecryptionError:
        expected = None
    try:
        got: bytes | None = open_buf(candidate)
    except DecryptionError:
        got = None
    assert got == expected
