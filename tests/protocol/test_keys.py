"""Party key files: round trips with and without a passphrase, mode 0600, refusal to
overwrite, and InputError for every wrong passphrase, truncated or garbage file."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdk.errors import InputError
from sdk.protocol.canonical import canonical_json
from sdk.protocol.keys import (
    KEY_FILE_MAX_BYTES,
    PartyKey,
    PublicIdentity,
    Signer,
    identity_from_file,
    keyid,
)
from tests.protocol.make_golden import seed

KEY = PartyKey.from_seeds("alice", seed("key-a"), seed("key-a-enc"))
OTHER = PartyKey.from_seeds("bob", seed("key-b"), seed("key-b-enc"))
PLAIN = KEY.to_file_bytes()
ENCRYPTED = KEY.to_file_bytes(b"correct horse")


def same_key(a: PartyKey, b: PartyKey) -> bool:
    return (
        a.identity == b.identity
        and a.signer.seed() == b.signer.seed()
        and bytes(a.encryption_private) == bytes(b.encryption_private)
    )


def test_keyid_is_sha256_of_the_raw_public_key() -> None:
    assert KEY.identity.keyid == hashlib.sha256(KEY.signer.public_key).hexdigest()
    assert keyid(KEY.signer.public_key) == KEY.signer.keyid


def test_from_seed_is_deterministic() -> None:
    assert Signer.from_seed(seed("x")).public_key == Signer.from_seed(seed("x")).public_key
    assert Signer.from_seed(seed("x")).seed() == seed("x")


@pytest.mark.parametrize("passphrase", [None, b"correct horse", "p\u00e4ss".encode()])
def test_save_load_round_trip_mode_0600(tmp_path: Path, passphrase: bytes | None) -> None:
    path = tmp_path / "alice.key"
    old = os.umask(0)  # even with a permissive umask, the file is private
    try:
        KEY.save(path, passphrase)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert same_key(PartyKey.load(path, passphrase), KEY)
    assert identity_from_file(path) == KEY.identity
    if passphrase is not None:
        assert KEY.signer.seed().hex() not in path.read_text()
        assert b"signing_seed" not in path.read_bytes()


def test_generated_keys_round_trip(tmp_path: Path) -> None:
    key = PartyKey.generate("carol")
    key.save(tmp_path / "c.key", b"pw")
    assert same_key(PartyKey.load(tmp_path / "c.key", b"pw"), key)


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "alice.key"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        OTHER.save(path)
    assert path.read_bytes() == b"precious"
    link = tmp_path / "link.key"
    link.symlink_to(tmp_path / "target")
    with pytest.raises(FileExistsError):  # O_EXCL does not follow a dangling symlink
        KEY.save(link)
    assert not (tmp_path / "target").exists()


def test_wrong_or_missing_passphrase() -> None:
    with pytest.raises(InputError, match="wrong passphrase"):
        PartyKey.from_file_bytes(ENCRYPTED, b"Correct horse")
    with pytest.raises(InputError, match="passphrase is needed"):
        PartyKey.from_file_bytes(ENCRYPTED)
    # a passphrase for an unencrypted file is not needed, and not an error
    assert same_key(PartyKey.from_file_bytes(PLAIN, b"unused"), KEY)


@pytest.mark.parametrize("data", [PLAIN, ENCRYPTED], ids=["plain", "encrypted"])
def test_truncated_key_files(data: bytes) -> None:
    for n in range(len(data)):
        with pytest.raises(InputError):
            PartyKey.from_file_bytes(data[:n], b"correct horse")


def test_oversized_key_file(tmp_path: Path) -> None:
    path = tmp_path / "big.key"
    path.write_bytes(b" " * (KEY_FILE_MAX_BYTES + 10) + PLAIN)
    with pytest.raises(InputError):
        PartyKey.load(path)
    with pytest.raises(InputError):
        identity_from_file(path)


def _doc(data: bytes = ENCRYPTED) -> dict[str, Any]:
    doc = json.loads(data)
    assert isinstance(doc, dict)
    return doc


def _with(change: Any, data: bytes = ENCRYPTED) -> bytes:
    doc = _doc(data)
    change(doc)
    return canonical_json(doc)


BAD_FILES: dict[str, bytes] = {
    "not json": b"-----BEGIN PRIVATE KEY-----",
    "list": b"[]",
    "wrong type": _with(lambda d: d.update(type="ssh-key")),
    "version 2": _with(lambda d: d.update(version=2)),
    "version true": _with(lambda d: d.update(version=True)),
    "version string": _with(lambda d: d.update(version="1")),
    "unknown field": _with(lambda d: d.update(extra=1)),
    "missing private": _with(lambda d: d.pop("private")),
    "private not an object": _with(lambda d: d.update(private="x")),
    "encrypted not a bool": _with(lambda d: d["private"].update(encrypted="yes")),
    "kdf argon2": _with(lambda d: d["private"]["kdf"].update(name="argon2")),
    "kdf n not a power of two": _with(lambda d: d["private"]["kdf"].update(n=1025)),
    "kdf n huge": _with(lambda d: d["private"]["kdf"].update(n=2**20)),
    "kdf n tiny": _with(lambda d: d["private"]["kdf"].update(n=2)),
    "kdf n string": _with(lambda d: d["private"]["kdf"].update(n="32768")),
    "kdf n bool": _with(lambda d: d["private"]["kdf"].update(n=True)),
    "kdf r": _with(lambda d: d["private"]["kdf"].update(r=16)),
    "kdf p": _with(lambda d: d["private"]["kdf"].update(p=2)),
    "kdf missing": _with(lambda d: d["private"].pop("kdf")),
    "kdf not an object": _with(lambda d: d["private"].update(kdf=[1])),
    "salt short": _with(lambda d: d["private"]["kdf"].update(salt="AAAA")),
    "salt not text": _with(lambda d: d["private"]["kdf"].update(salt=1)),
    "nonce short": _with(lambda d: d["private"].update(nonce="AAAA")),
    "keys not base64": _with(lambda d: d["private"].update(keys="!!")),
    "plain keys not base64": _with(lambda d: d["private"].update(keys="!!"), PLAIN),
    "plain keys not json": _with(lambda d: d["private"].update(keys="AAAA"), PLAIN),
    "plain keys missing seed": _with(
        lambda d: d["private"].update(keys="eyJzaWduaW5nX3NlZWQiOiIifQ=="), PLAIN
    ),
    "public of another key": _with(lambda d: d.update(public=OTHER.identity.to_dict()), PLAIN),
    "public name with newline": _with(lambda d: d["public"].update(name="alice\n"), PLAIN),
    "public key uppercase hex": _with(
        lambda d: d["public"].update(signing_key=d["public"]["signing_key"].upper()), PLAIN
    ),
    "public key short": _with(lambda d: d["public"].update(signing_key="00" * 31), PLAIN),
    "duplicate key": PLAIN[:-1] + b',"version":1}',
    "bom": b"\xef\xbb\xbf" + PLAIN,
}


@pytest.mark.parametrize("data", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_malformed_key_files(data: bytes) -> None:
    with pytest.raises(InputError):
        PartyKey.from_file_bytes(data, b"correct horse")


def test_keys_not_matching_the_public_part() -> None:
    swapped = _with(lambda d: d.update(private=_doc(OTHER.to_file_bytes())["private"]), PLAIN)
    with pytest.raises(InputError, match="do not match"):
        PartyKey.from_file_bytes(swapped)


def test_identity_from_garbage(tmp_path: Path) -> None:
    for i, data in enumerate([b"", b"{}", b'{"public":1}', b"\x00" * 100]):
        path = tmp_path / f"{i}.key"
        path.write_bytes(data)
        with pytest.raises(InputError):
            identity_from_file(path)


def test_public_identity_round_trip_and_rejections() -> None:
    d = KEY.identity.to_dict()
    assert PublicIdentity.from_dict(d) == KEY.identity
    for bad in (
        {**d, "name": "al ice"},
        {**d, "name": "alice\n"},
        {**d, "name": ""},
        {**d, "encryption_key": "zz" * 32},
        {**d, "signing_key": 5},
        {**d, "extra": 1},
        {k: v for k, v in d.items() if k != "name"},
        [],
    ):
        with pytest.raises(InputError):
            PublicIdentity.from_dict(bad)


def test_generate_rejects_bad_names() -> None:
    for name in ("", "a b", "x" * 65, "caf\u00e9", "alice\n"):
        with pytest.raises(InputError):
            PartyKey.generate(name)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_garbage_key_files(data: bytes) -> None:
    with pytest.raises(InputError):
        PartyKey.from_file_bytes(data, b"pw")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_bit_flip_in_an_encrypted_key_file(data: st.DataObject) -> None:
    raw = bytearray(ENCRYPTED)
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= 1 << data.draw(st.integers(0, 7))
    try:
        key = PartyKey.from_file_bytes(bytes(raw), b"correct horse")
    except InputError:
        return
    assert same_key(key, KEY)  # only an ignored base64 padding bit may pass


def test_key_files_encrypted_before_the_public_part_was_bound_still_open() -> None:
    """Files written when only the file type was authenticated keep opening (nothing lost);
    files written now authenticate the public part, name included."""
    import base64
    import json

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    from sdk.protocol.keys import KEY_FILE_TYPE

    doc = json.loads(ENCRYPTED)
    kdf = doc["private"]["kdf"]
    kek = Scrypt(salt=base64.b64decode(kdf["salt"]), length=32, n=kdf["n"], r=8, p=1
                 ).derive(b"correct horse")
    nonce = base64.b64decode(doc["private"]["nonce"])
    aad_now = KEY_FILE_TYPE.encode() + b"\n" + canonical_json(doc["public"])
    secret = AESGCM(kek).decrypt(nonce, base64.b64decode(doc["private"]["keys"]), aad_now)
    legacy = AESGCM(kek).encrypt(nonce, secret, KEY_FILE_TYPE.encode())
    doc["private"]["keys"] = base64.b64encode(legacy).decode()
    assert same_key(PartyKey.from_file_bytes(canonical_json(doc), b"correct horse"), KEY)
