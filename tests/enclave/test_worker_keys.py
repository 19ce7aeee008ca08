"""Worker keys sealed at rest: the stored format is fixed (a known-answer vector made by the
implementation before the recipe moved to sdk.protocol.keywrap must still open, byte for byte)."""

from __future__ import annotations

import hashlib

import pytest

from enclave.worker_keys import WorkerKeys, seal_worker_keys, unseal_worker_keys
from sdk.errors import AttestationError, DecryptionError
from sdk.protocol import keywrap
from sdk.protocol.keys import PartyKey
from sdk.protocol.models import Measurement


def _seed(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


PLATFORM = _seed("kat-platform")
MEASUREMENT = Measurement(image_id="sha256:" + "1" * 64, code_digest="2" * 64)
KEYS = WorkerKeys(PartyKey.from_seeds("worker", _seed("kat-signing"), _seed("kat-encryption")))
# sealed with nonce 00..0b by enclave/worker_keys.py as it was before the move
KAT = bytes.fromhex(
    "000102030405060708090a0b833f3113d9cbb27960b4761ed9bd690e2d3762502b7474ffbd7be9fe3eee6b22"
    "3ca121e86350a9bfaac56ebe5b5f2e72d635186bd49af7881eb0d680435e7f01878fd86244ad033ba8f75f0e"
    "e0918f37fcc05b6935938e34b956542a098dad11c09f4a12d31622c33b6096c1d954029191150bdf2e77ab8c"
    "2ad923c5e06e382e1643a68f193729467352fb99bed179fe"
)


def test_known_answer_opens() -> None:
    keys = unseal_worker_keys(KAT, PLATFORM, MEASUREMENT)
    assert keys.signer.public_key == KEYS.signer.public_key
    assert keys.encryption_public == KEYS.encryption_public


def test_sealing_is_byte_identical(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keywrap.os, "urandom", lambda n: bytes(range(n)))
    assert seal_worker_keys(KEYS, PLATFORM, MEASUREMENT) == KAT


def test_round_trip_with_fresh_nonces() -> None:
    a = seal_worker_keys(KEYS, PLATFORM, MEASUREMENT)
    b = seal_worker_keys(KEYS, PLATFORM, MEASUREMENT)
    assert a != b
    assert unseal_worker_keys(a, PLATFORM, MEASUREMENT).signer.public_key == KEYS.signer.public_key


@pytest.mark.parametrize(
    ("sealed", "platform", "measurement"),
    [
        (KAT, _seed("other-platform"), MEASUREMENT),
        (KAT, PLATFORM, Measurement(image_id=MEASUREMENT.image_id, code_digest="3" * 64)),
        (KAT[:-1] + bytes([KAT[-1] ^ 1]), PLATFORM, MEASUREMENT),
        (KAT[:27], PLATFORM, MEASUREMENT),
        (KAT, PLATFORM[:31], MEASUREMENT),
    ],
    ids=["other-platform", "other-measurement", "altered", "truncated", "short-platform"],
)
def test_refused(sealed: bytes, platform: bytes, measurement: Measurement) -> None:
    with pytest.raises(AttestationError):
        unseal_worker_keys(sealed, platform, measurement)


def test_recipe_errors_are_opaque() -> None:
    with pytest.raises(DecryptionError):
        keywrap.open_for_measurement(KAT[:20], PLATFORM, MEASUREMENT)
    with pytest.raises(DecryptionError):
        keywrap.open_for_measurement(KAT, _seed("x"), MEASUREMENT)
