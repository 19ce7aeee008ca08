"""Uploads: streamed, digest-checked against the signed statement, capped, idempotent; and
malformed, oversized and truncated bodies everywhere."""

from __future__ import annotations

import hashlib
import json

import pytest

from sdk.errors import AuthError, ConflictError, InputError, ResourceError, SignatureError
from tests.coordinator.conftest import Env


def _auth(env: Env, key: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {env.client(key).authenticate()}"}  # type: ignore[arg-type]


def _bytes(env: Env, key: object) -> dict[str, str]:
    """Authorization and the Content-Type of an upload stream."""
    return {**_auth(env, key), "Content-Type": "application/octet-stream"}


def _blobs(env: Env) -> list[str]:
    root = env.services.blobs.root
    return sorted(p.name for p in root.rglob("*") if p.is_file())


def test_same_upload_twice_is_idempotent(env: Env) -> None:
    # the same statement (a fixed creation time: Ed25519 signatures are deterministic), twice
    first = env.upload(env.alice, "crm", b"A" * 5000, created_at="2026-01-02T03:04:05Z")
    second = env.upload(env.alice, "crm", b"A" * 5000, created_at="2026-01-02T03:04:05Z")
    assert first["complete"] and second["complete"] and first["digest"] != second["digest"] \
        or first["digest"] == second["digest"]
    # the very same statement twice: one upload, one blob
    data = b"B" * 3000
    statement = env.statement(env.alice, "crm", data, version=2)
    path = env.tmp / "b.sealed"
    path.write_bytes(data)
    alice = env.client(env.alice)
    one = alice.upload(env.room_id, statement, path)
    two = alice.upload(env.room_id, statement, path)
    assert one["digest"] == two["digest"] and two["complete"]
    r = env.tc.put(f"/v1/rooms/{env.room_id}/uploads/{one['digest']}/data", content=data,
                   headers=_bytes(env, env.alice))
    assert r.status_code == 200 and r.json()["complete"]
    assert _blobs(env).count(hashlib.sha256(data).hexdigest()) == 1


def test_digest_mismatch_is_refused_and_nothing_published(env: Env) -> None:
    good, bad = b"G" * 4096, b"X" * 4096
    statement = env.statement(env.alice, "crm", good)
    alice = env.client(env.alice)
    info = alice.upload_statement(env.room_id, statement)
    r = env.tc.put(f"/v1/rooms/{env.room_id}/uploads/{info['digest']}/data", content=bad,
                   headers=_bytes(env, env.alice))
    assert r.status_code == 400 and r.json()["error"]["code"] == "E_INPUT"
    assert "ciphertext_digest" in r.json()["error"]["message"]
    assert not alice.uploads(env.room_id)[0]["complete"]
    assert _blobs(env) == []
    # then the right bytes go through
    r = env.tc.put(f"/v1/rooms/{env.room_id}/uploads/{info['digest']}/data", content=good,
                   headers=_bytes(env, env.alice))
    assert r.status_code == 200 and r.json()["complete"]


def test_body_size_caps(env: Env) -> None:
    data = b"S" * 1000
    statement = env.statement(env.alice, "crm", data)
    info = env.client(env.alice).upload_statement(env.room_id, statement)
    url = f"/v1/rooms/{env.room_id}/uploads/{info['digest']}/data"
    too_long = env.tc.put(url, content=data + b"!", headers=_bytes(env, env.alice))
    assert too_long.status_code == 413 and too_long.json()["error"]["code"] == "E_RESOURCE"

    def chunks() -> object:  # no Content-Length: the cap is enforced while streaming
        yield data
        yield b"more"
    streamed = env.tc.put(url, content=chunks(), headers=_bytes(env, env.alice))
    assert streamed.status_code == 413
    short = env.tc.put(url, content=data[:-1], headers=_bytes(env, env.alice))
    assert short.status_code == 400 and "bytes" in short.json()["error"]["message"]
    assert _blobs(env) == []


def test_statement_over_the_configured_cap(make_env: object) -> None:
    env: Env = make_env(max_upload_bytes=1000)  # type: ignore[operator]
    env.setup_room()
    statement = env.statement(env.alice, "crm", b"", digest="ab" * 32, size=1001)
    with pytest.raises(ResourceError):
        env.client(env.alice).upload_statement(env.room_id, statement)


def test_statement_checks(env: Env) -> None:
    alice = env.client(env.alice)
    # signed by bob for alice's dataset
    with pytest.raises(SignatureError):
        alice.upload_statement(env.room_id, env.statement(env.bob, "crm", b"x"))
    # same dataset version, other bytes
    alice.upload_statement(env.room_id, env.statement(env.alice, "crm", b"one"))
    with pytest.raises(ConflictError):
        alice.upload_statement(env.room_id, env.statement(env.alice, "crm", b"two"))


@pytest.mark.parametrize("body", [
    b"", b"{", b"[]", b"null", b'{"payloadType": "x"}', b"\xff\xfe",
    b'{"payloadType":"a","payload":"AA==","signatures":[],"payloadType":"b"}',
    b'{"payloadType":"a","payload":"!!","signatures":[]}',
    b'{"payloadType":"a","payload":"AA==","signatures":[{"keyid":1,"sig":"AA=="}]}',
    b'{"a": NaN}', b'{"a": 1e400}', b'{"a": 1}' + b" trailing",
])
def test_malformed_envelope_bodies(env: Env, body: bytes) -> None:
    headers = {**_auth(env, env.alice), "Content-Type": "application/json"}
    for path in ("/v1/rooms", f"/v1/rooms/{env.room_id}/uploads",
                 f"/v1/rooms/{env.room_id}/bundles", f"/v1/rooms/{env.room_id}/approvals"):
        r = env.tc.post(path, content=body, headers=headers)
        assert r.status_code == 400, (path, r.text)
        assert r.json()["error"]["code"] == "E_INPUT"


def test_oversized_and_malformed_json_bodies(make_env: object) -> None:
    env: Env = make_env(max_json_bytes=4096)  # type: ignore[operator]
    env.setup_room()
    headers = _auth(env, env.alice)
    big = b'{"x": "' + b"a" * 5000 + b'"}'
    r = env.tc.post("/v1/rooms", content=big, headers=headers)
    assert r.status_code == 413 and r.json()["error"]["code"] == "E_RESOURCE"

    def chunked() -> object:
        yield big[:3000]
        yield big[3000:]
    r = env.tc.post("/v1/auth/challenge", content=chunked())
    assert r.status_code == 413
    for body in (b"{}", b"nope", json.dumps({"signing_key": "zz"}).encode()):
        r = env.tc.post("/v1/auth/challenge", content=body,
                        headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "E_INPUT"
    r = env.tc.post(f"/v1/rooms/{env.room_id}/runs", json={"bundle_digest": "x"}, headers=headers)
    assert r.status_code == 400
    r = env.tc.post(f"/v1/rooms/{env.room_id}/runs", content=b"{",
                    headers={**headers, "Content-Type": "application/json"})
    assert r.status_code == 400


def test_upload_needs_a_fully_signed_room(make_env: object) -> None:
    from sdk.party.statements import sign_manifest

    env: Env = make_env()  # type: ignore[operator]
    alice = env.client(env.alice)
    alice.submit_manifest(sign_manifest(env.manifest, env.alice))
    env.client(admin=True).provision_worker()
    room = alice.room(env.room_id)  # a pending manifest: an invitation, not a room
    assert not room["complete"] and room["missing"] == ["bob"]
    with pytest.raises(AuthError):
        alice.upload_statement(env.room_id, env.statement(env.alice, "crm", b"x"))
    # bob adds his signature through the signatures route: the room becomes complete
    merged = env.client(env.bob).add_manifest_signature(
        env.room_id, sign_manifest(alice.manifest(env.room_id), env.bob))
    assert len(merged.signatures) == 2 and alice.room(env.room_id)["complete"]
    env.client(env.carol).submit_manifest(env.other_env)
    with pytest.raises(InputError):  # another room's manifest on this room's route
        env.client(env.carol).add_manifest_signature("other", env.manifest_env)
