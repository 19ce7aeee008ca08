"""Party keys: one file holding an Ed25519 signing key and an X25519 encryption key.

The public half is a :class:`PublicIdentity` (name, signing key, encryption key) that goes into
the room manifest. A keyid is the hex SHA-256 of a raw public key; it is only a hint for
finding the key, never a substitute for comparing the key itself.

The key file is JSON. The private part is written with mode 0600 and may be encrypted with a
passphrase (scrypt, then AES-256-GCM).

Every public key read from outside (a manifest, an attestation, a key file, a login) is checked
here first: an Ed25519 key must be a canonical encoding of a curve point that is not of small
order (:func:`check_signing_key`), an X25519 key a canonical u-coordinate that is not of small
order (:func:`check_encryption_key`). A small-order signing key lets anyone forge signatures
(R = identity, S = 0 verifies for every message); a small-order encryption key makes the shared
secret a known constant. Both are refused with ``InputError`` (``E_INPUT``): they are malformed
input, whatever signature comes with them.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from nacl.public import PrivateKey as X25519PrivateKey

from sdk.errors import InputError
from sdk.protocol.canonical import canonical_json, parse_json
from sdk.protocol.fields import check_keys, check_name, expect_mapping

KEY_FILE_TYPE = "sealroom-party-key"
KEY_FILE_MAX_BYTES = 64 * 1024
_SCRYPT_N = 2**15
_SCRYPT_MIN_N = 2**10
_SCRYPT_MAX_N = 2**17


def keyid(public_key: bytes) -> str:
    """The keyid of a raw public key: hex SHA-256."""
    return hashlib.sha256(public_key).hexdigest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, where: str, length: int | None = None) -> bytes:
    if not isinstance(text, str):
        raise InputError(f"{where}: expected base64 text")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise InputError(f"{where}: invalid base64") from exc
    if length is not None and len(raw) != length:
        raise InputError(f"{where}: expected {length} bytes")
    return raw


def _unhex(text: object, where: str, length: int) -> bytes:
    if not isinstance(text, str) or len(text) != 2 * length:
        raise InputError(f"{where}: expected {length} bytes as lowercase hex")
    try:
        raw = bytes.fromhex(text)
    except ValueError as exc:
        raise InputError(f"{where}: invalid hex") from exc
    if raw.hex() != text:
        raise InputError(f"{where}: expected lowercase hex")
    return raw


# -- public key validation (RFC 8032 §5.1.3 decoding, RFC 7748 u-coordinates) ----------------

_P = 2**255 - 19
_D = (-121665 * pow(121666, _P - 2, _P)) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)
#: the u-coordinates of the small-order points of Curve25519 and its twist (libsodium's list):
#: 0 and 1, the two of order 8, and p - 1; p and p + 1 are non-canonical and refused as such
_X25519_SMALL_ORDER = frozenset({
    0,
    1,
    325606250916557431795983626356110631294008115727848805560023387167927233504,
    39382357235489614581723060781553021112529911719440698176882885853963445705823,
    _P - 1,
})


def _ed25519_point(raw: bytes) -> tuple[int, int] | None:
    """The affine point of a canonical Ed25519 encoding, or None (RFC 8032 §5.1.3, strict:
    y >= p and x = 0 with the sign bit set are refused)."""
    y = int.from_bytes(raw, "little")
    sign, y = y >> 255, y & ((1 << 255) - 1)
    if y >= _P:
        return None
    u, v = (y * y - 1) % _P, (_D * y * y + 1) % _P
    x = u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P) % _P
    vx2 = v * x * x % _P
    if vx2 != u:
        if vx2 != (-u) % _P:
            return None  # not on the curve
        x = x * _SQRT_M1 % _P
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = _P - x
    return x, y


def _is_small_order(x: int, y: int) -> bool:
    """[8]P is the identity (three doublings in projective coordinates, RFC 8032 §5.1.4)."""
    big_x, big_y, big_z = x, y, 1
    for _ in range(3):
        b = (big_x + big_y) ** 2 % _P
        c, d = big_x * big_x % _P, big_y * big_y % _P
        e = (-c) % _P
        f = (e + d) % _P
        j = (f - 2 * big_z * big_z) % _P
        big_x, big_y, big_z = (b - c - d) * j % _P, f * (e - d) % _P, f * j % _P
    return big_x == 0 and big_y == big_z


@lru_cache(maxsize=4096)
def _ed25519_problem(raw: bytes) -> str | None:
    if len(raw) != 32:
        return "expected 32 bytes"
    point = _ed25519_point(raw)
    if point is None:
        return "not a canonical encoding of a curve point"
    if _is_small_order(*point):
        return "a small-order point"
    return None


@lru_cache(maxsize=4096)
def _x25519_problem(raw: bytes) -> str | None:
    if len(raw) != 32:
        return "expected 32 bytes"
    u = int.from_bytes(raw, "little")
    if u >= _P:  # the top bit set, or a u-coordinate not reduced mod p
        return "not a canonical u-coordinate"
    if u in _X25519_SMALL_ORDER:
        return "a small-order point"
    return None


def check_signing_key(raw: bytes, where: str = "signing key") -> bytes:
    """``raw`` when it is an acceptable Ed25519 public key: 32 bytes, a canonical encoding of a
    curve point, not of small order. Raises ``InputError`` otherwise."""
    problem = _ed25519_problem(bytes(raw))
    if problem is not None:
        raise InputError(f"{where}: not an acceptable Ed25519 public key ({problem})")
    return raw


def check_encryption_key(raw: bytes, where: str = "encryption key") -> bytes:
    """``raw`` when it is an acceptable X25519 public key: 32 bytes, a canonical u-coordinate,
    not of small order. Raises ``InputError`` otherwise."""
    problem = _x25519_problem(bytes(raw))
    if problem is not None:
        raise InputError(f"{where}: not an acceptable X25519 public key ({problem})")
    return raw


def signing_key_from_hex(text: object, where: str) -> bytes:
    """A raw Ed25519 public key from lowercase hex, checked by :func:`check_signing_key`."""
    return check_signing_key(_unhex(text, where, 32), where)


def encryption_key_from_hex(text: object, where: str) -> bytes:
    """A raw X25519 public key from lowercase hex, checked by :func:`check_encryption_key`."""
    return check_encryption_key(_unhex(text, where, 32), where)


def ed25519_public_from_hex(text: object, where: str) -> Ed25519PublicKey:
    """Parse a hex Ed25519 public key (checked by :func:`check_signing_key`)."""
    return Ed25519PublicKey.from_public_bytes(signing_key_from_hex(text, where))


def raw_public(key: Ed25519PublicKey) -> bytes:
    """The raw 32 bytes of an Ed25519 public key."""
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def ed25519_verifies(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` is an Ed25519 signature of ``message`` by the raw 32-byte
    ``public_key``.

    Never raises: a malformed, non-canonical or small-order key or a malformed signature is
    reported as not verifying.
    """
    if _ed25519_problem(bytes(public_key)) is not None:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class PublicIdentity:
    """The public half of a party (or worker) key: what a manifest lists."""

    name: str
    signing_key: bytes
    encryption_key: bytes

    @property
    def keyid(self) -> str:
        """keyid of the signing key."""
        return keyid(self.signing_key)

    def verifier(self) -> Ed25519PublicKey:
        """The Ed25519 public key object."""
        return Ed25519PublicKey.from_public_bytes(self.signing_key)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "signing_key": self.signing_key.hex(),
            "encryption_key": self.encryption_key.hex(),
        }

    @classmethod
    def from_dict(cls, data: object, where: str = "identity") -> PublicIdentity:
        d = expect_mapping(data, where)
        check_keys(d, where, ["name", "signing_key", "encryption_key"])
        return cls(
            name=check_name(d["name"], f"{where}.name"),
            signing_key=signing_key_from_hex(d["signing_key"], f"{where}.signing_key"),
            encryption_key=encryption_key_from_hex(d["encryption_key"], f"{where}.encryption_key"),
        )


class Signer:
    """Signs with one Ed25519 private key; exposes its public key and keyid."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key: bytes = raw_public(private_key.public_key())
        self.keyid: str = keyid(self.public_key)

    @classmethod
    def generate(cls) -> Signer:
        """A signer with a fresh random key."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Signer:
        """A signer from a 32-byte seed (used for fixtures and golden vectors)."""
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def sign(self, message: bytes) -> bytes:
        """Ed25519 signature over ``message``."""
        return self._key.sign(message)

    def seed(self) -> bytes:
        """The raw 32-byte private seed (handle with care)."""
        return self._key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


@dataclass(frozen=True)
class PartyKey:
    """A party's private key material: signing and encryption keys under one name."""

    name: str
    signer: Signer
    encryption_private: X25519PrivateKey

    @classmethod
    def generate(cls, name: str) -> PartyKey:
        """Fresh keys for party ``name``."""
        check_name(name, "name")
        return cls(name, Signer.generate(), X25519PrivateKey.generate())

    @classmethod
    def from_seeds(cls, name: str, signing_seed: bytes, encryption_seed: bytes) -> PartyKey:
        """Deterministic keys (tests and golden vectors only)."""
        return cls(name, Signer.from_seed(signing_seed), X25519PrivateKey(encryption_seed))

    @property
    def identity(self) -> PublicIdentity:
        """The public identity of this key."""
        return PublicIdentity(
            name=self.name,
            signing_key=self.signer.public_key,
            encryption_key=bytes(self.encryption_private.public_key),
        )

    def to_file_bytes(self, passphrase: bytes | None = None) -> bytes:
        """Serialize to the key-file format, optionally passphrase-encrypted."""
        secret = canonical_json(
            {
                "signing_seed": _b64(self.signer.seed()),
                "encryption_seed": _b64(bytes(self.encryption_private)),
            }
        )
        private: dict[str, Any]
        if passphrase is None:
            private = {"encrypted": False, "keys": _b64(secret)}
        else:
            salt = os.urandom(16)
            nonce = os.urandom(12)
            kek = Scrypt(salt=salt, length=32, n=_SCRYPT_N, r=8, p=1).derive(passphrase)
            ciphertext = AESGCM(kek).encrypt(nonce, secret, _key_file_aad(self.identity.to_dict()))
            private = {
                "encrypted": True,
                "kdf": {"name": "scrypt", "n": _SCRYPT_N, "r": 8, "p": 1, "salt": _b64(salt)},
                "nonce": _b64(nonce),
                "keys": _b64(ciphertext),
            }
        return canonical_json(
            {
                "type": KEY_FILE_TYPE,
                "version": 1,
                "public": self.identity.to_dict(),
                "private": private,
            }
        )

    @classmethod
    def from_file_bytes(cls, data: bytes, passphrase: bytes | None = None) -> PartyKey:
        """Parse a key file.

        Raises:
            InputError: malformed file, wrong passphrase, or keys that do not match the public
                part.
        """
        d = expect_mapping(parse_json(data, max_bytes=KEY_FILE_MAX_BYTES), "key file")
        check_keys(d, "key file", ["type", "version", "public", "private"])
        if d["type"] != KEY_FILE_TYPE or type(d["version"]) is not int or d["version"] != 1:
            raise InputError("key file: not a sealroom party key (version 1)")
        public = PublicIdentity.from_dict(d["public"], "key file.public")
        private = expect_mapping(d["private"], "key file.private")
        if private.get("encrypted") is True:
            if passphrase is None:
                raise InputError("key file: encrypted; a passphrase is needed")
            kdf = expect_mapping(private.get("kdf"), "key file.private.kdf")
            n, r, p = kdf.get("n", 0), kdf.get("r", 0), kdf.get("p", 0)
            # exact integers only; n a power of two (else Scrypt raises ValueError) and capped
            # so that a crafted file cannot make loading take seconds and a gigabyte
            if (
                kdf.get("name") != "scrypt"
                or not all(type(x) is int for x in (n, r, p))
                or not (_SCRYPT_MIN_N <= n <= _SCRYPT_MAX_N and n & (n - 1) == 0)
                or (r, p) != (8, 1)
            ):
                raise InputError("key file: unsupported kdf parameters")
            salt = _unb64(kdf.get("salt"), "key file.salt", 16)
            nonce = _unb64(private.get("nonce"), "key file.nonce", 12)
            kek = Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase)
            sealed = _unb64(private.get("keys"), "key file.keys")
            secret = b""
            # files written since the public part is authenticated, then older ones (whose
            # public part is still checked against the keys below, all but the name)
            for aad in (_key_file_aad(d["public"]), KEY_FILE_TYPE.encode()):
                try:
                    secret = AESGCM(kek).decrypt(nonce, sealed, aad)
                    break
                except InvalidTag:
                    continue
            else:
                raise InputError("key file: wrong passphrase or corrupted file")
        elif private.get("encrypted") is False:
            secret = _unb64(private.get("keys"), "key file.keys")
        else:
            raise InputError("key file: private.encrypted must be true or false")
        seeds = expect_mapping(parse_json(secret, max_bytes=4096), "key file.keys")
        check_keys(seeds, "key file.keys", ["signing_seed", "encryption_seed"])
        key = cls.from_seeds(
            public.name,
            _unb64(seeds["signing_seed"], "signing_seed", 32),
            _unb64(seeds["encryption_seed"], "encryption_seed", 32),
        )
        if key.identity != public:
            raise InputError("key file: private keys do not match the public identity")
        return key

    def save(self, path: Path, passphrase: bytes | None = None) -> None:
        """Write the key file with mode 0600 (refuses to overwrite an existing file)."""
        data = self.to_file_bytes(passphrase)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)

    @classmethod
    def load(cls, path: Path, passphrase: bytes | None = None) -> PartyKey:
        """Read a key file (size-capped)."""
        with open(path, "rb") as handle:
            data = handle.read(KEY_FILE_MAX_BYTES + 1)
        return cls.from_file_bytes(data, passphrase)


def identity_from_file(path: Path) -> PublicIdentity:
    """Read only the public identity of a key file (no passphrase needed)."""
    with open(path, "rb") as handle:
        data = handle.read(KEY_FILE_MAX_BYTES + 1)
    d = expect_mapping(parse_json(data, max_bytes=KEY_FILE_MAX_BYTES), "key file")
    if "public" not in d:
        raise InputError("key file: no public part")
    return PublicIdentity.from_dict(d["public"], "key file.public")


__all__ = [
    "PartyKey",
    "PublicIdentity",
    "Signer",
    "check_encryption_key",
    "check_signing_key",
    "ed25519_public_from_hex",
    "ed25519_verifies",
    "encryption_key_from_hex",
    "identity_from_file",
    "keyid",
    "raw_public",
    "signing_key_from_hex",
]


def _key_file_aad(public: object) -> bytes:
    """What an encrypted key file authenticates besides its keys: the file type and the whole
    public part (name included), so no bit of an encrypted key file can change unnoticed."""
    return KEY_FILE_TYPE.encode() + b"\n" + canonical_json(public)
