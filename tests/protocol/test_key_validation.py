"""Small-order and non-canonical public keys are refused wherever a key is parsed (issue 14):
Ed25519 signing keys (RFC 8032 decoding, cofactor check) and X25519 encryption keys (the
low-order u-coordinates), in identities, manifests, attestations, key files and the login
signature check."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.bindings import crypto_scalarmult
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey

from sdk.errors import InputError
from sdk.protocol.keys import (
    PartyKey,
    PublicIdentity,
    Signer,
    check_encryption_key,
    check_signing_key,
    ed25519_public_from_hex,
    ed25519_verifies,
    identity_from_file,
)
from sdk.protocol.login import auth_message
from sdk.protocol.models import Attestation, Manifest, WorkerPolicy

P = 2**255 - 19

#: the eight small-order points of edwards25519, canonically encoded ("Taming the many
#: EdDSAs", Chalkias et al., 2020, table 6)
SMALL_ORDER_ED25519 = [
    "0100000000000000000000000000000000000000000000000000000000000000",  # identity, order 1
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # order 2
    "0000000000000000000000000000000000000000000000000000000000000000",  # order 4
    "0000000000000000000000000000000000000000000000000000000000000080",  # order 4
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",  # order 8
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",  # order 8
]
#: non-canonical encodings: y >= p (y = p + k fits in 255 bits for k < 19), and x = 0 with
#: the sign bit set (the identity and the order-2 point "negated")
NON_CANONICAL_ED25519 = [
    (P + k | sign << 255).to_bytes(32, "little").hex() for k in range(19) for sign in (0, 1)
] + [
    "0100000000000000000000000000000000000000000000000000000000000080",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
]
#: low-order X25519 u-coordinates (libsodium's blocklist), and their non-canonical forms
SMALL_ORDER_X25519 = [
    (0).to_bytes(32, "little"),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    (P - 1).to_bytes(32, "little"),
]
NON_CANONICAL_X25519 = [
    (P).to_bytes(32, "little"),
    (P + 1).to_bytes(32, "little"),
    (2**255 - 1).to_bytes(32, "little"),
] + [(int.from_bytes(u, "little") | 1 << 255).to_bytes(32, "little")
     for u in SMALL_ORDER_X25519]

ALICE = PartyKey.from_seeds("alice", hashlib.sha256(b"kv-a").digest(),
                            hashlib.sha256(b"kv-a-enc").digest())
IDENTITY_POINT = bytes.fromhex(SMALL_ORDER_ED25519[0])


@pytest.mark.parametrize("hex_key", SMALL_ORDER_ED25519 + NON_CANONICAL_ED25519)
def test_small_order_and_non_canonical_signing_keys_are_refused(hex_key: str) -> None:
    with pytest.raises(InputError, match="not an acceptable Ed25519 public key"):
        check_signing_key(bytes.fromhex(hex_key), "k")
    with pytest.raises(InputError):
        ed25519_public_from_hex(hex_key, "k")


@pytest.mark.parametrize("raw", SMALL_ORDER_X25519 + NON_CANONICAL_X25519)
def test_small_order_and_non_canonical_encryption_keys_are_refused(raw: bytes) -> None:
    with pytest.raises(InputError, match="not an acceptable X25519 public key"):
        check_encryption_key(raw, "k")


@pytest.mark.parametrize("raw", SMALL_ORDER_X25519)
def test_the_x25519_blocklist_is_what_gives_an_all_zero_secret(raw: bytes) -> None:
    """Each blocked u-coordinate really is of small order: a (clamped) scalar multiple is the
    all-zero point, which libsodium refuses to return."""
    scalar = bytes(PrivateKey.generate())
    assert len(crypto_scalarmult(scalar, bytes(PrivateKey.generate().public_key))) == 32
    with pytest.raises(CryptoError):  # libsodium refuses an all-zero result
        crypto_scalarmult(scalar, raw)


def test_a_point_off_the_curve_is_refused() -> None:
    # y = 2 is not the y-coordinate of any point of edwards25519 (x^2 has no root)
    with pytest.raises(InputError, match="not a canonical encoding of a curve point"):
        check_signing_key((2).to_bytes(32, "little"), "k")


def test_wrong_lengths_are_refused() -> None:
    for raw in (b"", bytes(31), bytes(33)):
        with pytest.raises(InputError):
            check_signing_key(raw, "k")
        with pytest.raises(InputError):
            check_encryption_key(raw, "k")


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_real_keys_always_pass(signing_seed: bytes, encryption_seed: bytes) -> None:
    key = PartyKey.from_seeds("p", signing_seed, encryption_seed)
    assert check_signing_key(key.identity.signing_key) == key.identity.signing_key
    assert check_encryption_key(key.identity.encryption_key) == key.identity.encryption_key


def test_the_forged_login_of_the_issue_does_not_verify() -> None:
    """Signing key = the identity point, signature R = identity, S = 0: the equation
    [S]B = R + [k]A holds for every message, so it must be refused by the key check."""
    forged = IDENTITY_POINT + bytes(32)
    message = auth_message(bytes(32), "http://127.0.0.1:8700")
    assert not ed25519_verifies(IDENTITY_POINT, forged, message)
    # and a real key with a real signature still verifies
    signer = Signer.generate()
    assert ed25519_verifies(signer.public_key, signer.sign(message), message)


# -- every place a key is parsed ----------------------------------------------------------------


def _identity(signing: bytes | None = None, encryption: bytes | None = None) -> dict[str, Any]:
    d = ALICE.identity.to_dict()
    if signing is not None:
        d["signing_key"] = signing.hex()
    if encryption is not None:
        d["encryption_key"] = encryption.hex()
    return d


def test_identities_refuse_weak_keys() -> None:
    PublicIdentity.from_dict(_identity())
    with pytest.raises(InputError, match="signing_key"):
        PublicIdentity.from_dict(_identity(signing=IDENTITY_POINT))
    with pytest.raises(InputError, match="encryption_key"):
        PublicIdentity.from_dict(_identity(encryption=SMALL_ORDER_X25519[2]))


def _manifest(party: dict[str, Any], platform_key: str) -> dict[str, Any]:
    return {
        "room_id": "kv", "version": 1,
        "parties": [{**party, "roles": ["data_owner", "analyst", "recipient"]}],
        "datasets": [{
            "name": "d", "owner": "alice",
            "schema": [{"name": "uid", "type": "string"}, {"name": "x", "type": "int"}],
            "id_column": "uid", "id_kind": "sha256", "min_group_size": 5,
            "epsilon_budget": "1", "delta_budget": "0",
        }],
        "workers": {"measurements": [{"image_id": "unisolated", "code_digest": "c0de" * 16}],
                    "providers": ["simulated"], "platform_keys": [platform_key],
                    "allow_unisolated": True},
        "policies": {"min_group_size": 5, "max_runs": 10},
        "expires": "2099-01-01T00:00:00Z",
    }


def test_manifests_refuse_weak_party_and_platform_keys() -> None:
    platform = Signer.generate().public_key.hex()
    Manifest.from_dict(_manifest(_identity(), platform))
    for party in (_identity(signing=IDENTITY_POINT),
                  _identity(signing=bytes.fromhex(NON_CANONICAL_ED25519[0])),
                  _identity(encryption=bytes(32))):
        with pytest.raises(InputError):
            Manifest.from_dict(_manifest(party, platform))
    with pytest.raises(InputError, match="platform_keys"):
        Manifest.from_dict(_manifest(_identity(), SMALL_ORDER_ED25519[4]))
    with pytest.raises(InputError, match="platform_keys"):
        WorkerPolicy.from_dict(_manifest(_identity(), SMALL_ORDER_ED25519[1])["workers"])


def test_attestations_refuse_weak_worker_keys() -> None:
    good = {
        "provider": "simulated", "isolation": "none",
        "worker_signing_key": Signer.generate().public_key.hex(),
        "worker_encryption_key": bytes(PrivateKey.generate().public_key).hex(),
        "measurement": {"image_id": "unisolated", "code_digest": "c0de" * 16},
        "issued_at": "2026-01-01T00:00:00Z",
    }
    Attestation.from_dict(good)
    with pytest.raises(InputError, match="worker_signing_key"):
        Attestation.from_dict({**good, "worker_signing_key": IDENTITY_POINT.hex()})
    with pytest.raises(InputError, match="worker_encryption_key"):
        Attestation.from_dict({**good, "worker_encryption_key": (1).to_bytes(32, "little").hex()})


def test_key_files_refuse_weak_public_keys(tmp_path: Path) -> None:
    data = json.loads(ALICE.to_file_bytes())
    data["public"]["signing_key"] = IDENTITY_POINT.hex()
    path = tmp_path / "weak.pub"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="signing_key"):
        identity_from_file(path)
    with pytest.raises(InputError, match="signing_key"):
        PartyKey.from_file_bytes(path.read_bytes())
    data = json.loads(ALICE.to_file_bytes())
    data["public"]["encryption_key"] = SMALL_ORDER_X25519[3].hex()
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="encryption_key"):
        identity_from_file(path)
