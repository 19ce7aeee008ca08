"""Match previews through the coordinator's API (in process; the real two-process run is in
``tests/cli/test_match_preview.py``): the library's two-way run over several parts and pieces,
the messages deleted once both statements are in, who may read a session (its two parties
only: not a third party of the room, not an outsider), sizes below the minimum group size
refused with nothing stored, the daily limit per pair of parties, messages and statements held
to the session, a restarted party — and the same run on PostgreSQL."""

from __future__ import annotations

import hashlib
import secrets
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from coordinator import previews as coordinator_previews
from coordinator.storage.models import PreviewMessage, PreviewSession
from sdk.client import Client
from sdk.errors import (
    AuthError,
    ConflictError,
    InputError,
    NotFoundError,
    PrivacyError,
    ResourceError,
    SignatureError,
)
from sdk.party.home import Home
from sdk.party.preview import PreviewResult, list_previews, preview_match
from sdk.party.session import Session
from sdk.party.statements import sign_manifest
from sdk.party.trust import PinnedRoom
from sdk.protocol import psi
from sdk.protocol.keys import PartyKey
from sdk.protocol.matchpreview import make_match_preview
from tests.coordinator.conftest import Env, manifest_for, party

ROOM = "room1"


def _csv(path: Path, ids: range) -> Path:
    path.write_text("uid,x\n" + "".join(
        f"{hashlib.sha256(str(i).encode()).hexdigest().upper()} ,{i % 2}\n" for i in ids))
    return path


def _session(env: Env, key: PartyKey, tmp: Path) -> Session:
    session = Session(home=Home(tmp / f"home-{key.name}"))
    session._key = key
    session._clients["party"] = env.client(key)
    return session


def _both(env: Env, tmp: Path, a_ids: range, b_ids: range, **kw: Any) -> dict[str, Any]:
    room = PinnedRoom(env.manifest_env, env.manifest, env.digest)
    out: dict[str, Any] = {}

    def run(key: PartyKey, dataset: str, partner: str, ids: range) -> None:
        try:
            out[key.name] = preview_match(_session(env, key, tmp), room,
                                          _csv(tmp / f"{key.name}.csv", ids), dataset, partner,
                                          timeout=60, poll=0.02, **kw)
        except Exception as exc:  # reported by the caller
            out[key.name] = exc

    threads = [threading.Thread(target=run, args=(env.alice, "crm", "bob", a_ids)),
               threading.Thread(target=run, args=(env.bob, "visits", "alice", b_ids))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out


def _stored(env: Env) -> tuple[int, int, list[Path]]:
    with env.services.db.read() as s:
        sessions = len(list(s.scalars(select(PreviewSession))))
        messages = len(list(s.scalars(select(PreviewMessage))))
    folder = env.services.settings.data_dir / "previews"
    return sessions, messages, sorted(folder.rglob("*")) if folder.is_dir() else []


def test_two_parties_over_parts_and_pieces(env: Env, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(psi, "PART_ELEMENTS", 128)
    monkeypatch.setattr(coordinator_previews, "MAX_PIECE_BYTES", 2048)
    out = _both(env, tmp_path, range(0, 300), range(100, 500))
    alice, bob = out["alice"], out["bob"]
    assert isinstance(alice, PreviewResult), alice
    assert isinstance(bob, PreviewResult), bob
    a, b = alice.preview, bob.preview
    assert (a.own_size, a.partner_size, a.intersection) == (300, 400, 200)
    assert (b.own_size, b.partner_size, b.intersection) == (400, 300, 200)
    assert a.session == b.session and alice.min_group_size == 5
    sessions, messages, files = _stored(env)
    assert (sessions, messages, files) == (1, 0, [])
    room = PinnedRoom(env.manifest_env, env.manifest, env.digest)
    [record] = list_previews(_session(env, env.bob, tmp_path), room)
    assert record.state == "done" and record.agree is True and record.unverified == 0
    assert {p: s.intersection for p, s in record.statements.items()} == {"alice": 200,
                                                                         "bob": 200}


def _trio(env: Env) -> tuple[str, PartyKey]:
    """A room of alice, carol and bob (crm is alice's, visits bob's; carol has none)."""
    seed = env.services.settings.platform_key_file.read_bytes()
    manifest = manifest_for("trio", [env.alice, env.carol, env.bob], seed)
    signed = sign_manifest(sign_manifest(sign_manifest(manifest, env.alice), env.carol), env.bob)
    env.client(env.alice).submit_manifest(signed)
    return "trio", party("dave")


def test_only_the_two_parties_read_a_session(env: Env) -> None:
    room, dave = _trio(env)
    alice, bob, carol = (env.client(k) for k in (env.alice, env.bob, env.carol))
    sid = alice.open_preview(room, "crm", "bob", "visits", 20)["session_id"]
    bob.open_preview(room, "visits", "alice", "crm", 30)
    alice.put_preview_message(room, sid, "request-0", b"opaque", 1024)
    assert bob.preview_message(room, sid, "alice", "request-0", 100) == b"opaque"
    with pytest.raises(InputError):  # a client never buffers more than a message may have
        bob.preview_message(room, sid, "alice", "request-0", 3)
    for call in (lambda c: c.preview(room, sid),
                 lambda c: c.preview_message(room, sid, "alice", "request-0", 100),
                 lambda c: c.put_preview_message(room, sid, "setup", b"x", 1024),
                 lambda c: c.abort_preview(room, sid)):
        with pytest.raises(NotFoundError, match="no such preview session"):
            call(carol)  # a party of the room, not of the session: as if there were none
        with pytest.raises(AuthError, match="not a party of this room"):
            call(Client("http://testserver", dave, transport=env.tc._transport))
    assert carol.previews(room) == []
    assert [p["session_id"] for p in env.client(admin=True).previews(room)] == [sid]
    with pytest.raises(SignatureError):  # carol owns no dataset to preview
        carol.open_preview(room, "crm", "bob", "visits", 20)


def test_below_the_minimum_and_odd_pairs_store_nothing(env: Env) -> None:
    alice = env.client(env.alice)
    with pytest.raises(PrivacyError, match="below the minimum group size 5"):
        alice.open_preview(ROOM, "crm", "bob", "visits", 4)
    with pytest.raises(SignatureError):
        alice.open_preview(ROOM, "visits", "bob", "crm", 40)
    with pytest.raises(InputError):
        alice.open_preview(ROOM, "crm", "alice", "crm", 40)
    with pytest.raises(InputError):
        alice.open_preview(ROOM, "crm", "bob", "visits", psi.MAX_SET_SIZE + 1)
    assert _stored(env) == (0, 0, [])


def test_a_pair_opens_a_limited_number_of_previews_a_day(make_env: Any) -> None:
    env: Env = make_env(previews_per_pair_per_day=2)
    env.setup_room()
    alice, bob = env.client(env.alice), env.client(env.bob)
    for _ in range(2):
        sid = alice.open_preview(ROOM, "crm", "bob", "visits", 40)["session_id"]
        bob.abort_preview(ROOM, sid)
    with pytest.raises(ResourceError, match="the most allowed"):
        bob.open_preview(ROOM, "visits", "alice", "crm", 40)
    response = env.tc.post(f"/v1/rooms/{ROOM}/previews", json={
        "dataset": "crm", "partner": "bob", "partner_dataset": "visits", "size": 40},
        headers={"Authorization": f"Bearer {alice.authenticate()}"})
    assert response.status_code == 429 and response.json()["error"]["code"] == "E_RESOURCE"


def test_messages_and_statements_are_held_to_the_session(env: Env) -> None:
    alice, bob = env.client(env.alice), env.client(env.bob)
    info = alice.open_preview(ROOM, "crm", "bob", "visits", 40)
    sid = info["session_id"]
    with pytest.raises(ConflictError, match="not joined"):
        alice.put_preview_message(ROOM, sid, "request-0", b"x", 1024)
    assert alice.open_preview(ROOM, "crm", "bob", "visits", 41)["parties"][0]["size"] == 41
    joined = bob.open_preview(ROOM, "visits", "alice", "crm", 50)
    assert joined["session_id"] == sid and joined["state"] == "running"
    unit = int(joined["piece_bytes"])
    for name in ("request-1", "response-1", "setup-0", "reply"):
        with pytest.raises(InputError):
            alice.put_preview_message(ROOM, sid, name, b"x", unit)
    cap = psi.message_cap("request-0", 41, 50)
    with pytest.raises(InputError, match="does not fit"):
        alice.put_preview_message(ROOM, sid, "request-0", bytes(cap + 1), unit)
    alice.put_preview_message(ROOM, sid, "request-0", b"first", unit)
    alice.put_preview_message(ROOM, sid, "request-0", b"first", unit)  # a retry: no-op
    with pytest.raises(ConflictError, match="other bytes"):
        alice.put_preview_message(ROOM, sid, "request-0", b"other", unit)
    with pytest.raises(NotFoundError):
        bob.preview_message(ROOM, sid, "alice", "setup", 1 << 20)
    assert bob.preview(ROOM, sid)["messages"] == {"alice": ["request-0"]}

    def statement(key: PartyKey, **kw: Any) -> Any:
        values: dict[str, Any] = {"session": sid, "dataset": "crm", "partner": "bob",
                                  "partner_dataset": "visits", "own_size": 41,
                                  "partner_size": 50, "intersection": 10, **kw}
        return make_match_preview(key, env.manifest, env.digest, **values)

    for wrong in ({"own_size": 40}, {"partner_size": 49},
                  {"session": secrets.token_hex(16)}):
        with pytest.raises(InputError, match="does not describe this session"):
            alice.submit_preview_statement(ROOM, sid, statement(env.alice, **wrong))
    bobs = statement(env.bob, dataset="visits", partner="alice", partner_dataset="crm",
                     own_size=50, partner_size=41)
    with pytest.raises(AuthError):  # bob's statement, posted by alice
        alice.submit_preview_statement(ROOM, sid, bobs)
    mine = statement(env.alice)
    alice.submit_preview_statement(ROOM, sid, mine)
    alice.submit_preview_statement(ROOM, sid, mine)  # a retry: the same statement again
    with pytest.raises(ConflictError, match="another statement"):
        alice.submit_preview_statement(ROOM, sid, statement(env.alice, intersection=11))
    assert bob.preview(ROOM, sid)["state"] == "running"
    ended = bob.abort_preview(ROOM, sid)
    assert ended["state"] == "aborted" and ended["messages"] == {}
    assert _stored(env)[1:] == (0, [])
    with pytest.raises(ConflictError, match="aborted"):
        alice.put_preview_message(ROOM, sid, "setup", b"late", unit)
    with pytest.raises(ConflictError):
        bob.submit_preview_statement(ROOM, sid, bobs)


def test_a_party_that_starts_over_aborts_its_running_session(env: Env) -> None:
    alice, bob = env.client(env.alice), env.client(env.bob)
    first = alice.open_preview(ROOM, "crm", "bob", "visits", 40)["session_id"]
    bob.open_preview(ROOM, "visits", "alice", "crm", 50)
    alice.put_preview_message(ROOM, first, "request-0", b"x", 1024)
    again = alice.open_preview(ROOM, "crm", "bob", "visits", 40)
    assert again["session_id"] != first and again["state"] == "waiting"
    assert bob.preview(ROOM, first)["state"] == "aborted"
    assert _stored(env)[1:] == (0, [])


@pytest.mark.postgres
def test_two_parties_on_postgres(make_env: Any, postgres_url: str, tmp_path: Path) -> None:
    import psycopg

    name = "t_" + secrets.token_hex(6)
    with psycopg.connect(postgres_url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    env: Env = make_env(database_url=postgres_url.rsplit("/", 1)[0] + "/" + name)
    env.setup_room()
    out = _both(env, tmp_path, range(0, 120), range(60, 200))
    assert [out[p].preview.intersection if isinstance(out[p], PreviewResult) else out[p]
            for p in ("alice", "bob")] == [60, 60]
    assert _stored(env)[1:] == (0, [])
