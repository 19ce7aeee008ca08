"""Authorization matrix: every route × no token, an expired token, another room's party, a
non-recipient / non-owner / the operator where a party is required — 401/403 with a JSON
error body, never data."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import update

from coordinator.storage.models import Token
from sdk.party.statements import make_approval
from tests.coordinator.conftest import ADMIN, Env


@pytest.fixture()
def world(env: Env) -> dict[str, Any]:
    env.upload_both()
    bundle = env.ready_bundle(recipients=("alice",))
    alice = env.client(env.alice)
    run = alice.create_run(env.room_id, bundle.digest())
    alice.wait_run(env.room_id, run["run_id"], timeout=60)
    upload = alice.uploads(env.room_id)[0]
    return {"bundle": bundle, "run": run["run_id"], "upload": upload["digest"],
            "statement": env.statement(env.alice, "crm", b"other-bytes", version=2)}


def routes(env: Env, w: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    r, b, run, up = env.room_id, w["bundle"].digest(), w["run"], w["upload"]
    approval = make_approval(env.alice, env.manifest, env.digest, b)
    js = {"headers": {"Content-Type": "application/json"}}
    return [
        ("GET", f"/v1/rooms/{r}", {}),
        ("GET", f"/v1/rooms/{r}/manifest", {}),
        ("POST", f"/v1/rooms/{r}/signatures", {"content": env.manifest_env.to_json(), **js}),
        ("GET", f"/v1/rooms/{r}/attestations", {}),
        ("POST", f"/v1/rooms/{r}/uploads", {"content": w["statement"].to_json(), **js}),
        ("GET", f"/v1/rooms/{r}/uploads", {}),
        ("GET", f"/v1/rooms/{r}/uploads/{up}", {}),
        ("PUT", f"/v1/rooms/{r}/uploads/{up}/data",
         {"content": b"x", "headers": {"Content-Type": "application/octet-stream"}}),
        ("POST", f"/v1/rooms/{r}/bundles", {"content": w["bundle"].to_json(), **js}),
        ("GET", f"/v1/rooms/{r}/bundles", {}),
        ("GET", f"/v1/rooms/{r}/bundles/{b}", {}),
        ("GET", f"/v1/rooms/{r}/bundles/{b}/approvals", {}),
        ("POST", f"/v1/rooms/{r}/approvals", {"content": approval.to_json(), **js}),
        ("POST", f"/v1/rooms/{r}/revocations", {"content": approval.to_json(), **js}),
        ("POST", f"/v1/rooms/{r}/runs", {"json": {"bundle_digest": b}}),
        ("GET", f"/v1/rooms/{r}/runs", {}),
        ("GET", f"/v1/rooms/{r}/runs/{run}", {}),
        ("GET", f"/v1/rooms/{r}/runs/{run}/receipt", {}),
        ("GET", f"/v1/rooms/{r}/runs/{run}/output", {}),
        ("POST", f"/v1/rooms/{r}/runs/{run}/feedback", {"json": {"changed_decision": True}}),
        ("GET", f"/v1/rooms/{r}/log/entries", {}),
        ("GET", f"/v1/rooms/{r}/log/checkpoint", {}),
        ("GET", f"/v1/rooms/{r}/log/checkpoints", {}),
        ("GET", f"/v1/rooms/{r}/log/inclusion?index=0&tree_size=1", {}),
        ("GET", f"/v1/rooms/{r}/log/consistency?first=0&second=1", {}),
        ("GET", f"/v1/rooms/{r}/status", {}),
    ]


GLOBAL = [("GET", "/v1/rooms"), ("POST", "/v1/rooms"), ("POST", "/v1/admin/workers"),
          ("GET", "/metrics")]


def _check(response: Any, status: int) -> None:
    assert response.status_code == status, (response.request.url, response.text)
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == "E_AUTH"
    assert "Traceback" not in response.text


def test_no_token_and_bad_token(env: Env, world: dict[str, Any]) -> None:
    for method, path, kw in [*routes(env, world), *((m, p, {}) for m, p in GLOBAL)]:
        _check(env.tc.request(method, path, **kw), 401)
        _check(env.tc.request(method, path, headers={"Authorization": "Bearer nope"},
                              **{k: v for k, v in kw.items() if k != "headers"}), 401)


def test_expired_token(env: Env, world: dict[str, Any]) -> None:
    token = env.client(env.alice).authenticate()
    with env.services.db.write() as s:
        s.execute(update(Token).values(expires_at=datetime(2000, 1, 1)))
    for method, path, kw in routes(env, world):
        headers = {**kw.get("headers", {}), "Authorization": f"Bearer {token}"}
        rest = {k: v for k, v in kw.items() if k != "headers"}
        _check(env.tc.request(method, path, headers=headers, **rest), 401)


def test_party_of_another_room(env: Env, world: dict[str, Any]) -> None:
    token = env.client(env.carol).authenticate()
    for method, path, kw in routes(env, world):
        headers = {**kw.get("headers", {}), "Authorization": f"Bearer {token}"}
        rest = {k: v for k, v in kw.items() if k != "headers"}
        _check(env.tc.request(method, path, headers=headers, **rest), 403)
    # and carol cannot submit room1's manifest: she is not one of its parties
    r = env.tc.post("/v1/rooms", content=env.manifest_env.to_json(),
                    headers={"Authorization": f"Bearer {token}",
                             "Content-Type": "application/json"})
    _check(r, 403)
    # a room she is in is invisible in others' listings and vice versa
    assert [x["room_id"] for x in env.client(env.carol).rooms()] == ["other"]


def test_non_recipient_non_owner_and_operator(env: Env, world: dict[str, Any]) -> None:
    r, run = env.room_id, world["run"]
    bob = {"Authorization": f"Bearer {env.client(env.bob).authenticate()}"}
    bob_json = {**bob, "Content-Type": "application/json"}
    bob_bytes = {**bob, "Content-Type": "application/octet-stream"}
    _check(env.tc.get(f"/v1/rooms/{r}/runs/{run}/output", headers=bob), 403)
    _check(env.tc.post(f"/v1/rooms/{r}/runs/{run}/feedback", headers=bob,
                       json={"changed_decision": False}), 403)
    # bob does not own crm: neither the statement nor the bytes
    _check(env.tc.post(f"/v1/rooms/{r}/uploads", content=world["statement"].to_json(),
                       headers=bob_json), 403)
    _check(env.tc.put(f"/v1/rooms/{r}/uploads/{world['upload']}/data", content=b"x",
                      headers=bob_bytes), 403)
    # parties cannot use operator routes
    _check(env.tc.post("/v1/admin/workers", headers=bob), 403)
    _check(env.tc.get("/metrics", headers=bob), 403)
    # the operator reads room metadata but never outputs, and cannot act as a party
    admin = {"Authorization": f"Bearer {ADMIN}"}
    assert env.tc.get(f"/v1/rooms/{r}/status", headers=admin).status_code == 200
    _check(env.tc.get(f"/v1/rooms/{r}/runs/{run}/output", headers=admin), 403)
    _check(env.tc.post(f"/v1/rooms/{r}/runs", headers=admin,
                       json={"bundle_digest": world["bundle"].digest()}), 403)
    _check(env.tc.post(f"/v1/rooms/{r}/bundles",
                       headers={**admin, "Content-Type": "application/json"},
                       content=world["bundle"].to_json()), 403)
