"""Logins bound to one configured origin, bounded challenges, logout and low-order keys
(issue 14), against real ``python -m coordinator.serve`` / ``sealroom coordinator serve``
processes over HTTP.

* ``Host: evil.example`` (and ``X-Forwarded-*``) do not change the audience; a signature made
  for another origin is refused; a 30,000-byte ``Host`` changes and stores nothing;
* without a public origin ``serve`` refuses to start (one ``E_CONFIG`` line) unless ``--dev``;
* challenges are rate-limited per key and per address (429, ``Retry-After``) and capped per key;
* ``POST /v1/auth/logout`` revokes the token, and ``Client.close()`` calls it;
* the forged low-order login of the issue is refused, and so is a manifest with such a key;
* the SDK refuses to sign for an audience other than the origin it was given.
"""

from __future__ import annotations

import base64
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from coordinator.app import create_app
from coordinator.settings import DEV_ORIGIN, Settings
from sdk.client import Client
from sdk.errors import AuthError, ConfigError, InputError, ResourceError
from sdk.protocol.dsse import sign_envelope
from sdk.protocol.keys import PartyKey
from sdk.protocol.login import auth_message, public_origin
from sdk.protocol.models import Manifest
from tests.coordinator.conftest import (
    ADMIN,
    answers_health,
    free_port,
    manifest_for,
    party,
    stop_process,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]
IDENTITY_POINT = "01" + "00" * 31  # the Ed25519 identity, a small-order point
SMALL_ORDER = [
    IDENTITY_POINT,
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p: non-canonical
]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALROOM_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env.update(SEALROOM_ADMIN_TOKEN=ADMIN, SEALROOM_LAUNCHER="process", **extra)
    return env


class Coordinator:
    """``python -m coordinator.serve`` (or ``sealroom coordinator serve`` with ``cli``) on a
    free loopback port, with ``args`` (``{url}`` stands for its own ``http://127.0.0.1:PORT``)
    and ``SEALROOM_*`` variables ``env`` (likewise, and ``{port}``)."""

    def __init__(self, data: Path, *args: str, cli: bool = False, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = data
        command = ["-m", "sdk.cli", "coordinator", "serve"] if cli else ["-m", "coordinator.serve"]
        self.log = data.parent / f"coordinator-{self.port}.log"
        args = tuple(a.replace("{url}", self.url) for a in args)
        env = {k: v.replace("{url}", self.url).replace("{port}", str(self.port))
               for k, v in env.items()}
        with open(self.log, "wb") as sink:
            self.proc = subprocess.Popen(
                [sys.executable, *command, "--data-dir", str(data), "--port", str(self.port),
                 "--log-level", "warning", *args],
                cwd=REPO, env=_env(**env), stdout=sink, stderr=subprocess.STDOUT)
        try:
            wait_until(self._up, timeout=60)
        except BaseException:
            self.stop()
            raise

    def _up(self) -> bool:
        return answers_health(self.url, self.proc, lambda: self.log.read_text(errors="replace"))

    def stop(self) -> None:
        stop_process(self.proc, timeout=20)

    def challenges(self) -> list[tuple[str, str]]:
        """(signing_key, audience) of every stored challenge."""
        with sqlite3.connect(self.data / "sealroom.db") as db:
            return [(str(k), str(a)) for k, a in
                    db.execute("SELECT signing_key, audience FROM auth_challenges")]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    """A coordinator whose public origin is its loopback address (rate limits out of the way)."""
    c = Coordinator(tmp_path_factory.mktemp("origin") / "data", "--public-origin", "{url}",
                    SEALROOM_CHALLENGE_RATE_PER_KEY="1000",
                    SEALROOM_CHALLENGE_RATE_PER_ADDRESS="1000")
    try:
        yield c
    finally:
        c.stop()


def _challenge(url: str, key: str, **headers: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/auth/challenge", json={"signing_key": key}, headers=headers,
                      timeout=10)


def _token(url: str, key: PartyKey, nonce: str, audience: str) -> httpx.Response:
    signature = key.signer.sign(auth_message(bytes.fromhex(nonce), audience))
    return httpx.post(f"{url}/v1/auth/token", timeout=10, json={
        "signing_key": key.signer.public_key.hex(), "nonce": nonce,
        "signature": base64.b64encode(signature).decode()})


def _error(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


# -- one configured origin ----------------------------------------------------------------------


def test_host_and_forwarded_headers_do_not_change_the_audience(server: Coordinator) -> None:
    alice = PartyKey.generate("alice")
    key = alice.signer.public_key.hex()
    for headers in ({"Host": "evil.example"},
                    {"Host": "evil.example", "X-Forwarded-Proto": "https",
                     "X-Forwarded-Host": "evil.example", "Forwarded": "host=evil.example"}):
        got = _challenge(server.url, key, **headers)
        assert got.status_code == 200, got.text
        assert got.json()["audience"] == server.url
    # the attack: a signature A made for https://evil.example, traded here, is refused
    nonce = _challenge(server.url, key, Host="evil.example").json()["nonce"]
    refused = _token(server.url, alice, nonce, "https://evil.example")
    assert refused.status_code == 401 and _error(refused) == "E_AUTH"
    nonce = _challenge(server.url, key).json()["nonce"]
    assert _token(server.url, alice, nonce, server.url).status_code == 200


def test_a_30000_byte_host_changes_and_stores_nothing(server: Coordinator) -> None:
    key = PartyKey.generate("hosty").signer.public_key.hex()
    before = server.challenges()
    got = _challenge(server.url, key, Host="h" * 30_000 + ".example")
    assert got.status_code < 500, got.text
    if got.status_code == 200:  # accepted under the header cap: the audience is still ours
        assert got.json()["audience"] == server.url
    stored = server.challenges()
    assert all(audience == server.url for _, audience in stored)
    assert all(len(k) == 64 for k, _ in stored)
    assert len(stored) <= len(before) + 1


def test_serve_refuses_to_start_without_a_public_origin(tmp_path: Path) -> None:
    for command in (["-m", "sdk.cli", "coordinator", "serve"], ["-m", "coordinator.serve"]):
        for extra in ([], ["--public-origin", "ftp://coordinator.example"],
                      ["--public-origin", "https://coordinator.example/path"],
                      ["--public-origin", "https://" + "a" * 400 + ".example"]):
            proc = subprocess.run(
                [sys.executable, *command, "--data-dir", str(tmp_path / "d"), "--port",
                 str(free_port()), "--launcher", "process", *extra],
                cwd=REPO, env=_env(), capture_output=True, text=True, timeout=60, check=False)
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            assert proc.returncode == ConfigError.exit_code, (command, extra, proc.stderr)
            assert len(lines) == 1 and lines[0].startswith("error: E_CONFIG: "), proc.stderr
            assert "Traceback" not in proc.stderr


def test_the_deprecated_audience_variable_is_read_as_the_origin(tmp_path: Path) -> None:
    c = Coordinator(tmp_path / "d", cli=True, SEALROOM_AUDIENCE="HTTP://127.0.0.1:{port}/")
    try:
        key = PartyKey.generate("a").signer.public_key.hex()
        assert _challenge(c.url, key).json()["audience"] == c.url
    finally:
        c.stop()


@pytest.mark.parametrize("cli", [True, False])
def test_dev_uses_the_bound_address_never_a_header(tmp_path: Path, cli: bool) -> None:
    c = Coordinator(tmp_path / "d", "--dev", cli=cli)
    try:
        alice = PartyKey.generate("alice")
        got = _challenge(c.url, alice.signer.public_key.hex(), Host="evil.example")
        assert got.json()["audience"] == c.url
        with Client(c.url, alice) as client:
            assert client.rooms() == []
    finally:
        c.stop()


def test_create_app_refuses_settings_without_an_origin(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="public origin"):
        create_app(Settings(data_dir=tmp_path / "d", launcher="process"))
    dev = Settings(data_dir=tmp_path / "d", launcher="process", dev=True)
    assert dev.origin == DEV_ORIGIN
    create_app(dev)
    for bad in ("coordinator.example", "https://", "https://user@c.example",
                "https://c.example?x=1", "https://c.example#f", "https://c.example:0",
                "https://c.example:99999", "https://c_example", "https://c.example/ x",
                "https://" + "a" * 400):
        with pytest.raises(ConfigError):
            Settings(data_dir=tmp_path / "d", public_origin=bad)
    assert Settings(public_origin="HTTPS://C.Example:443/").origin == "https://c.example"
    assert Settings(public_origin="http://[::1]:8700").origin == "http://[::1]:8700"


def test_origins_normalise_the_same_on_both_sides() -> None:
    assert public_origin("http://127.0.0.1:8700/") == "http://127.0.0.1:8700"
    assert public_origin("https://c.example:8443") == "https://c.example:8443"
    assert public_origin("http://c.example:80") == "http://c.example"
    with pytest.raises(InputError):
        public_origin("https://c.example/v1")


# -- the SDK signs only for its own origin ------------------------------------------------------


class Recording(httpx.HTTPTransport):
    """A real transport that remembers the paths it sent."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return super().handle_request(request)


def test_the_sdk_refuses_to_sign_a_mismatched_audience(server: Coordinator) -> None:
    alice = PartyKey.generate("alice")
    # the same server under another name: its audience is not the origin this client was given
    transport = Recording()
    other = f"http://localhost:{server.port}"
    with Client(other, alice, transport=transport) as client, \
            pytest.raises(AuthError, match="refusing to sign"):
        client.rooms()
    assert transport.paths == ["/v1/auth/challenge"]  # nothing was signed or sent
    # a coordinator that names a foreign audience (a malicious one relaying another's login)
    signed: list[bytes] = []

    def hostile(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/auth/challenge":
            return httpx.Response(200, json={"nonce": "00" * 32, "expires_at": "x",
                                             "audience": "https://honest.example"})
        signed.append(request.content)
        return httpx.Response(200, json={"token": "t", "token_type": "bearer"})

    with Client("https://hostile.example", alice, transport=httpx.MockTransport(hostile)) as c, \
            pytest.raises(AuthError, match="honest.example"):
        c.authenticate()
    assert signed == []
    # and with the URL it was given, it logs in
    with Client(server.url + "/", alice) as client:
        assert client.rooms() == []


# -- challenge bounds -----------------------------------------------------------------------------


def test_challenge_keys_are_validated(server: Coordinator) -> None:
    for bad in ("AB" * 32, "ab" * 31, "zz" * 32, "ab" * 32 + "\n", "ab" * 33, ""):
        got = _challenge(server.url, bad)
        assert got.status_code == 400 and _error(got) == "E_INPUT", (bad, got.text)


def test_outstanding_challenges_per_key_are_capped(server: Coordinator) -> None:
    alice = PartyKey.generate("alice")
    key = alice.signer.public_key.hex()
    nonces = [_challenge(server.url, key).json()["nonce"] for _ in range(6)]
    assert sum(1 for k, _ in server.challenges() if k == key) == 4  # the default cap
    first = _token(server.url, alice, nonces[0], server.url)
    assert first.status_code == 401  # purged
    assert _token(server.url, alice, nonces[-1], server.url).status_code == 200


def test_challenges_are_rate_limited_per_key_and_per_address(tmp_path: Path) -> None:
    c = Coordinator(tmp_path / "d", "--dev", SEALROOM_CHALLENGE_RATE_PER_KEY="3",
                    SEALROOM_CHALLENGE_RATE_PER_ADDRESS="8", SEALROOM_MAX_CHALLENGES="10")
    try:
        alice = PartyKey.generate("alice").signer.public_key.hex()
        assert [_challenge(c.url, alice).status_code for _ in range(3)] == [200] * 3
        limited = _challenge(c.url, alice)
        assert limited.status_code == 429 and _error(limited) == "E_RESOURCE"
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert "signing key" in limited.json()["error"]["message"]
        # other keys from the same address: 5 more (8 in all; a refused one spends nothing),
        # then the address is limited for every key (a token comes back every 7.5 s)
        codes = [_challenge(c.url, PartyKey.generate("k").signer.public_key.hex()).status_code
                 for _ in range(8)]
        assert codes[:5] == [200] * 5 and 429 in codes[5:], codes
        limited = _challenge(c.url, PartyKey.generate("k").signer.public_key.hex())
        assert limited.status_code == 429 and "address" in limited.json()["error"]["message"]
        assert int(limited.headers["Retry-After"]) >= 1
        # the SDK reports it as a typed resource error
        with Client(c.url, PartyKey.generate("bob")) as client, pytest.raises(ResourceError):
            client.rooms()
        # behind the loopback proxy (X-Forwarded-For from 127.0.0.1), each client has its own
        # allowance; and the table keeps at most SEALROOM_MAX_CHALLENGES, the newest
        keys = [PartyKey.generate("k") for _ in range(5)]
        nonces = []
        for i, key in enumerate(keys):
            fresh = _challenge(c.url, key.signer.public_key.hex(),
                               **{"X-Forwarded-For": f"203.0.113.{i + 1}"})
            assert fresh.status_code == 200, fresh.text
            nonces.append(fresh.json()["nonce"])
        assert len(c.challenges()) == 10
        assert _token(c.url, keys[-1], nonces[-1], c.url).status_code == 200
    finally:
        c.stop()


# -- logout -------------------------------------------------------------------------------------


def test_logout_revokes_the_token(server: Coordinator) -> None:
    alice = PartyKey.generate("alice")
    client = Client(server.url, alice)
    token = client.authenticate()
    bearer = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{server.url}/v1/rooms", headers=bearer, timeout=10).status_code == 200
    out = httpx.post(f"{server.url}/v1/auth/logout", headers=bearer, timeout=10)
    assert out.status_code == 204
    after = httpx.get(f"{server.url}/v1/rooms", headers=bearer, timeout=10)
    assert after.status_code == 401 and _error(after) == "E_AUTH"
    again = httpx.post(f"{server.url}/v1/auth/logout", headers=bearer, timeout=10)
    assert again.status_code == 401
    # the client logs in again by itself, and close() revokes what it holds
    assert client.rooms() == []
    held = client._token
    assert held is not None and held != token
    client.close()
    gone = httpx.get(f"{server.url}/v1/rooms", headers={"Authorization": f"Bearer {held}"},
                     timeout=10)
    assert gone.status_code == 401
    # the admin token is configuration: it cannot be revoked
    admin = httpx.post(f"{server.url}/v1/auth/logout", timeout=10,
                       headers={"Authorization": f"Bearer {ADMIN}"})
    assert admin.status_code == 400 and _error(admin) == "E_INPUT"
    assert httpx.post(f"{server.url}/v1/auth/logout", timeout=10).status_code == 401


# -- low-order keys ---------------------------------------------------------------------------------


def test_the_forged_low_order_login_is_refused(server: Coordinator) -> None:
    for key in SMALL_ORDER:
        got = _challenge(server.url, key)
        assert got.status_code == 400 and _error(got) == "E_INPUT", (key, got.text)
        assert "Ed25519" in got.json()["error"]["message"]
    # the forgery, straight to the token exchange: R = identity, S = 0
    forged = bytes.fromhex(IDENTITY_POINT) + bytes(32)
    alice = PartyKey.generate("alice")
    nonce = _challenge(server.url, alice.signer.public_key.hex()).json()["nonce"]
    got = httpx.post(f"{server.url}/v1/auth/token", timeout=10, json={
        "signing_key": IDENTITY_POINT, "nonce": nonce,
        "signature": base64.b64encode(forged).decode()})
    assert got.status_code == 400 and _error(got) == "E_INPUT"
    assert all(k != IDENTITY_POINT for k, _ in server.challenges())


def test_a_manifest_listing_a_low_order_key_is_refused(server: Coordinator) -> None:
    alice, bob = party("alice"), party("bob")
    good = manifest_for("weakroom", [alice, bob], b"\x07" * 32).to_dict()
    weak: dict[str, Any] = {**good, "parties": [dict(p) for p in good["parties"]]}
    weak["parties"][1]["signing_key"] = IDENTITY_POINT
    with pytest.raises(InputError):
        Manifest.from_dict(weak)
    envelope = sign_envelope(Manifest.KIND, weak, [alice.signer])
    with Client(server.url, alice) as client, pytest.raises(InputError, match="signing_key"):
        client.submit_manifest(envelope)
    weak["parties"][1] = {**good["parties"][1], "encryption_key": "00" * 32}
    with Client(server.url, alice) as client, pytest.raises(InputError, match="encryption_key"):
        client.submit_manifest(sign_envelope(Manifest.KIND, weak, [alice.signer]))


def test_rate_limit_state_stays_bounded() -> None:
    from coordinator.auth import TokenBuckets, address_key

    buckets = TokenBuckets(per_minute=2, max_names=100)
    for i in range(10_000):
        assert buckets.wait(f"k{i}", 0.0) == 0.0
        buckets.take(f"k{i}", 0.0)
    assert len(buckets) == 100
    buckets.take("k", 0.0)
    buckets.take("k", 0.0)
    assert buckets.wait("k", 0.0) == pytest.approx(30.0)
    assert buckets.wait("k", 30.0) == 0.0
    assert address_key("2001:db8::1") == address_key("2001:db8::ffff") == "2001:db8::/64"
    assert address_key("2001:db8:0:1::1") != address_key("2001:db8::1")
    assert address_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert address_key("x" * 1000) == "x" * 64
    assert address_key(None) == "-"
