"""DSSE envelopes: PAE, signing, threshold counting over distinct public keys (T55), type
confusion (T59), oversized envelopes (T63), and strict envelope parsing."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdk.errors import InputError, SealroomError, SignatureError
from sdk.protocol.dsse import (
    MAX_ENVELOPE_BYTES,
    MAX_SIGNATURES,
    Envelope,
    Signature,
    add_signature,
    open_envelope,
    pae,
    payload_type,
    sign_envelope,
    verify_signatures,
)
from sdk.protocol.keys import Signer, keyid
from tests.protocol.make_golden import seed

A = Signer.from_seed(seed("dsse-a"))
B = Signer.from_seed(seed("dsse-b"))
C = Signer.from_seed(seed("dsse-c"))
M = Signer.from_seed(seed("dsse-mallory"))
TRUSTED = {"a": A.public_key, "b": B.public_key, "c": C.public_key}
PAYLOAD = {"room_id": "r", "n": 1, "text": "h\u00e9llo"}


def envelope(*signers: Signer, kind: str = "approval") -> Envelope:
    return sign_envelope(kind, PAYLOAD, list(signers))


def with_signatures(env: Envelope, sigs: list[Signature]) -> Envelope:
    return Envelope(env.payload_type, env.payload, tuple(sigs))


# -- PAE ------------------------------------------------------------------------------------------


def test_pae_dsse_spec_example() -> None:
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_lengths_are_bytes_not_characters() -> None:
    assert pae("t\u00e9", b"\x00\xff") == b"DSSEv1 3 t\xc3\xa9 2 \x00\xff"
    assert pae("", b"") == b"DSSEv1 0  0 "


def test_pae_is_unambiguous() -> None:
    # moving bytes between type and body changes the encoding
    assert pae("a b", b"c") != pae("a", b"b c")
    assert pae("1 a", b"") != pae("1", b"a ")


def test_payload_type() -> None:
    assert payload_type("approval") == "application/vnd.sealroom.approval.v1+json"


# -- signing and round trip -------------------------------------------------------------------


def test_signature_is_over_pae_and_deterministic() -> None:
    env = envelope(A)
    assert env == envelope(A)
    A_pub = Signer.from_seed(seed("dsse-a"))._key.public_key()
    A_pub.verify(env.signatures[0].sig, pae(env.payload_type, env.payload))
    assert env.signatures[0].keyid == keyid(A.public_key) == A.keyid


def test_envelope_json_round_trip() -> None:
    env = envelope(A, B)
    assert Envelope.from_json(env.to_json()) == env
    doc = json.loads(env.to_json())
    assert set(doc) == {"payloadType", "payload", "signatures"}
    assert base64.b64decode(doc["payload"]) == env.payload


def test_open_envelope_returns_the_verified_payload() -> None:
    payload, result = open_envelope(envelope(A, B), "approval", TRUSTED, threshold=2)
    assert payload == PAYLOAD
    assert result.signed == {"a", "b"} and result.unsigned == {"c"} and result.verified


def test_add_signature_replaces_the_signers_older_one() -> None:
    env = add_signature(add_signature(envelope(A), B), A)
    assert [s.keyid for s in env.signatures] == [B.keyid, A.keyid]
    assert verify_signatures(env, TRUSTED, 2).signed == {"a", "b"}


# -- thresholds (T54, T55, T56) ---------------------------------------------------------------


def test_threshold_met_and_missing_named() -> None:
    with pytest.raises(SignatureError, match="missing: b, c"):
        open_envelope(envelope(A), "approval", TRUSTED, threshold=3)
    with pytest.raises(SignatureError, match="2 of 3"):
        open_envelope(envelope(A, C), "approval", TRUSTED, threshold=3)
    open_envelope(envelope(A, B, C), "approval", TRUSTED, threshold=3)


def test_same_signature_repeated_counts_once() -> None:
    env = envelope(A)
    repeated = with_signatures(env, [env.signatures[0]] * MAX_SIGNATURES)
    result = verify_signatures(repeated, TRUSTED, 2)
    assert result.signed == {"a"} and not result.verified
    with pytest.raises(SignatureError):
        open_envelope(repeated, "approval", TRUSTED, threshold=2)


def test_one_key_under_two_keyids_counts_once() -> None:
    env = envelope(A)
    sig = env.signatures[0].sig
    twice = with_signatures(env, [Signature(A.keyid, sig), Signature(B.keyid, sig)])
    assert verify_signatures(twice, TRUSTED, 2).signed == {"a"}
    # and a signature under a made-up keyid is not tried at all
    hinted = with_signatures(env, [Signature("not-a-keyid", sig)])
    assert verify_signatures(hinted, TRUSTED, 1).signed == frozenset()


def test_one_key_trusted_under_two_names_counts_once() -> None:
    trusted = {"a": A.public_key, "alias": A.public_key, "b": B.public_key}
    result = verify_signatures(envelope(A), trusted, 2)
    assert len(result.signed) == 1 and not result.verified
    assert verify_signatures(envelope(A, B), trusted, 2).verified


def test_a_key_not_in_the_trusted_set_does_not_count() -> None:
    env = envelope(A, M)
    result = verify_signatures(env, TRUSTED, 2)
    assert result.signed == {"a"}
    with pytest.raises(SignatureError):
        open_envelope(env, "approval", TRUSTED, threshold=2)
    # even when it claims a trusted key's keyid
    forged = with_signatures(env, [Signature(B.keyid, M.sign(pae(env.payload_type, env.payload)))])
    assert verify_signatures(forged, TRUSTED, 1).signed == frozenset()


def test_a_bad_signature_beside_a_good_one_is_ignored() -> None:
    env = envelope(A)
    junk = [Signature(A.keyid, b""), Signature(A.keyid, b"\x00" * 64), Signature(A.keyid, b"x" * 9)]
    assert verify_signatures(with_signatures(env, [*junk, env.signatures[0]]), TRUSTED, 1).verified


def test_malformed_trusted_key_is_unsigned_not_a_crash() -> None:
    assert not verify_signatures(envelope(A), {"a": b"\x00" * 5}, 1).verified


def test_threshold_must_be_positive() -> None:
    with pytest.raises(ValueError):
        verify_signatures(envelope(A), TRUSTED, 0)


def test_bare_signature_without_pae_fails() -> None:  # T59
    env = envelope(A)
    bare = with_signatures(env, [Signature(A.keyid, A.sign(env.payload))])
    with pytest.raises(SignatureError):
        open_envelope(bare, "approval", TRUSTED)


def test_signature_does_not_carry_over_to_another_type() -> None:  # T59
    env = envelope(A)
    retyped = Envelope(payload_type("receipt"), env.payload, env.signatures)
    with pytest.raises(SignatureError):
        open_envelope(retyped, "receipt", TRUSTED)


def test_other_kind_presented_is_refused() -> None:  # T59
    """A correctly signed envelope of another kind is refused (wrong payload type)."""
    with pytest.raises(InputError, match="wrong payload type"):
        open_envelope(envelope(A, kind="receipt"), "approval", TRUSTED)
    # and one signed by a key that is not trusted for this kind fails on the signature first
    with pytest.raises(SignatureError):
        open_envelope(envelope(M, kind="receipt"), "approval", TRUSTED)


def test_tampered_payload_byte_fails() -> None:  # T53
    env = envelope(A)
    body = bytearray(env.payload)
    body[body.index(b"1")] = ord("2")
    with pytest.raises(SignatureError):
        open_envelope(Envelope(env.payload_type, bytes(body), env.signatures), "approval", TRUSTED)


# -- the payload is parsed strictly, after verification ----------------------------------------


def _signed_raw(body: bytes, kind: str = "approval") -> Envelope:
    ptype = payload_type(kind)
    return Envelope(ptype, body, (Signature(A.keyid, A.sign(pae(ptype, body))),))


@pytest.mark.parametrize(
    "body",
    [
        b'{"n": 1}',  # not canonical
        b'{"n":1,"n":2}',  # duplicate key (T60)
        b'{"eps":NaN}',
        b"[1]",  # not an object
        b'{"n":1} ',
        b"\xef\xbb\xbf{}",
        b'{"n":9007199254740993}',
    ],
)
def test_signed_but_malformed_payload_is_an_input_error(body: bytes) -> None:
    with pytest.raises(InputError):
        open_envelope(_signed_raw(body), "approval", TRUSTED)


def test_payload_cap() -> None:
    env = _signed_raw(b'{"x":"' + b"a" * 2000 + b'"}')
    with pytest.raises(InputError, match="larger than"):
        open_envelope(env, "approval", TRUSTED, max_payload_bytes=1000)


# -- envelope parsing and caps (T63) ------------------------------------------------------------


def _envelope_dict(**overrides: Any) -> dict[str, Any]:
    return {**envelope(A).to_dict(), **overrides}


MALFORMED: dict[str, object] = {
    "not an object": [],
    "missing signatures": {"payloadType": "x", "payload": ""},
    "unknown field": _envelope_dict(extra=1),
    "payloadType not a string": _envelope_dict(payloadType=1),
    "payloadType too long": _envelope_dict(payloadType="x" * 201),
    "payload not base64": _envelope_dict(payload="%%%"),
    "payload unpadded": _envelope_dict(payload="YQ"),
    "payload with newline": _envelope_dict(payload="YQ==\n"),
    "payload not text": _envelope_dict(payload=5),
    "payload non-ascii": _envelope_dict(payload="\u00e9"),
    "signatures not a list": _envelope_dict(signatures={}),
    "signature not an object": _envelope_dict(signatures=["x"]),
    "signature missing sig": _envelope_dict(signatures=[{"keyid": "k"}]),
    "signature extra field": _envelope_dict(signatures=[{"keyid": "k", "sig": "", "x": 1}]),
    "keyid not a string": _envelope_dict(signatures=[{"keyid": 5, "sig": ""}]),
    "keyid too long": _envelope_dict(signatures=[{"keyid": "k" * 129, "sig": ""}]),
    "sig not base64": _envelope_dict(signatures=[{"keyid": "k", "sig": "*"}]),
    "too many signatures": _envelope_dict(
        signatures=[{"keyid": "k", "sig": ""}] * (MAX_SIGNATURES + 1)
    ),
}


@pytest.mark.parametrize("doc", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_envelopes_are_input_errors(doc: object) -> None:
    with pytest.raises(InputError):
        Envelope.from_dict(doc)
    with pytest.raises(InputError):
        Envelope.from_json(json.dumps(doc).encode())


@pytest.mark.timeout(30)
def test_million_signatures_rejected_before_parsing() -> None:  # T63
    sig = envelope(A).to_dict()["signatures"][0]
    item = json.dumps(sig).encode()
    doc = (
        b'{"payloadType":"'
        + payload_type("approval").encode()
        + b'","payload":"e30=","signatures":['
        + b",".join([item] * 10**6)
        + b"]}"
    )
    assert len(doc) > 100 * 1000 * 1000
    with pytest.raises(InputError, match="larger than"):
        Envelope.from_json(doc)


@pytest.mark.timeout(30)
def test_hundred_megabyte_envelope_rejected_before_parsing() -> None:  # T63
    doc = b'{"payloadType":"x","payload":"' + b"A" * (100 * 1024 * 1024) + b'","signatures":[]}'
    with pytest.raises(InputError, match="larger than"):
        Envelope.from_json(doc)
    assert MAX_ENVELOPE_BYTES <= 16 * 1024 * 1024


def test_signature_count_cap_within_the_byte_cap() -> None:
    sig = envelope(A).to_dict()["signatures"][0]
    doc = _envelope_dict(signatures=[sig] * 1000)
    data = json.dumps(doc).encode()
    assert len(data) < MAX_ENVELOPE_BYTES
    with pytest.raises(InputError, match="more than"):
        Envelope.from_json(data)


# -- properties ------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_any_bit_flip_in_envelope_json_fails_with_a_typed_error(data: st.DataObject) -> None:
    env = envelope(A, B)
    raw = bytearray(env.to_json())
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= 1 << data.draw(st.integers(0, 7))
    try:
        parsed = Envelope.from_json(bytes(raw))
        open_envelope(parsed, "approval", TRUSTED, threshold=2)
    except SealroomError as exc:
        assert isinstance(exc, InputError | SignatureError)
    else:
        # base64 decoding ignores unused low bits of the last character, so a flip there can
        # decode to the very same envelope; anything else must fail
        assert parsed == env
        assert parsed.to_json() == env.to_json()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_envelope_bytes_give_input_error(data: bytes) -> None:
    with pytest.raises(InputError):
        Envelope.from_json(data)
