"""Every request is bounded, checked against a real uvicorn process started the production way
(``sealroom coordinator serve --dev``: uvicorn with httptools, through coordinator.serve's one
server configuration), over loopback only.

Each limit is exceeded once, and where an attacker could make the server hold memory, the
server's own ``/proc/PID/status`` (VmRSS now, VmHWM its peak) is read before and after: the
peak may grow by a bounded amount, far below what the attack offered. Every loop is bounded in
count and in time; the only timing figures are generous timeouts.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from coordinator.storage.models import Base
from coordinator.worker import ensure_platform_key
from sdk.client import Client
from sdk.errors import InputError
from sdk.party.statements import make_approval
from sdk.protocol.dsse import Envelope, sign_envelope
from sdk.protocol.models import Approval, Bundle, Manifest
from tests.coordinator.conftest import (
    ADMIN,
    answers_health,
    free_port,
    party,
    stop_process,
    wait_until,
)
from tests.coordinator.test_server import Room, Server

REPO = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
KIB = 1024
HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
MAX_JSON = 1 * MIB


class Coordinator:
    """``python -m sdk.cli coordinator serve --dev`` (what ``sealroom`` runs) on a free
    loopback port, with limits from ``SEALROOM_*`` variables."""

    def __init__(self, tmp: Path, **limits: object) -> None:
        data = tmp / "data"
        data.mkdir()
        ensure_platform_key(data / "platform.key")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEALROOM_")}
        env.update({f"SEALROOM_{k.upper()}": str(v) for k, v in limits.items()})
        env["SEALROOM_ADMIN_TOKEN"] = ADMIN
        self.log = tmp / "server.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sdk.cli", "coordinator", "serve", "--dev",
                 "--data-dir", str(data), "--port", str(self.port), "--launcher", "process",
                 "--log-level", "warning"],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._up, timeout=60)

    def _up(self) -> bool:
        return answers_health(self.url, self.proc, lambda: self.log.read_text()[-2000:], 2)

    def memory(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) of the server process, in bytes."""
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) * 1024
        return fields["VmRSS"], fields["VmHWM"]

    def reset_peak(self) -> None:
        """Reset VmHWM to the current RSS (``clear_refs`` 5), so a peak is this test's own."""
        try:
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        except OSError:
            pass  # then the peak is the process's lifetime peak: a looser check

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        stop_process(self.proc)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    """Short timeouts and a 1 MiB JSON cap, so that every limit is quick to reach."""
    srv = Coordinator(tmp_path_factory.mktemp("limits"), header_timeout_s=HEADER_TIMEOUT,
                      body_timeout_s=BODY_TIMEOUT, min_body_rate=1024, idle_timeout_s=4,
                      max_json_bytes=MAX_JSON)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    """Few connections and a small buffering budget; long timeouts, so held connections stay."""
    srv = Coordinator(tmp_path_factory.mktemp("capped"), max_connections=20,
                      header_timeout_s=60, body_timeout_s=60, max_json_bytes=MAX_JSON,
                      max_buffered_bytes=2 * MIB)
    yield srv
    srv.stop()


# -- raw HTTP over a socket ------------------------------------------------------------------


def read_response(sock: socket.socket, timeout: float = 10.0) -> tuple[int, bytes] | None:
    """The status and body of the response on ``sock``, or None when the server closed or
    reset the connection without one (a dropped connection)."""
    deadline = time.monotonic() + timeout
    data = b""
    while time.monotonic() < deadline:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            if len(rest) >= length:
                return int(head.split(b" ")[1]), rest[:length]
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return None
        except TimeoutError:
            break
        if not chunk:
            return None
        data += chunk
    raise AssertionError(f"no response and no close within {timeout}s: {data[:200]!r}")


def send_until_refused(sock: socket.socket, pieces: Iterator[bytes]) -> int:
    """Send pieces until the server stops reading (it answered or closed); bytes sent."""
    sent = 0
    for piece in pieces:
        try:
            sock.sendall(piece)
        except OSError:  # reset or broken pipe: the server closed the connection
            break
        sent += len(piece)
        readable, _, _ = select.select([sock], [], [], 0)
        if readable:
            break
    return sent


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """Whether the server closes ``sock`` (EOF or reset) within ``timeout`` (data is read)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
        if not readable:
            return False
        try:
            if not sock.recv(65536):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def error_code(body: bytes) -> str:
    code: str = json.loads(body)["error"]["code"]
    return code


def head(path: str = "/healthz", method: str = "GET", extra: str = "") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}".encode()


# -- headers ---------------------------------------------------------------------------------


def _huge_header(srv: Coordinator) -> tuple[int | None, int]:
    """16 MiB offered in one header value; (status or None when dropped, bytes sent)."""
    with srv.connect() as sock:
        sock.sendall(head() + b"X-Big: ")
        sent = send_until_refused(sock, (b"a" * (256 * KIB) for _ in range(64)))
        response = read_response(sock)
    if response is not None:
        assert error_code(response[1]) == "E_RESOURCE"
    return (None if response is None else response[0]), sent


def _many_headers(srv: Coordinator) -> int | None:
    """5,000 small headers (about 60 KB: under the size cap, over the count cap)."""
    with srv.connect() as sock:
        lines = b"".join(b"X-H-%d: v\r\n" % i for i in range(5000))
        send_until_refused(sock, iter([head() + lines + b"\r\n"]))
        response = read_response(sock)
    return None if response is None else response[0]


def test_huge_or_numerous_headers_get_431_and_memory_stays_bounded(
        server: Coordinator) -> None:
    for _ in range(3):  # warm up: the first refusals allocate what every later one reuses
        _huge_header(server)
        _many_headers(server)
    server.reset_peak()
    rss_before, _ = server.memory()
    offered = 0
    huge, many = [], []
    for i in range(50):
        if i % 2:
            status, _sent = _huge_header(server)
            huge.append(status)
            offered += 16 * MIB
        else:
            many.append(_many_headers(server))
    rss_after, peak = server.memory()
    assert set(many) == {431}, many
    # 431, or dropped: the answer can be lost to the reset of a close with unread bytes
    assert set(huge) <= {431, None}, huge
    # 25 × 16 MiB offered; the server reads at most the cap plus one read per connection
    assert offered == 400 * MIB
    assert peak - rss_before < 48 * MIB, (rss_before, rss_after, peak)
    assert rss_after - rss_before < 32 * MIB, (rss_before, rss_after)
    print(f"\nheaders: RSS {rss_before / MIB:.1f} → {rss_after / MIB:.1f} MiB, "
          f"peak {peak / MIB:.1f} MiB, after 25 × 16 MiB and 25 × 5,000 headers")
    assert server.healthy()


def test_headers_within_the_limits_pass(server: Coordinator) -> None:
    with server.connect() as sock:
        lines = b"".join(b"X-H-%d: %s\r\n" % (i, b"v" * 500) for i in range(90))  # ~46 KB
        sock.sendall(head(extra="Connection: close\r\n") + lines + b"\r\n")
        response = read_response(sock)
    assert response is not None and response[0] == 200


# -- slow and idle clients -------------------------------------------------------------------


def test_slowloris_headers_one_byte_a_second_are_dropped(server: Coordinator) -> None:
    started = time.monotonic()
    with server.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        outcome: tuple[int, bytes] | None | str = "held"
        for byte in (b"X-Slow: " + b"a" * 60):  # at most 68 s, the drop comes after 2 s
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                outcome = None
                break
            readable, _, _ = select.select([sock], [], [], 1.0)
            if readable:
                outcome = read_response(sock)
                break
    elapsed = time.monotonic() - started
    assert outcome != "held", "a client trickling its headers was never dropped"
    if isinstance(outcome, tuple):
        assert outcome[0] == 408 and error_code(outcome[1]) == "E_INPUT"
    assert elapsed < HEADER_TIMEOUT + 20  # generous: dropped by the header timeout


def test_fifty_slow_clients_are_all_dropped_and_hold_little(server: Coordinator) -> None:
    rss_before, _ = server.memory()
    socks = []
    try:
        for _ in range(50):  # each holds 48 KiB of an unfinished head (under the size cap)
            sock = server.connect()
            sock.sendall(head() + b"X-Pad: " + b"p" * (48 * KIB))
            socks.append(sock)
        rss_held, _ = server.memory()
        deadline = time.monotonic() + HEADER_TIMEOUT + 30
        for sock in socks:
            assert closed_by_server(sock, max(0.1, deadline - time.monotonic()))
    finally:
        for sock in socks:
            sock.close()
    assert rss_held - rss_before < 32 * MIB, (rss_before, rss_held)
    print(f"\n50 slow clients: RSS {rss_before / MIB:.1f} → {rss_held / MIB:.1f} MiB held")


def test_idle_connection_without_a_request_is_closed(server: Coordinator) -> None:
    with server.connect() as sock:
        assert closed_by_server(sock, HEADER_TIMEOUT + 20)


def test_slow_body_is_dropped(server: Coordinator) -> None:
    with server.connect() as sock:
        sock.sendall(head("/v1/auth/challenge", "POST",
                          "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"))
        dropped = False
        for _ in range(40):  # one byte every 0.5 s: under the 1 KiB/s the settings ask
            try:
                sock.sendall(b" ")
            except OSError:
                dropped = True
                break
            if closed_by_server(sock, 0.5):
                dropped = True
                break
    assert dropped, "a body sent at 2 bytes/s was never dropped"


def test_keep_alive_pauses_are_governed_by_the_idle_timeout(server: Coordinator) -> None:
    """A pause longer than the header timeout between two requests is fine (the header clock
    starts at a request's first byte); an idle connection is closed after idle_timeout_s."""
    with server.connect() as sock:
        for _ in range(2):
            sock.sendall(head() + b"\r\n")
            response = read_response(sock)
            assert response is not None and response[0] == 200
            time.sleep(HEADER_TIMEOUT + 1)
        assert closed_by_server(sock, 30)


def test_a_client_that_never_reads_its_responses_is_dropped(server: Coordinator) -> None:
    """300 pipelined requests for the OpenAPI schema (about 23 MB of answers) and nothing
    read: once the socket buffers are full, the server waits body_timeout_s, then drops."""
    size = len(httpx.get(f"{server.url}/openapi.json", timeout=10).content)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        sock.settimeout(10)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(head("/openapi.json") + b"\r\n" + (head("/openapi.json") + b"\r\n") * 299)
        time.sleep(BODY_TIMEOUT + 3)  # read nothing meanwhile
        received, ended = 0, False
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(1 << 20)
            except (ConnectionResetError, BrokenPipeError):
                ended = True
                break
            except TimeoutError:
                break
            if not chunk:
                ended = True
                break
            received += len(chunk)
    finally:
        sock.close()
    assert ended and received < 300 * size // 2, (received, 300 * size)
    assert server.healthy()


# -- bodies ----------------------------------------------------------------------------------


def _over_cap(srv: Coordinator, chunked: bool) -> int | None:
    with srv.connect() as sock:
        if chunked:
            sock.sendall(head("/v1/auth/challenge", "POST", "Content-Type: application/json\r\n"
                              "Transfer-Encoding: chunked\r\n\r\n"))
            chunk = b"%x\r\n%s\r\n" % (64 * KIB, b" " * (64 * KIB))
            # the cap and one chunk more; then the answer (at most 1 MiB + 64 KiB sent)
            send_until_refused(sock, (chunk for _ in range(MAX_JSON // (64 * KIB) + 1)))
        else:
            sock.sendall(head("/v1/auth/challenge", "POST", "Content-Type: application/json\r\n"
                              f"Content-Length: {64 * MIB}\r\n\r\n"))
        response = read_response(sock)
    if response is not None:
        assert error_code(response[1]) == "E_RESOURCE"
    return None if response is None else response[0]


def test_over_cap_bodies_get_413_with_or_without_content_length(server: Coordinator) -> None:
    assert _over_cap(server, chunked=False) == 413
    assert _over_cap(server, chunked=True) == 413
    server.reset_peak()
    rss_before, _ = server.memory()
    with ThreadPoolExecutor(max_workers=10) as pool:  # 10 at a time, 40 in all
        statuses = list(pool.map(lambda i: _over_cap(server, chunked=bool(i % 2)), range(40)))
    rss_after, peak = server.memory()
    assert statuses.count(413) >= 36 and set(statuses) <= {413, None}, statuses
    assert peak - rss_before < 64 * MIB, (rss_before, rss_after, peak)
    print(f"\nbodies: RSS {rss_before / MIB:.1f} → {rss_after / MIB:.1f} MiB, "
          f"peak {peak / MIB:.1f} MiB after 20 × 64 MiB declared and 20 chunked over 1 MiB")


def test_bodies_held_at_once_share_one_budget(capped: Coordinator) -> None:
    """Two 1 MiB bodies in flight take the 2 MiB budget: a third waits for nothing, 429."""
    first, second = capped.connect(), capped.connect()
    try:
        for sock in (first, second):
            sock.sendall(head("/v1/auth/challenge", "POST", "Content-Type: application/json\r\n"
                              f"Content-Length: {MAX_JSON}\r\n\r\n") + b" " * (256 * KIB))
        wait_until(lambda: _budget_refuses(capped), timeout=30)
    finally:
        first.close()
        second.close()
    wait_until(lambda: not _budget_refuses(capped), timeout=30)  # freed with the connections


def _budget_refuses(srv: Coordinator) -> bool:
    with srv.connect() as sock:
        sock.sendall(head("/v1/auth/challenge", "POST", "Content-Type: application/json\r\n"
                          f"Content-Length: {MAX_JSON}\r\n\r\n"))
        sock.settimeout(1.0)
        try:
            response = read_response(sock, timeout=1.0)
        except AssertionError:  # no answer yet: the body was accepted for reading
            return False
    if response is not None and response[0] == 429:
        assert error_code(response[1]) == "E_RESOURCE"
        return True
    return False


# -- connections -----------------------------------------------------------------------------


def test_connections_beyond_the_cap_are_dropped_not_held(capped: Coordinator) -> None:
    wait_until(lambda: capped.healthy(), timeout=30)
    rss_before, _ = capped.memory()
    socks = []
    try:
        for _ in range(120):  # each with 32 KiB of an unfinished head
            sock = capped.connect()
            try:
                sock.sendall(head() + b"X-Pad: " + b"p" * (32 * KIB))
            except OSError:
                pass  # dropped before we could send
            socks.append(sock)
        time.sleep(1.0)
        dropped = sum(closed_by_server(s, 0.2) for s in socks)
        rss_held, _ = capped.memory()
        held = len(socks) - dropped
        assert 10 <= held <= 20, (held, dropped)
        assert dropped >= 100
        # while the cap is reached, a new request is not served (dropped, never a 5xx)
        try:
            response = httpx.get(f"{capped.url}/healthz", timeout=5)
            assert response.status_code < 500
        except httpx.HTTPError:
            pass
    finally:
        for sock in socks:
            sock.close()
    assert rss_held - rss_before < 16 * MIB, (rss_before, rss_held)
    print(f"\nconnections: {held} held, {dropped} dropped; RSS {rss_before / MIB:.1f} → "
          f"{rss_held / MIB:.1f} MiB")
    wait_until(capped.healthy, timeout=30)  # and the coordinator serves again


# -- strictness: Content-Type and duplicate keys on every body route --------------------------


def _body_routes(srv: Coordinator) -> list[tuple[str, str, str]]:
    schema = httpx.get(f"{srv.url}/openapi.json", timeout=10).json()
    routes = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content")
            if content:
                concrete = path
                for name in ("room_id", "digest", "run_id", "ref"):
                    concrete = concrete.replace("{" + name + "}", "room1")
                routes.append((method.upper(), concrete, next(iter(content))))
    return routes


def _party_token(srv: Coordinator) -> str:
    return Client(srv.url, party("alice")).authenticate()


def test_every_body_route_checks_content_type(server: Coordinator) -> None:
    routes = _body_routes(server)
    assert len(routes) >= 10
    assert {m for _, _, m in routes} == {"application/json", "application/octet-stream"}
    token = _party_token(server)
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for method, path, media in routes:
            wrong = ["text/plain", "application/x-www-form-urlencoded", "application/json+x",
                     "application/json; charset=latin-1"]
            if media == "application/json":
                wrong.append("application/octet-stream")
            else:
                wrong.append("application/json")
            for auth in ({"Authorization": f"Bearer {token}"}, {}):
                for content_type in [*wrong, None]:
                    headers = dict(auth)
                    if content_type is not None:
                        headers["Content-Type"] = content_type
                    r = http.request(method, path, content=b"{}", headers=headers)
                    needs_auth = path not in ("/v1/auth/challenge", "/v1/auth/token")
                    expected = 401 if (needs_auth and not auth) else 415
                    assert r.status_code == expected, (method, path, content_type, r.text)
                    assert r.json()["error"]["code"] == ("E_AUTH" if expected == 401
                                                         else "E_INPUT")
        # the right type passes this check (whatever the route then says of the body)
        key = party("carol").signer.public_key.hex()
        r = http.post("/v1/auth/challenge", content=json.dumps({"signing_key": key}).encode(),
            headers={"Content-Type": "application/json; charset=utf-8"})
        assert r.status_code == 200, r.text


def test_every_json_body_refuses_duplicate_keys(server: Coordinator) -> None:
    token = _party_token(server)
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for method, path, media in _body_routes(server):
            if media != "application/json":
                continue
            for body in (b'{"a": 1, "a": 2}', b'{"signing_key": "%s", "signing_key": "%s"}'
                         % (b"ab" * 32, b"cd" * 32), b'{"x": NaN}', b'{"x": 9007199254740993}'):
                r = http.request(method, path, content=body, headers={
                    "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
                assert r.status_code == 400, (method, path, body, r.text)
                assert r.json()["error"]["code"] == "E_INPUT"
        r = http.post("/v1/auth/challenge", content=b'{"signing_key": "%s", "signing_key": '
                      b'"%s"}' % (b"ab" * 32, b"cd" * 32),
                      headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and "duplicate key" in r.json()["error"]["message"]


# -- stored fields ---------------------------------------------------------------------------


def test_every_string_column_refuses_a_longer_value() -> None:
    checked = 0
    for mapper in Base.registry.mappers:
        for column in mapper.columns:
            length = getattr(column.type, "length", None)
            if not isinstance(length, int):
                continue
            row = mapper.class_()
            setattr(row, column.key, "x" * length)  # at the cap: fine
            with pytest.raises(InputError, match="longer than"):
                setattr(row, column.key, "x" * (length + 1))
            checked += 1
    assert checked >= 30


def _resigned(envelope: Envelope, kind: str, key: Any, **changes: Any) -> Envelope:
    payload = json.loads(envelope.payload)
    payload.update(changes)
    return sign_envelope(kind, payload, [key.signer])


def _long_party_name(envelope: Envelope, key: Any) -> Envelope:
    payload = json.loads(envelope.payload)
    payload["parties"][0]["name"] = "n" * 65
    return sign_envelope(Manifest.KIND, payload, [key.signer])


def test_oversize_fields_get_4xx_through_the_server(tmp_path: Path) -> None:
    """Names, titles, reasons, notes and keys longer than their caps are refused (4xx) before
    anything is stored, by a real server (coordinator.serve, with the fake worker)."""
    data = tmp_path / "data"
    data.mkdir()
    ensure_platform_key(data / "platform.key")
    srv = Server(data)
    try:
        room = Room(data)
        room.setup(srv.url)
        bundle = room.ready(srv.url, tmp_path)
        alice = Client(srv.url, room.alice)
        token = alice.authenticate()
        auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        with httpx.Client(base_url=srv.url, timeout=30) as http:
            # a bundle title over 200 characters, an approval reason over 2000
            long_title = _resigned(bundle, Bundle.KIND, room.alice, title="t" * 201, sequence=2)
            r = http.post("/v1/rooms/room1/bundles", content=long_title.to_json(), headers=auth)
            assert r.status_code == 400 and r.json()["error"]["code"] == "E_INPUT", r.text
            approval = make_approval(room.alice, room.manifest, room.digest, bundle.digest())
            long_reason = _resigned(approval, Approval.KIND, room.alice, reason="r" * 2001)
            r = http.post("/v1/rooms/room1/approvals", content=long_reason.to_json(),
                          headers=auth)
            assert 400 <= r.status_code < 500, r.text
            # a party name over 64 characters in a manifest
            long_name = _long_party_name(room.env, room.alice)
            r = http.post("/v1/rooms", content=long_name.to_json(), headers=auth)
            assert 400 <= r.status_code < 500, r.text
            # an idempotency key over 200 characters
            r = http.post("/v1/rooms/room1/runs", json={"bundle_digest": bundle.digest()},
                          headers={"Authorization": f"Bearer {token}",
                                   "Idempotency-Key": "k" * 201})
            assert r.status_code == 400, r.text
            # a feedback note over 2000 characters
            run = alice.create_run("room1", bundle.digest())
            assert alice.wait_run("room1", run["run_id"], timeout=60)["status"] == "succeeded"
            r = http.post(f"/v1/rooms/room1/runs/{run['run_id']}/feedback",
                          json={"changed_decision": True, "note": "n" * 2001},
                          headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 400, r.text
            # nothing of it was stored
            titles = [b["title"] for b in alice.bundles("room1")]
            assert titles == ["t"]
    finally:
        srv.stop()
