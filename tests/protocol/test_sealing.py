"""Sealed files: the negative checklist (wrong key, header, truncation, reordering, foreign
chunks, commitment, binding — T61, T62), exact lengths, empty and large files with bounded
memory, and one opaque error for every failure."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.public import PrivateKey, SealedBox

from sdk.errors import DecryptionError, InputError
from sdk.protocol.canonical import canonical_json
from sdk.protocol.sealing import (
    MAGIC,
    MAX_HEADER_BYTES,
    TAG_SIZE,
    key_commitment,
    open_bytes,
    open_stream,
    open_to,
    read_header,
    seal_bytes,
    seal_stream,
    upload_binding,
)
from tests.protocol.make_golden import seed

ROOT = Path(__file__).resolve().parents[2]
KEY = PrivateKey(seed("sealing-worker"))
OTHER = PrivateKey(seed("sealing-other"))
PUB = bytes(KEY.public_key)
BINDING = upload_binding("room1", "a" * 64, "crm", 1)
CHUNK = 1024
MESSAGE = "decryption failed"


def seal(data: bytes, chunk: int = CHUNK, binding: dict[str, object] | None = None) -> bytes:
    out = io.BytesIO()
    seal_stream(io.BytesIO(data), out, PUB, binding or BINDING, chunk_size=chunk)
    return out.getvalue()


def unseal(sealed: bytes, key: PrivateKey = KEY, **kw: object) -> bytes:
    return b"".join(open_stream(io.BytesIO(sealed), key, **kw))  # type: ignore[arg-type]


def header_len(sealed: bytes) -> int:
    return len(MAGIC) + 4 + struct.unpack(">I", sealed[len(MAGIC) : len(MAGIC) + 4])[0]


def chunks(sealed: bytes, chunk: int = CHUNK) -> tuple[bytes, list[bytes]]:
    """(header part, ciphertext chunks) of a sealed file."""
    h = header_len(sealed)
    body = sealed[h:]
    step = chunk + TAG_SIZE
    return sealed[:h], [body[i : i + step] for i in range(0, len(body), step)]


def refused(sealed: bytes, key: PrivateKey = KEY, **kw: object) -> None:
    """Opening fails with exactly DecryptionError and the one message."""
    with pytest.raises(DecryptionError) as info:
        unseal(sealed, key, **kw)
    assert type(info.value) is DecryptionError
    assert str(info.value) == MESSAGE and info.value.message == MESSAGE
    assert info.value.code == "E_DECRYPT"


SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 5]


@pytest.mark.parametrize("size", SIZES)
def test_round_trip_and_exact_length(size: int) -> None:
    data = bytes(i % 251 for i in range(size))
    out = io.BytesIO()
    result = seal_stream(io.BytesIO(data), out, PUB, BINDING, chunk_size=CHUNK)
    sealed = out.getvalue()
    # every full chunk, plus one final chunk (empty when the data fills its chunks exactly)
    assert len(sealed) == header_len(sealed) + size + TAG_SIZE * (size // CHUNK + 1)
    assert result.ciphertext_size == len(sealed)
    assert result.ciphertext_digest == hashlib.sha256(sealed).hexdigest()
    assert result.plaintext_size == size
    assert result.header.length == header_len(sealed)
    assert (
        unseal(sealed, expected_commitment=result.key_commitment, expected_binding=BINDING) == data
    )


def test_empty_file_round_trip() -> None:
    sealed, result = seal_bytes(b"", PUB, BINDING)
    assert len(sealed) == result.header.length + TAG_SIZE
    assert open_bytes(sealed, KEY) == b""
    assert list(open_stream(io.BytesIO(sealed), KEY)) == [b""]


def test_default_chunk_size_formula() -> None:
    data = b"x" * ((1 << 20) * 2 + 7)
    sealed, result = seal_bytes(data, PUB, BINDING)
    assert len(sealed) == result.header.length + len(data) + TAG_SIZE * 3
    assert open_bytes(sealed, KEY) == data


def test_header_contents() -> None:
    sealed, result = seal_bytes(b"abc", PUB, BINDING)
    header = read_header(io.BytesIO(sealed))
    assert header == result.header
    doc = json.loads(header.raw)
    assert doc["binding"] == BINDING and doc["recipient_key"] == PUB.hex()
    assert doc["cipher"] == "AES-256-GCM" and doc["version"] == 1
    assert canonical_json(doc) == header.raw
    # the commitment is over the data key the recipient unwraps
    data_key = SealedBox(KEY).decrypt(header.wrapped_key)
    assert key_commitment(data_key, header.file_id) == result.key_commitment


def test_sealing_is_randomized() -> None:
    a, ra = seal_bytes(b"same", PUB, BINDING)
    b, rb = seal_bytes(b"same", PUB, BINDING)
    assert a != b and ra.key_commitment != rb.key_commitment


def test_open_to_writes_plaintext() -> None:
    data = b"0123456789" * 500
    out = io.BytesIO()
    assert open_to(io.BytesIO(seal(data)), out, KEY) == len(data)
    assert out.getvalue() == data


# -- the negative checklist --------------------------------------------------------------------


DATA = bytes(range(256)) * 13  # 3328 bytes: three full chunks and a partial one


def test_wrong_key() -> None:
    refused(seal(DATA), OTHER)


def test_every_header_byte_matters() -> None:
    sealed = seal(DATA)
    for i in range(header_len(sealed)):
        tampered = bytearray(sealed)
        tampered[i] ^= 0x01
        refused(bytes(tampered))


def test_header_swapped_from_another_file() -> None:
    a, b = seal(DATA), seal(DATA)
    ha, ca = chunks(a)
    hb, cb = chunks(b)
    refused(hb + b"".join(ca))


def test_header_with_equal_binding_resealed_by_someone_else() -> None:  # T61
    """A file sealed by someone else to the same worker key, with the same binding, opens, but
    not under the owner's signed key commitment."""
    owner, owner_result = seal_bytes(DATA, PUB, BINDING)
    substitute, _ = seal_bytes(b"forged rows", PUB, BINDING)
    assert unseal(substitute) == b"forged rows"
    refused(substitute, expected_commitment=owner_result.key_commitment)
    assert unseal(owner, expected_commitment=owner_result.key_commitment) == DATA


@pytest.mark.parametrize("keep", [0, 1, 2, 3])
def test_truncated_at_a_chunk_boundary(keep: int) -> None:
    head, body = chunks(seal(DATA))
    assert len(body) == 4
    refused(head + b"".join(body[:keep]))


def test_truncated_final_empty_chunk() -> None:
    head, body = chunks(seal(b"y" * (2 * CHUNK)))
    assert len(body) == 3 and len(body[-1]) == TAG_SIZE
    refused(head + b"".join(body[:-1]))


@pytest.mark.parametrize(
    "cut", [1, TAG_SIZE - 1, TAG_SIZE, TAG_SIZE + 1, CHUNK // 2, CHUNK + TAG_SIZE - 1]
)
def test_truncated_mid_chunk(cut: int) -> None:
    sealed = seal(DATA)
    h = header_len(sealed)
    refused(sealed[: h + cut])
    refused(sealed[:-1])
    refused(sealed[: len(sealed) - cut] if cut < len(sealed) - h else sealed[:h])


def test_truncated_inside_the_header() -> None:
    sealed = seal(DATA)
    for n in range(header_len(sealed)):
        refused(sealed[:n])


def test_reordered_chunks() -> None:
    head, body = chunks(seal(DATA))
    refused(head + body[1] + body[0] + body[2] + body[3])
    refused(head + body[0] + body[2] + body[1] + body[3])
    refused(head + body[0] + body[0] + body[2] + body[3])  # duplicated chunk
    refused(head + body[0] + body[1] + body[3])  # final chunk moved up


def test_chunk_from_another_file() -> None:
    head, body = chunks(seal(DATA))
    _, other = chunks(seal(DATA))
    refused(head + body[0] + other[1] + body[2] + body[3])
    refused(head + body[0] + body[1] + body[2] + other[3])


def test_trailing_data_or_extra_chunk() -> None:
    sealed = seal(DATA)
    head, body = chunks(sealed)
    refused(sealed + b"\x00")
    refused(sealed + body[0])
    refused(head + b"".join(body[:3]) + body[1] + body[3])


def test_wrong_key_commitment_before_any_plaintext() -> None:
    sealed, result = seal_bytes(DATA, PUB, BINDING)
    stream = open_stream(io.BytesIO(sealed), KEY, expected_commitment="0" * 64)
    with pytest.raises(DecryptionError):
        next(stream)  # nothing is yielded
    last = result.key_commitment[-1]
    refused(sealed, expected_commitment=result.key_commitment[:-1] + ("1" if last == "0" else "0"))
    refused(sealed, expected_commitment=result.key_commitment.upper())
    refused(sealed, expected_commitment="")


def test_wrong_binding() -> None:
    sealed = seal(DATA)
    for other in (
        upload_binding("room1", "a" * 64, "crm", 2),
        upload_binding("room2", "a" * 64, "crm", 1),
        upload_binding("room1", "b" * 64, "crm", 1),
        upload_binding("room1", "a" * 64, "visits", 1),
        {},
    ):
        refused(sealed, expected_binding=other)
    assert unseal(sealed, expected_binding=dict(BINDING)) == DATA


def test_malformed_headers() -> None:
    sealed = seal(DATA)
    h = header_len(sealed)
    raw = sealed[len(MAGIC) + 4 : h]
    doc = json.loads(raw)

    def with_header(header: bytes) -> bytes:
        return MAGIC + struct.pack(">I", len(header)) + header + sealed[h:]

    refused(with_header(json.dumps(doc, indent=1).encode()))  # not canonical
    for change in (
        {"version": 2},
        {"cipher": "AES-128-GCM"},
        {"chunk_size": 10},
        {"chunk_size": 1 << 30},
        {"chunk_size": "1024"},
        {"file_id": "zz"},
        {"file_id": 5},
        {"wrapped_key": "%%"},
        {"wrapped_key": ""},
        {"recipient_key": "x"},
        {"binding": []},
        {"extra": 1},
    ):
        refused(with_header(canonical_json({**doc, **change})))
    refused(with_header(canonical_json({k: v for k, v in doc.items() if k != "binding"})))
    refused(with_header(b"[]"))
    refused(with_header(b"\xff"))
    refused(MAGIC + struct.pack(">I", MAX_HEADER_BYTES + 1) + b"{}" * 10)
    refused(MAGIC + struct.pack(">I", 0xFFFFFFFF))
    refused(b"SEALRM02" + sealed[len(MAGIC) :])
    refused(b"")


def test_open_bytes_size_cap() -> None:
    sealed = seal(b"z" * (5 * CHUNK))
    assert open_bytes(sealed, KEY, max_bytes=5 * CHUNK) == b"z" * (5 * CHUNK)
    with pytest.raises(DecryptionError):
        open_bytes(sealed, KEY, max_bytes=4 * CHUNK)


def test_sealing_input_errors() -> None:
    for chunk in (0, 1023, (1 << 24) + 1):
        with pytest.raises(InputError):
            seal(b"x", chunk=chunk)
    with pytest.raises(InputError):
        seal_stream(io.BytesIO(b""), io.BytesIO(), PUB[:31], BINDING)
    with pytest.raises(InputError):
        seal_stream(io.BytesIO(b""), io.BytesIO(), PUB, {"big": "x" * MAX_HEADER_BYTES})


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_bit_flip_in_a_sealed_file_fails_the_same_way(data: st.DataObject) -> None:
    sealed = bytearray(seal(DATA))
    i = data.draw(st.integers(0, len(sealed) - 1))
    sealed[i] ^= 1 << data.draw(st.integers(0, 7))
    refused(bytes(sealed))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=600))
def test_garbage_gives_decryption_error(garbage: bytes) -> None:
    refused(garbage)
    refused(MAGIC + garbage)


# -- large files, streamed, memory bounded --------------------------------------------------


def _bigseal(mib: int) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.protocol._bigseal", str(mib)],
        cwd=ROOT,
        capture_output=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    doc: dict[str, float] = json.loads(proc.stdout)
    size = mib << 20
    assert doc["same"] and doc["opened"] == doc["plaintext_size"] == size
    assert doc["ciphertext_size"] == doc["header_length"] + size + TAG_SIZE * (
        size // (1 << 20) + 1
    )
    return doc


@pytest.mark.timeout(120)
def test_64_mib_streamed_with_bounded_memory() -> None:
    doc = _bigseal(64)
    growth = doc["rss_after_mib"] - doc["rss_before_mib"]
    assert growth < 32, doc  # far below the 64 MiB that went through


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_2_gib_streamed_with_bounded_memory() -> None:
    doc = _bigseal(2048)
    growth = doc["rss_after_mib"] - doc["rss_before_mib"]
    assert growth < 64, doc
