"""The PSI-cardinality recipe (``sdk.protocol.psi``) and the ``match_preview`` statement:
exact counts both ways over several parts, the sizes and caps every message is held to before
the library reads it, one opaque error for every malformed message (and never a crash of the
library: a setup with ``hash_range`` 0 would abort the process), signatures, domain
separation, and the minimum group size."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from typing import Any

import private_set_intersection.python as lib  # noqa: E402 - the party extra; never skipped
import pytest

from sdk.errors import InputError, PrivacyError, SignatureError
from sdk.protocol import psi
from sdk.protocol.dsse import sign_envelope
from sdk.protocol.keys import PartyKey
from sdk.protocol.matchpreview import (
    MatchPreview,
    make_match_preview,
    pair_datasets,
    preview_min_group_size,
    verify_match_preview,
)
from sdk.protocol.models import Manifest
from sdk.protocol.psi import PsiContext, PsiError, PsiParty, encode_ids, part_sizes

ALICE = PartyKey.from_seeds("alice", b"a" * 32, b"A" * 32)
BOB = PartyKey.from_seeds("bob", b"b" * 32, b"B" * 32)
MALLORY = PartyKey.from_seeds("bob", b"m" * 32, b"M" * 32)  # claims to be bob
CTX = PsiContext("room1", "ab" * 32, "0123456789abcdef" * 2, "sha256")


def _ids(start: int, stop: int) -> list[str]:
    return [hashlib.sha256(str(i).encode()).hexdigest() for i in range(start, stop)]


def _pair(a_ids: list[str], b_ids: list[str], ctx: PsiContext = CTX) -> tuple[PsiParty, PsiParty]:
    a = PsiParty(ctx, "alice", ALICE.signer, "bob", BOB.signer.public_key, encode_ids(ctx, a_ids))
    b = PsiParty(ctx, "bob", BOB.signer, "alice", ALICE.signer.public_key, encode_ids(ctx, b_ids))
    return a, b


def _count(client: PsiParty, server: PsiParty) -> int:
    """One direction, as sdk.party.preview runs it (requests, answers, setup, counts)."""
    requests = [client.request(i) for i in range(len(part_sizes(client.size)))]
    answered = [server.answer(i, f, client.size) for i, f in enumerate(requests)]
    responses = server.responses(answered, client.size)
    setup = client.read_setup(server.setup(client.size), server.size)
    return sum(client.count(setup, i, f) for i, f in enumerate(responses))


@pytest.fixture()
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(psi, "PART_ELEMENTS", 64)


def test_counts_are_exact_both_ways_over_several_parts(small_parts: None) -> None:
    a_ids, b_ids = _ids(0, 300) + _ids(0, 20), _ids(200, 450)  # alice repeats 20 of hers
    a, b = _pair(a_ids, b_ids)
    assert (a.size, b.size) == (300, 250)  # distinct ids only
    assert len(part_sizes(a.size)) == 5 and part_sizes(a.size)[-1] == 300 - 4 * 64
    assert _count(a, b) == _count(b, a) == 100


def test_the_responses_are_cut_independently_of_the_request(small_parts: None) -> None:
    """The server sorts every answered element together before cutting the response: the
    per-part counts the client sees are of random subsets, not of its own parts."""
    a, b = _pair(_ids(0, 256), _ids(0, 64))  # b holds exactly alice's first ids
    requests = [a.request(i) for i in range(4)]
    responses = b.responses([b.answer(i, f, 256) for i, f in enumerate(requests)], 256)
    setup = a.read_setup(b.setup(256), 64)
    counts = [a.count(setup, i, f) for i, f in enumerate(responses)]
    assert sum(counts) == 64 and max(counts) < 64  # never "all in the first part"


def test_expected_hash_range_is_the_librarys(small_parts: None) -> None:
    for n_client, n_server in ((1, 1), (1, 2), (7, 30), (30, 7), (100_000, 3), (5, 2000)):
        server = lib.server.CreateWithNewKey(False)
        fpr = psi.false_positive_rate(n_client, n_server)
        setup = server.CreateSetupMessage(fpr, n_client, [b"x%d" % i for i in range(n_server)],
                                          lib.DataStructure.GCS)
        assert setup.gcs.hash_range == psi.expected_hash_range(n_client, n_server)
        target = psi.hash_range_target(n_server)  # no int64 overflow, no Golomb underflow
        assert abs(setup.gcs.hash_range - target) <= target >> 40
        assert target <= 2**60 and target <= n_server * 2**50
    # 1M x 1M: one false positive expected in about a million previews
    assert psi.false_positive_rate(10**6, 10**6) < 1e-6


def test_sizes_names_and_caps() -> None:
    assert part_sizes(0) == [] and part_sizes(1) == [1]
    assert part_sizes(psi.PART_ELEMENTS + 1) == [psi.PART_ELEMENTS, 1]
    names = psi.message_names(100_000, 10)
    assert names == ["request-0", "request-1", "setup", "response-0"]
    assert psi.message_cap("request-1", 100_000, 10) < psi.message_cap("request-0", 100_000, 10)
    for bad in ("request-2", "response-1", "setup-0", "request-01", "other", "request--1"):
        with pytest.raises(InputError):
            psi.message_cap(bad, 100_000, 10)
    # the 1M case: every request part and the setup fit the 16 MiB body cap
    assert psi.message_cap("request-0", 10**6, 10**6) < 4 * 2**20
    assert psi.message_cap("setup", 10**6, 10**6) < 16 * 2**20


def test_min_group_size_and_set_caps() -> None:
    assert psi.check_set_size(50, 50, "your") == 50
    with pytest.raises(PrivacyError, match="below the minimum group size 50"):
        psi.check_set_size(49, 50, "your")
    with pytest.raises(InputError):
        psi.check_set_size(psi.MAX_SET_SIZE + 1, 1, "your")


def test_elements_are_domain_separated() -> None:
    ids = _ids(0, 50)
    base = set(encode_ids(CTX, ids))
    assert len(base) == 50 and all(len(e) == 32 for e in base)
    for other in (replace(CTX, room_id="room2"), replace(CTX, manifest_digest="cd" * 32),
                  replace(CTX, session="f" * 32), replace(CTX, id_kind="email")):
        assert not base & set(encode_ids(other, ids))
    # the prefix is injective: a room id cannot swallow the next field
    assert PsiContext("a", "b", "c", "d").prefix() != PsiContext("a\x00b", "", "c", "d").prefix()


def test_a_message_of_another_session_matches_nothing_and_is_refused() -> None:
    a, _ = _pair(_ids(0, 60), _ids(0, 60))
    _, b_other = _pair(_ids(0, 60), _ids(0, 60), replace(CTX, session="e" * 32))
    with pytest.raises(PsiError):
        b_other.answer(0, a.request(0), 60)  # the header names another session


def _frames(a: PsiParty, b: PsiParty) -> dict[str, bytes]:
    request = a.request(0)
    return {"request": request, "setup": b.setup(a.size),
            "response": b.responses([b.answer(0, request, a.size)], a.size)[0]}


def test_every_malformed_message_is_one_opaque_error() -> None:
    a, b = _pair(_ids(0, 60), _ids(30, 100))
    good = _frames(a, b)
    setup = a.read_setup(good["setup"], b.size)

    def reads(kind: str, frame: bytes) -> Any:
        if kind == "request":
            return b.answer(0, frame, a.size)
        if kind == "setup":
            return a.read_setup(frame, b.size)
        return a.count(setup, 0, frame)

    for kind, frame in good.items():
        reads(kind, frame)  # the good ones pass
        head = int.from_bytes(frame[8:12], "big")
        bad = {
            "truncated": frame[:-1],
            "empty": b"",
            "magic": b"SRPSI02\n" + frame[8:],
            "flipped body byte": frame[:-1] + bytes([frame[-1] ^ 1]),
            "extra byte": frame + b"\x00",
            "header length beyond": frame[:8] + (len(frame)).to_bytes(4, "big") + frame[12:],
            "huge header length": frame[:8] + (1 << 31).to_bytes(4, "big") + frame[12:],
            "garbage header": frame[:12] + os.urandom(head) + frame[12 + head:],
            "over the cap": frame + bytes(psi.message_cap("setup", 100, 100) * 200),
        }
        for why, data in bad.items():
            with pytest.raises(PsiError, match=f"malformed or unexpected {kind} message"):
                reads(kind, data)
            assert why
    # one kind of the partner's passed off as another
    with pytest.raises(PsiError):
        a.read_setup(good["response"], b.size)
    with pytest.raises(PsiError):
        a.count(setup, 0, good["setup"])
    with pytest.raises(PsiError):
        b.answer(1, good["request"], a.size)  # another part
    # one's own message handed back to it: not signed by the partner
    with pytest.raises(SignatureError):
        b.answer(0, good["response"], a.size)
    # the right frame with the wrong declared sizes
    with pytest.raises(PsiError):
        b.answer(0, good["request"], a.size + 1)
    with pytest.raises(PsiError):
        a.read_setup(good["setup"], b.size - 1)


def _signed(body: bytes, kind: str, count: int, total: int, signer: PartyKey = BOB) -> bytes:
    return psi._frame(CTX, signer.signer, signer.name, kind, 0, 1, count, total, body)


def test_bodies_the_sender_signed_are_still_checked() -> None:
    """A partner that signs a bad body (malicious, or buggy) gets the same opaque error, and
    the library never sees what would crash it."""
    a, b = _pair(_ids(0, 60), _ids(30, 100))
    setup = a.read_setup(b.setup(60), 70)
    req = lib.Request.FromString(a.request(0)[12 + int.from_bytes(a.request(0)[8:12], "big"):])

    def response(elements: list[bytes]) -> bytes:
        message = lib.Response()
        message.encrypted_elements.extend(elements)
        return message.SerializeToString()

    points = list(req.encrypted_elements)
    bad_responses = {
        "garbage": os.urandom(300),
        "one short": response(points[:-1]),
        "one more": response([*points, points[0]]),
        "short element": response([p[:32] for p in points]),
        "not a point encoding": response([b"\x04" + p[1:] for p in points]),
        "not on the curve": response([b"\x02" + b"\xff" * 32] * 60),
    }
    for why, body in bad_responses.items():
        frame = _signed(body, "response", 60, 60)
        with pytest.raises(PsiError):
            a.count(setup, 0, frame)
        assert why

    def setup_body(**gcs: Any) -> bytes:
        message = lib.ServerSetup()
        message.gcs.div = gcs.get("div", 40)
        message.gcs.hash_range = gcs.get("hash_range", psi.expected_hash_range(60, 70))
        message.gcs.bits = gcs.get("bits", b"\x01" * 64)
        return message.SerializeToString()

    raw = lib.ServerSetup()
    raw.raw.encrypted_elements.append(points[0])
    bad_setups = {
        "hash_range 0 (the library would abort the process)": setup_body(hash_range=0),
        "negative hash_range": setup_body(hash_range=-5),
        "another hash_range": setup_body(hash_range=2**40),
        "div beyond 62": setup_body(div=63),
        "negative div": setup_body(div=-1),
        "bits beyond the cap": setup_body(bits=b"\x01" * (9 * 70 + 65)),
        "a raw set instead of a GCS": raw.SerializeToString(),
        "garbage": os.urandom(100),
    }
    for why, body in bad_setups.items():
        with pytest.raises(PsiError):
            a.read_setup(_signed(body, "setup", 70, 70), 70)
        assert why
    # a crafted but well-shaped setup is read without a crash (the bits are padded)
    odd = a.read_setup(_signed(setup_body(bits=b"\x00" * 63 + b"\x80", div=40), "setup", 70, 70),
                       70)
    answered = b.responses([b.answer(0, a.request(0), 60)], 60)[0]
    assert 0 <= a.count(odd, 0, answered) <= 60

    message = lib.Request()
    message.reveal_intersection = True
    message.encrypted_elements.extend(points)
    with pytest.raises(PsiError):  # a client asking to learn the intersection itself
        b.answer(0, _signed(message.SerializeToString(), "request", 60, 60, signer=ALICE), 60)


def test_a_message_not_signed_by_the_partner_is_a_signature_error() -> None:
    a, b = _pair(_ids(0, 60), _ids(30, 100))
    forged = PsiParty(CTX, "bob", MALLORY.signer, "alice", ALICE.signer.public_key,
                      encode_ids(CTX, _ids(30, 100)))
    with pytest.raises(SignatureError, match="not signed by bob"):
        a.read_setup(forged.setup(60), 70)
    with pytest.raises(SignatureError):
        a.request_size(forged.request(0))
    assert a.request_size(b.request(0)) == 70


# -- the statement -----------------------------------------------------------------------------


def _manifest() -> Manifest:
    def party(k: PartyKey) -> dict[str, Any]:
        return {**k.identity.to_dict(), "roles": ["data_owner", "analyst", "recipient"]}

    def dataset(name: str, owner: str, kind: str, minimum: int) -> dict[str, Any]:
        return {"name": name, "owner": owner, "schema": [{"name": "uid", "type": "string"}],
                "id_column": "uid", "id_kind": kind, "min_group_size": minimum,
                "epsilon_budget": "1"}

    return Manifest.from_dict({
        "room_id": "room1", "version": 1, "parties": [party(ALICE), party(BOB)],
        "datasets": [dataset("crm", "alice", "sha256", 20), dataset("visits", "bob", "sha256", 30),
                     dataset("phones", "bob", "phone", 5)],
        "workers": {"measurements": [], "providers": ["simulated"],
                    "platform_keys": [ALICE.signer.public_key.hex()]},
        "policies": {"min_group_size": 10, "max_runs": 1}, "expires": "2099-01-01T00:00:00Z"})


def test_statements_verify_agree_and_refuse_what_they_should() -> None:
    manifest, digest = _manifest(), "ab" * 32
    assert preview_min_group_size(manifest, "crm", "visits") == 30
    kw: dict[str, Any] = {"session": CTX.session, "intersection": 40}
    mine = make_match_preview(ALICE, manifest, digest, dataset="crm", partner="bob",
                              partner_dataset="visits", own_size=60, partner_size=70, **kw)
    theirs = make_match_preview(BOB, manifest, digest, dataset="visits", partner="alice",
                                partner_dataset="crm", own_size=70, partner_size=60, **kw)
    a, b = (verify_match_preview(e, manifest, digest) for e in (mine, theirs))
    assert a.agrees_with(b) and b.agrees_with(a)
    assert not a.agrees_with(replace(b, intersection=41))
    assert not a.agrees_with(replace(b, own_size=71))
    with pytest.raises(InputError):
        verify_match_preview(mine, manifest, "cd" * 32)  # another manifest
    forged = sign_envelope(MatchPreview.KIND, a.to_dict(), [BOB.signer])  # bob signs alice's
    with pytest.raises(SignatureError):
        verify_match_preview(forged, manifest, digest)
    payload = a.to_dict()
    for change in ({"intersection": 61}, {"partner": "alice"}, {"extra": 1}, {"own_size": 0},
                   {"session": "XYZ"}, {"intersection": -1}):
        with pytest.raises(InputError):
            MatchPreview.from_dict({**payload, **change})
    with pytest.raises(InputError, match="no identifier of one kind"):
        pair_datasets(manifest, "alice", "crm", "bob", "phones")
    with pytest.raises(SignatureError):
        pair_datasets(manifest, "alice", "visits", "bob", "crm")  # not alice's dataset
    with pytest.raises(InputError):
        pair_datasets(manifest, "alice", "crm", "alice", "crm")
