"""Room ids nobody can squat or probe (issue 14), against real uvicorn server processes.

* A stranger's manifest that lists other parties but carries only its own signature reserves
  nothing: the real, fully signed manifest gets the id, and the stranger's is dropped.
* Any number of pending manifests coexist per id, each visible only to the parties it lists
  (as an invitation naming who signed), and they expire.
* A caller that is not a party of a room gets byte-identical answers on every room route,
  whether or not the room exists (an existing room with uploads, a bundle and a run, against
  another coordinator where the id was never used).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from coordinator.worker import ensure_platform_key
from sdk.client import Client
from sdk.errors import AuthError, ConflictError, ResourceError
from sdk.party.statements import make_approval, make_bundle, sign_manifest
from sdk.protocol.clock import format_time
from sdk.protocol.dsse import Envelope, sign_envelope
from sdk.protocol.keys import PartyKey
from sdk.protocol.models import Manifest, Upload
from sdk.protocol.spec import OutputSpec
from tests.cli.conftest import fails, ok, sealroom
from tests.coordinator.conftest import (
    ADMIN,
    AGG,
    answers_health,
    free_port,
    manifest_for,
    party,
    stop_process,
    wait_until,
)
from tests.kit import acks, follow

REPO = Path(__file__).resolve().parents[2]


class Server:
    """``tests.coordinator.server_main`` (uvicorn, the fake worker) with extra settings."""

    def __init__(self, data: Path, **settings: str) -> None:
        data.mkdir(parents=True, exist_ok=True)
        ensure_platform_key(data / "platform.key")
        self.data, self.port = data, free_port()
        self._clients: dict[str, Client] = {}
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEALROOM_")}
        env.update({f"SEALROOM_{k.upper()}": v for k, v in settings.items()})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.coordinator.server_main", "--data-dir", str(data),
             "--port", str(self.port)], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        wait_until(self._up, timeout=60)

    def _up(self) -> bool:
        return answers_health(self.url, self.proc)

    @property
    def platform_seed(self) -> bytes:
        return (self.data / "platform.key").read_bytes()

    def client(self, key: PartyKey) -> Client:
        """One client per party (each logs in once: challenges are rate-limited)."""
        if key.name not in self._clients:
            self._clients[key.name] = Client(self.url, key)
        return self._clients[key.name]

    def pending_rows(self, room_id: str) -> int:
        with sqlite3.connect(self.data / "sealroom.db") as db:
            row = db.execute("SELECT count(*) FROM pending_manifests WHERE room_id = ?",
                             (room_id,)).fetchone()
        return int(row[0])

    def stop(self) -> None:
        if self.proc.poll() is None:
            for client in self._clients.values():
                client.close()
        stop_process(self.proc)


def _server(tmp: pytest.TempPathFactory, name: str, **settings: str) -> Iterator[Server]:
    server = Server(tmp.mktemp(name) / "data", **settings)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _server(tmp_path_factory, "squat")


@pytest.fixture(scope="module")
def short_lived(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Pending manifests live 3 s; a key may have 2 pending at once."""
    yield from _server(tmp_path_factory, "ttl", pending_manifest_ttl_s="3",
                       pending_manifests_per_key="2")


ALICE, BOB, CAROL, MALLORY, EVE = (party(n) for n in ("alice", "bob", "carol", "mallory", "eve"))


def _manifest(server: Server, room_id: str, parties: list[PartyKey]) -> Manifest:
    return manifest_for(room_id, parties, server.platform_seed)


def _signed(manifest: Manifest, *keys: PartyKey) -> Envelope:
    envelope = sign_manifest(manifest, keys[0])
    for key in keys[1:]:
        envelope = sign_manifest(envelope, key)
    return envelope


def test_a_squatted_id_goes_to_the_fully_signed_manifest(server: Server) -> None:
    # the attack of the issue: mallory lists alice and bob, and signs alone
    squat = _signed(_manifest(server, "jointroom", [MALLORY, ALICE, BOB]), MALLORY)
    info = server.client(MALLORY).submit_manifest(squat)
    assert info["complete"] is False and info["signed"] == ["mallory"]
    assert server.pending_rows("jointroom") == 1
    # it is no room: not listed as one, and nothing but an invitation to alice
    alice, bob = server.client(ALICE), server.client(BOB)
    assert [r["room_id"] for r in alice.rooms()] == []
    [invite] = alice.invitations()
    assert invite["room_id"] == "jointroom" and invite["signed"] == ["mallory"]
    assert invite["manifest_digest"] == squat.digest() and invite["you"] == "alice"
    with pytest.raises(AuthError):  # not a room: no uploads, no status
        alice.room_status("jointroom")
    # the real manifest, signed by both parties it lists, gets the id (201: a new room)
    real = _signed(_manifest(server, "jointroom", [ALICE, BOB]), ALICE, BOB)
    r = httpx.post(f"{server.url}/v1/rooms", content=real.to_json(),
                   headers={"Authorization": f"Bearer {alice.authenticate()}",
                            "Content-Type": "application/json"})
    assert r.status_code == 201 and r.json()["complete"] is True, r.text
    for client in (alice, bob):
        assert [(x["room_id"], x["manifest_digest"]) for x in client.rooms()] == \
            [("jointroom", real.digest())]
        assert client.invitations() == []
        assert client.room("jointroom")["manifest_digest"] == real.digest()
    # the squatter's manifest was dropped with every other pending one of the id
    assert server.pending_rows("jointroom") == 0
    assert server.client(MALLORY).invitations() == []
    with pytest.raises(AuthError, match="not a party of this room"):
        server.client(MALLORY).room("jointroom")
    # a manifest every listed party signed cannot take an id that is taken
    other = _signed(_manifest(server, "jointroom", [MALLORY, EVE]), MALLORY, EVE)
    with pytest.raises(ConflictError, match="choose another room id"):
        server.client(MALLORY).submit_manifest(other)
    assert server.pending_rows("jointroom") == 0
    assert server.client(ALICE).room("jointroom")["manifest_digest"] == real.digest()


def test_signing_step_by_step_beside_a_squatter(server: Server) -> None:
    """The walkthrough's flow (submit half-signed, the other party signs the coordinator's
    copy) still works when a squatter's manifest for the same id lists the same party."""
    real = _manifest(server, "stepwise", [ALICE, BOB])
    squat = _manifest(server, "stepwise", [MALLORY, BOB])
    alice, bob = server.client(ALICE), server.client(BOB)
    assert alice.submit_manifest(sign_manifest(real, ALICE))["complete"] is False
    server.client(MALLORY).submit_manifest(sign_manifest(squat, MALLORY))
    seen = {i["manifest_digest"]: i["signed"] for i in bob.invitations()}
    digest = _signed(real, ALICE).digest()
    assert seen == {digest: ["alice"], sign_manifest(squat, MALLORY).digest(): ["mallory"]}
    with pytest.raises(ConflictError, match="digest="):  # two invitations: bob must choose
        bob.manifest("stepwise")
    copy = bob.manifest("stepwise", digest=digest)
    assert copy.digest() == digest and len(copy.signatures) == 1
    merged = bob.add_manifest_signature("stepwise", sign_manifest(copy, BOB))
    assert len(merged.signatures) == 2
    assert alice.room("stepwise")["complete"] is True
    assert server.pending_rows("stepwise") == 0
    assert bob.invitations() == []


def test_cli_lists_invitations_and_signs_the_chosen_one(server: Server, tmp_path: Path) -> None:
    room_id = "cliroom"
    home = tmp_path / "home-bob"
    (home / "keys").mkdir(parents=True)
    BOB.save(home / "keys" / "bob.key")
    real = _signed(_manifest(server, room_id, [ALICE, BOB]), ALICE)
    server.client(ALICE).submit_manifest(real)
    server.client(MALLORY).submit_manifest(
        _signed(_manifest(server, room_id, [MALLORY, BOB]), MALLORY))
    cli = ("--coordinator", server.url, "--room", room_id)
    out = ok(sealroom(*cli, "room", "invitations", home=home)).out
    assert out.count(room_id) >= 2 and "alice" in out and "mallory" in out
    fails(sealroom(*cli, "room", "sign", home=home), "E_CONFLICT")
    out = ok(sealroom(*cli, "room", "sign", "--digest", real.digest(), home=home)).out
    assert "missing signatures" not in out
    ok(sealroom(*cli, "room", "verify", home=home))
    assert "no pending manifest" in ok(sealroom(*cli, "room", "invitations", home=home)).out


def test_logout_ends_a_token_the_read_routes_kept(server: Server) -> None:
    """The polled read routes reuse what they looked up (a token, a verified room, a rendered
    answer) only until the next write: a logout is one."""
    server.client(ALICE).submit_manifest(
        _signed(_manifest(server, "kept", [ALICE, BOB]), ALICE, BOB))
    token = Client(server.url, ALICE).authenticate()
    headers = {"Authorization": f"Bearer {token}"}
    paths = [f"/v1/rooms/kept{tail}" for tail in ("", "/status", "/log/checkpoint")]
    for _ in range(3):
        for path in paths:
            assert httpx.get(server.url + path, headers=headers).status_code == 200
    r = httpx.post(f"{server.url}/v1/auth/logout", headers=headers)
    assert r.status_code == 204, r.text
    for path in paths:
        r = httpx.get(server.url + path, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "E_AUTH", (path, r.text)


def test_pending_manifests_coexist_and_expire(short_lived: Server) -> None:
    server = short_lived
    room_id = "shared-id"
    first = _signed(_manifest(server, room_id, [ALICE, BOB]), ALICE)
    second = _signed(_manifest(server, room_id, [CAROL, BOB]), CAROL)
    alice, bob, carol, eve = (server.client(k) for k in (ALICE, BOB, CAROL, EVE))
    assert alice.submit_manifest(first)["complete"] is False
    assert carol.submit_manifest(second)["complete"] is False
    assert server.pending_rows(room_id) == 2
    # each party sees the invitations that list it, naming who signed; eve sees nothing
    invites = {i["manifest_digest"]: i for i in bob.invitations()}
    assert set(invites) == {first.digest(), second.digest()}
    assert invites[first.digest()]["signed"] == ["alice"]
    assert invites[first.digest()]["missing"] == ["bob"]
    assert invites[first.digest()]["submitted_by"] == "alice"
    assert [p["keyid"] for p in invites[second.digest()]["parties"]] == \
        [CAROL.identity.keyid, BOB.identity.keyid]
    assert [i["manifest_digest"] for i in alice.invitations()] == [first.digest()]
    assert [i["manifest_digest"] for i in carol.invitations()] == [second.digest()]
    assert eve.invitations() == [] and eve.rooms() == []
    with pytest.raises(AuthError, match="not a party of this room"):
        eve.room(room_id)
    with pytest.raises(AuthError, match="not a party of this room"):
        eve.manifest(room_id)
    # a key may keep only so many pending manifests
    alice.submit_manifest(_signed(_manifest(server, "a-2", [ALICE, CAROL]), ALICE))
    with pytest.raises(ResourceError, match="pending manifests"):
        alice.submit_manifest(_signed(_manifest(server, "a-3", [ALICE, CAROL]), ALICE))
    # ... and they expire: gone from every view, then purged
    wait_until(lambda: bob.invitations() == [] and alice.invitations() == [], timeout=30)
    with pytest.raises(AuthError):
        bob.manifest(room_id)
    again = alice.submit_manifest(first)
    assert again["complete"] is False and again["signed"] == ["alice"]
    assert server.pending_rows(room_id) == 1 and server.pending_rows("a-2") == 0


def test_a_half_signed_room_of_before_becomes_a_pending_manifest(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """A coordinator of before stored half-signed manifests as rooms (reserving their id): on
    start-up they become pending manifests."""
    data = tmp_path_factory.mktemp("legacy") / "data"
    Server(data).stop()  # creates the tables
    half = _signed(manifest_for("legacy", [ALICE, BOB], (data / "platform.key").read_bytes()),
                   ALICE)
    with sqlite3.connect(data / "sealroom.db") as db:
        db.execute("INSERT INTO rooms (room_id, manifest_digest, envelope, complete, submitter,"
                   " created_at, updated_at) VALUES (?, ?, ?, 0, 'alice', '2026-01-01 00:00:00',"
                   " '2026-01-01 00:00:00')", ("legacy", half.digest(), half.to_json().decode()))
        for key in (ALICE, BOB):
            db.execute("INSERT INTO room_parties VALUES (?, ?, ?)",
                       ("legacy", key.name, key.signer.public_key.hex()))
    server = Server(data)
    try:
        bob = server.client(BOB)
        assert bob.rooms() == []
        [invite] = bob.invitations()
        assert (invite["room_id"], invite["signed"]) == ("legacy", ["alice"])
        merged = bob.add_manifest_signature("legacy", sign_manifest(bob.manifest("legacy"), BOB))
        assert len(merged.signatures) == 2 and bob.room("legacy")["complete"] is True
    finally:
        server.stop()


def test_what_is_derived_from_the_database_goes_stale_at_each_write(tmp_path: Path) -> None:
    from sqlalchemy import select

    from coordinator.storage.db import Database, StateCache
    from coordinator.storage.models import Worker

    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    db.create_all()
    cache: StateCache[str] = StateCache(db, max_age=60, weigh=len, max_weight=160)
    assert cache.get("k", lambda: "one") == "one" and cache.get("k", lambda: "two") == "one"
    with db.write() as s:  # a transaction that only reads changes nothing
        s.scalars(select(Worker)).all()
    assert cache.peek("k") == "one"
    generation, stamp = cache.mark()
    with db.write() as s:
        s.execute(Worker.__table__.delete())
    assert cache.peek("k") is None  # written since
    cache.put("k", "computed before the write", generation, stamp)
    assert cache.peek("k") is None  # not kept
    assert cache.get("k", lambda: "three") == "three" and cache.peek("k") == "three"
    cache.put("big", "x" * 11, *cache.mark())  # over a sixteenth of the budget: not kept
    assert cache.peek("big") is None
    db.dispose()


# -- the existence oracle ---------------------------------------------------------------------

ROOM = "secret"
MISSING = "no-such-room"


class Existing:
    """Room ``secret`` on one server: alice and bob, both uploads, an approved bundle, a run."""

    def __init__(self, server: Server, tmp: Path) -> None:
        self.server = server
        self.manifest = _manifest(server, ROOM, [ALICE, BOB])
        self.envelope = _signed(self.manifest, ALICE, BOB)
        self.digest = self.envelope.digest()
        admin = Client(server.url, admin_token=ADMIN)
        admin.provision_worker()
        server.client(ALICE).submit_manifest(self.envelope)
        attestation = Client(server.url).attestation().digest()
        self.statements: dict[str, Envelope] = {}
        for key, dataset in ((ALICE, "crm"), (BOB, "visits")):
            data = dataset.encode() * 1000
            upload = Upload(ROOM, self.digest, dataset, 1,
                            self.manifest.dataset(dataset).schema_digest(), 10,
                            hashlib.sha256(data).hexdigest(), len(data), "ab" * 32, attestation,
                            _now())
            statement = sign_envelope(Upload.KIND, upload.to_dict(), [key.signer])
            path = tmp / f"{dataset}.sealed"
            path.write_bytes(data)
            server.client(key).upload(ROOM, statement, path)
            self.statements[dataset] = statement
        self.bundle = make_bundle(ALICE, self.manifest, self.digest, sequence=1, title="t",
                                  purpose="p", kind="sql", code="SELECT 1",
                                  output=OutputSpec.from_dict({**AGG, "dp": {"epsilon": "1"}}),
                                  inputs=follow("crm", "visits"), recipients=["alice"])
        server.client(ALICE).submit_bundle(ROOM, self.bundle)
        self.approval = make_approval(BOB, self.manifest, self.digest, self.bundle.digest())
        for key in (ALICE, BOB):
            server.client(key).submit_approval(ROOM, make_approval(
                key, self.manifest, self.digest, self.bundle.digest(),
                follow_latest=acks(self.bundle, key, self.manifest)))
        alice = server.client(ALICE)
        self.run_id = str(alice.create_run(ROOM, self.bundle.digest())["run_id"])
        assert alice.wait_run(ROOM, self.run_id, timeout=60)["status"] == "succeeded"


def _now() -> str:
    from datetime import UTC, datetime

    return format_time(datetime.now(UTC))


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Existing, Server]]:
    """(the room on one coordinator, another coordinator where its id was never used)."""
    tmp = tmp_path_factory.mktemp("oracle")
    with_room = Server(tmp / "with")
    without = Server(tmp / "without")
    try:
        Client(without.url, admin_token=ADMIN).provision_worker()
        yield Existing(with_room, tmp), without
    finally:
        with_room.stop()
        without.stop()


def _requests(room: Existing, room_id: str, schema: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """Every operation under ``/v1/rooms/{room_id}`` in the OpenAPI schema, as (method, path,
    body) with the existing room's real digests and run id in the path and real bodies."""
    values = {"digest": room.statements["crm"].digest(), "ref": room.bundle.digest(),
              "run_id": room.run_id, "session_id": "0" * 32, "name": "setup",
              "sender": "alice"}
    bodies: dict[tuple[str, str], Any] = {
        ("post", "/signatures"): room.envelope.to_json(),
        ("post", "/uploads"): room.statements["crm"].to_json(),
        ("put", "/uploads/{digest}/data"): b"crm" * 1000,
        ("post", "/bundles"): room.bundle.to_json(),
        ("post", "/approvals"): room.approval.to_json(),
        ("post", "/revocations"): room.approval.to_json(),
        ("post", "/runs"): b'{"bundle_digest": "' + room.bundle.digest().encode() + b'"}',
        ("post", "/runs/{run_id}/feedback"): b'{"changed_decision": true}',
        ("post", "/previews"): b'{"dataset": "crm", "partner": "bob", "partner_dataset": '
                               b'"visits", "size": 100}',
        ("put", "/previews/{session_id}/messages/{name}"): b"opaque",
        ("post", "/previews/{session_id}/statements"): room.approval.to_json(),
    }
    out = []
    prefix = "/v1/rooms/{room_id}"
    for template, operations in sorted(schema["paths"].items()):
        if not template.startswith(prefix + "/") and template != prefix:
            continue
        tail = template[len(prefix):]
        for method, spec in sorted(operations.items()):
            path = template.replace("{room_id}", room_id)
            for name, value in values.items():
                path = path.replace("{" + name + "}", value)
            query = [f"{p['name']}=1" for p in spec.get("parameters", [])
                     if p["in"] == "query" and p.get("required")]
            if query:
                path += "?" + "&".join(query)
            body = bodies.get((method, tail))
            assert body is not None or method in ("get", "delete"), \
                f"give {method.upper()} {template} a body in this test"
            out.append((method, path, body))
    return out


def _ask(url: str, token: str, method: str, path: str, body: Any) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        headers["Content-Type"] = ("application/octet-stream"
                                   if path.endswith("/data") or "/messages/" in path
                                   else "application/json")
    r = httpx.request(method.upper(), url + path, headers=headers, content=body, timeout=60)
    return r.status_code, r.content


def test_existence_is_no_oracle_on_any_room_route(oracle: tuple[Existing, Server]) -> None:
    room, elsewhere = oracle
    here = room.server
    schema = httpx.get(f"{here.url}/openapi.json").json()
    stranger = {s.url: s.client(EVE).authenticate() for s in (here, elsewhere)}
    checked = 0
    for method, path, body in _requests(room, ROOM, schema):
        exists = _ask(here.url, stranger[here.url], method, path, body)
        never = _ask(elsewhere.url, stranger[elsewhere.url], method, path, body)
        assert exists == never, (method, path, exists, never)
        assert exists[0] == 403, (method, path, exists)
        checked += 1
    assert checked >= 25  # every room route, GET and POST/PUT
    # the same server: the existing id and one never used (bodies that name no room)
    for (method, path, body), (_, other, _) in zip(
            _requests(room, ROOM, schema), _requests(room, MISSING, schema), strict=True):
        if path.endswith("/signatures"):
            continue  # its body names the room: compared across servers above
        assert _ask(here.url, stranger[here.url], method, path, body) == \
            _ask(here.url, stranger[here.url], method, other, body), (method, path)
    # POST /v1/rooms under the taken id, by a stranger: answered as where it is free
    squat = _signed(_manifest(here, ROOM, [EVE, MALLORY]), EVE).to_json()
    first = [_ask(s.url, stranger[s.url], "post", "/v1/rooms", squat) for s in (here, elsewhere)]
    assert first[0] == first[1] and first[0][0] == 201, first
    again = [_ask(s.url, stranger[s.url], "post", f"/v1/rooms/{ROOM}/signatures", squat)
             for s in (here, elsewhere)]
    assert again[0] == again[1] and again[0][0] == 200, again
    # ... and the stranger then sees its own invitation, identically, on every read route
    for method, path, body in _requests(room, ROOM, schema):
        if method == "get":
            assert _ask(here.url, stranger[here.url], method, path, body) == \
                _ask(elsewhere.url, stranger[elsewhere.url], method, path, body), path
    for s in (here, elsewhere):
        assert [i["room_id"] for i in s.client(EVE).invitations()] == [ROOM]
    # the members' room is untouched
    assert here.client(ALICE).room(ROOM)["manifest_digest"] == room.digest
