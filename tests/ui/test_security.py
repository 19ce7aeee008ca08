"""What ``sealroom ui`` refuses, tested with a plain HTTP client against the running server
(the publisher's ``sealroom ui --no-browser`` child process, over the real room): a request
without the token or its cookie, a foreign Host (DNS rebinding), a POST without the CSRF token
or with another, a request from another origin or site, methods other than GET and POST, an
oversized body, a confirmed digest that is not the bundle's. After every refused POST the
coordinator still holds no statement of the publisher for that bundle: nothing was signed.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sdk.party.home import Home
from sdk.party.session import Session
from sdk.party.ui.security import CONTENT_SECURITY_POLICY
from tests.ui.conftest import ROOM, UIProcess, UIRoom, start_ui, stop_ui


@pytest.fixture(scope="module")
def ui(ui_room: UIRoom) -> Iterator[UIProcess]:
    process = start_ui(ui_room, "publisher")
    try:
        yield process
    finally:
        stop_ui(process)


@pytest.fixture(scope="module")
def cookie(ui: UIProcess) -> str:
    """The session cookie, from the one exchange of the one-time token."""
    response = httpx.get(ui.login_url, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/"
    set_cookie = response.headers["set-cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie and "Path=/" in set_cookie
    return set_cookie.split(";", 1)[0]


@pytest.fixture(scope="module")
def csrf(ui: UIProcess, cookie: str, ui_room: UIRoom) -> str:
    page = httpx.get(
        f"{ui.origin}/bundles/{ui_room.digests['reach-1']}/approve", headers={"Cookie": cookie}
    )
    assert page.status_code == 200, page.text
    token = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    assert len(token) >= 32
    return token


def statements(room: UIRoom, digest: str) -> int:
    """How many approvals or revocations the coordinator holds for ``digest``."""
    session = Session(home=Home(room.home("brand")), coordinator=room.url, party="brand", room=ROOM)
    try:
        return len(session.client().approvals(ROOM, digest))
    finally:
        session.close()


def post(ui: UIProcess, path: str, data: dict[str, str] | str, **headers: str) -> httpx.Response:
    headers.setdefault("Origin", ui.origin)
    headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
    body = data if isinstance(data, str) else str(httpx.QueryParams(data))
    return httpx.post(
        f"{ui.origin}{path}", content=body.encode(), headers=headers, follow_redirects=False
    )


def test_every_answer_carries_the_security_headers(ui: UIProcess, cookie: str) -> None:
    for response in (
        httpx.get(f"{ui.origin}/"),  # refused: no cookie
        httpx.get(f"{ui.origin}/", headers={"Cookie": cookie}),
        httpx.get(f"{ui.origin}/static/ui.css"),
    ):
        h = response.headers
        assert h["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "default-src 'none'" in CONTENT_SECURITY_POLICY
        assert "script-src" not in CONTENT_SECURITY_POLICY  # no script at all
        for directive in (
            "style-src 'self'",
            "img-src 'self'",
            "frame-ancestors 'none'",
            "form-action 'self'",
        ):
            assert directive in CONTENT_SECURITY_POLICY
        assert h["x-content-type-options"] == "nosniff"
        assert h["referrer-policy"] == "no-referrer"
        assert h["cache-control"] == "no-store"
        assert h["server"] == "sealroom-ui"


def test_without_the_token_every_page_is_refused(
    ui: UIProcess, cookie: str, ui_room: UIRoom
) -> None:
    for path in (
        "/",
        "/budgets",
        "/bundles",
        "/runs",
        "/metrics",
        f"/bundles/{ui_room.digests['reach-1']}",
        f"/runs/{ui_room.runs[0]}",
        f"/runs/{ui_room.runs[0]}/result.csv",
    ):
        response = httpx.get(f"{ui.origin}{path}")
        assert response.status_code == 403, path
        assert "Reach by segment" not in response.text and "overlap" not in response.text
    # a wrong token, a forged cookie, and the right token a second time
    assert httpx.get(f"{ui.origin}/?token=not-the-token").status_code == 403
    assert (
        httpx.get(f"{ui.origin}/", headers={"Cookie": cookie.split("=")[0] + "=forged"}).status_code
        == 403
    )
    again = httpx.get(ui.login_url, follow_redirects=False)
    assert again.status_code == 403 and "set-cookie" not in again.headers
    assert httpx.get(f"{ui.origin}/", headers={"Cookie": cookie}).status_code == 200


def test_a_foreign_host_is_refused(ui: UIProcess, cookie: str) -> None:
    for host in (
        "evil.example",
        f"evil.example:{ui.port}",
        f"127.0.0.1:{ui.port + 1}",
        f"127.0.0.2:{ui.port}",
        f"localhost.evil.example:{ui.port}",
    ):
        response = httpx.get(f"{ui.origin}/", headers={"Host": host, "Cookie": cookie})
        assert response.status_code == 400, host
        assert "brand-x-publisher" not in response.text
    # the token cannot be spent through a rebinding name either
    assert httpx.get(ui.login_url, headers={"Host": "evil.example"}).status_code == 400
    # no Host at all (HTTP/1.0 from a raw socket)
    with socket.create_connection(("127.0.0.1", ui.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\nCookie: " + cookie.encode() + b"\r\n\r\n")
        assert sock.recv(64).startswith(b"HTTP/1.1 400")
    assert (
        httpx.get(
            f"{ui.origin}/", headers={"Host": f"localhost:{ui.port}", "Cookie": cookie}
        ).status_code
        == 200
    )


def test_a_post_without_the_csrf_token_signs_nothing(
    ui: UIProcess, cookie: str, csrf: str, ui_room: UIRoom
) -> None:
    digest = ui_room.digests["reach-1"]
    before = statements(ui_room, digest)
    path = f"/bundles/{digest}/approve"
    for form in (
        {"digest": digest},
        {"digest": digest, "csrf": ""},
        {"digest": digest, "csrf": csrf[:-1] + ("A" if csrf[-1] != "A" else "B")},
    ):
        response = post(ui, path, form, Cookie=cookie)
        assert response.status_code == 403, form
        assert "CSRF" in response.text
    # the right CSRF token without the session cookie is refused too
    assert post(ui, path, {"digest": digest, "csrf": csrf}).status_code == 403
    assert statements(ui_room, digest) == before == 0


def test_requests_from_other_origins_are_refused(
    ui: UIProcess, cookie: str, csrf: str, ui_room: UIRoom
) -> None:
    digest = ui_room.digests["reach-1"]
    path = f"/bundles/{digest}/approve"
    form = {"digest": digest, "csrf": csrf}
    for origin in (
        "http://evil.example",
        f"http://127.0.0.1:{ui.port + 1}",
        "null",
        f"https://127.0.0.1:{ui.port}",
        f"http://evil.example:{ui.port}",
    ):
        assert post(ui, path, form, Cookie=cookie, Origin=origin).status_code == 403, origin
        assert (
            httpx.get(
                f"{ui.origin}/bundles", headers={"Cookie": cookie, "Origin": origin}
            ).status_code
            == 403
        ), origin
    # "null" (what a no-referrer page sends) passes only from this origin's own pages
    for site in ("cross-site", "same-site", "none"):
        assert (
            post(
                ui, path, form, Cookie=cookie, Origin="null", **{"Sec-Fetch-Site": site}
            ).status_code
            == 403
        ), site
    for site in ("cross-site", "same-site"):  # same-site: another port of 127.0.0.1
        assert post(ui, path, form, Cookie=cookie, **{"Sec-Fetch-Site": site}).status_code == 403, (
            site
        )
        assert (
            httpx.get(
                f"{ui.origin}/", headers={"Cookie": cookie, "Sec-Fetch-Site": site}
            ).status_code
            == 403
        ), site
    assert statements(ui_room, digest) == 0


def test_a_confirmed_digest_that_is_not_the_bundle_signs_nothing(
    ui: UIProcess, cookie: str, csrf: str, ui_room: UIRoom
) -> None:
    digest, other = ui_room.digests["reach-1"], ui_room.digests["hostile"]
    before = statements(ui_room, other)
    for confirmed in (other, digest[:12], "", digest.upper()):
        response = post(
            ui, f"/bundles/{digest}/approve", {"digest": confirmed, "csrf": csrf}, Cookie=cookie
        )
        assert response.status_code == 409, confirmed
        assert "nothing was signed" in response.text
    assert statements(ui_room, digest) == 0 and statements(ui_room, other) == before


def test_only_get_and_post_and_small_forms(
    ui: UIProcess, cookie: str, csrf: str, ui_room: UIRoom
) -> None:
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "PROPFIND"):
        response = httpx.request(method, f"{ui.origin}/", headers={"Cookie": cookie})
        assert response.status_code == 405, method
        assert response.headers["allow"] == "GET, POST"
    assert (
        httpx.post(
            f"{ui.origin}/runs",
            headers={"Cookie": cookie, "Origin": ui.origin},
            data={"csrf": csrf},
        ).status_code
        == 405
    )
    digest = ui_room.digests["reach-1"]
    big = post(ui, f"/bundles/{digest}/approve", "reason=" + "x" * 20_000, Cookie=cookie)
    assert big.status_code == 413
    json_body = post(
        ui,
        f"/bundles/{digest}/approve",
        '{"digest": "x"}',
        Cookie=cookie,
        **{"Content-Type": "application/json"},
    )
    assert json_body.status_code == 415
    twice = post(
        ui,
        f"/bundles/{digest}/approve",
        f"csrf={csrf}&digest={digest}&digest={digest}",
        Cookie=cookie,
    )
    assert twice.status_code == 400
    assert statements(ui_room, digest) == 0


def test_the_server_listens_on_loopback_only(ui: UIProcess) -> None:
    assert ui.origin.startswith("http://127.0.0.1:")
    listening = Path("/proc/net/tcp").read_text().splitlines()[1:]
    mine = [
        line.split()[1]
        for line in listening
        if line.split()[1].endswith(f":{ui.port:04X}") and line.split()[3] == "0A"
    ]
    assert mine == [f"0100007F:{ui.port:04X}"], mine  # 127.0.0.1, nothing else
    six = Path("/proc/net/tcp6")
    if six.exists():
        assert not [
            line
            for line in six.read_text().splitlines()[1:]
            if line.split()[1].endswith(f":{ui.port:04X}") and line.split()[3] == "0A"
        ]
