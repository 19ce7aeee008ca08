"""Unit tests of ``sdk.party.ui`` without a room: the guard's checks, the router's refusals,
autoescaping in every template, escaping in the SVG charts, the replacement rule."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http import HTTPStatus
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from sdk.party.home import Home
from sdk.party.session import Session
from sdk.party.ui.changes import changes, predecessor
from sdk.party.ui.charts import Series, bar_chart, count_chart, time_chart
from sdk.party.ui.render import environment, number
from sdk.party.ui.security import CONTENT_SECURITY_POLICY, Guard, Refusal
from sdk.party.ui.server import App, UIServer

HOSTILE = '<script>alert(1)</script><img src=x onerror="alert(2)">'


def test_host_checks() -> None:
    guard = Guard(8123)
    for host in ("127.0.0.1:8123", "localhost:8123", "LOCALHOST:8123"):
        guard.check_host({"Host": host})
    for host in (
        "",
        "127.0.0.1",
        "127.0.0.1:8124",
        "evil.example:8123",
        "127.0.0.1:8123.evil",
        "[::1]:8123",
        "0.0.0.0:8123",
    ):
        with pytest.raises(Refusal) as refused:
            guard.check_host({"Host": host})
        assert refused.value.status == HTTPStatus.BAD_REQUEST
    with pytest.raises(Refusal):
        guard.check_host({})


def test_origin_and_fetch_site_checks() -> None:
    guard = Guard(8123)
    for headers in (
        {},
        {"Origin": "http://127.0.0.1:8123"},
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},
        {"Origin": "http://localhost:8123"},
        {"Origin": "null", "Sec-Fetch-Site": "same-origin"},
    ):
        guard.check_origin(headers)
    for headers in (
        {"Origin": "http://127.0.0.1:8124"},
        {"Origin": "https://127.0.0.1:8123"},
        {"Origin": "null"},
        {"Origin": "http://evil.example"},
        {"Origin": "http://127.0.0.1:8123/path"},
        {"Origin": "null", "Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "http://127.0.0.1:8123", "Sec-Fetch-Site": "cross-site"},
    ):
        with pytest.raises(Refusal) as refused:
            guard.check_origin(headers)
        assert refused.value.status == HTTPStatus.FORBIDDEN, headers


def test_the_token_works_once_and_becomes_a_strict_cookie() -> None:
    guard = Guard(8123, token="the-token")
    assert guard.login_url == "http://127.0.0.1:8123/?token=the-token"
    with pytest.raises(Refusal):
        guard.visitor({})
    with pytest.raises(Refusal):
        guard.exchange("not-the-token")
    cookie = guard.exchange("the-token")
    name, rest = cookie.split("=", 1)
    value = rest.split(";", 1)[0]
    assert name == "sealroom_ui_8123"
    assert "; HttpOnly; SameSite=Strict; Path=/" in cookie and len(value) >= 32
    with pytest.raises(Refusal):
        guard.exchange("the-token")  # one time
    visitor = guard.visitor({"Cookie": f"other=1; {name}={value}"})
    for bad in (f"{name}={value}x", f"{name}=", "garbage;;==", f"sealroom_ui_8124={value}"):
        with pytest.raises(Refusal):
            guard.visitor({"Cookie": bad})
    Guard.check_csrf(visitor, {"csrf": visitor.csrf})
    for form in ({}, {"csrf": ""}, {"csrf": visitor.csrf + "x"}, {"csrf": value}):
        with pytest.raises(Refusal):
            Guard.check_csrf(visitor, form)
    assert visitor.csrf != value


def test_the_router_refuses_before_any_view(tmp_path: Path) -> None:
    guard = Guard(8123, token="t")
    app = App(Session(home=Home(tmp_path)), "room", guard)
    ok_host = {"Host": "127.0.0.1:8123"}
    assert app.handle("GET", "/", {"Host": "evil:8123"}, None).status == 400
    assert app.handle("PUT", "/", ok_host, None).status == 405
    assert app.handle("GET", "/", ok_host, None).status == 403
    assert app.handle("GET", "/bundles", {**ok_host, "Origin": "http://evil"}, None).status == 403
    assert app.handle("GET", "/static/ui.css", ok_host, None).status == 200
    assert app.handle("GET", "/static/../pyproject.toml", ok_host, None).status == 404
    login = app.handle("GET", "/?token=t", ok_host, None)
    assert login.status == 303 and ("Location", "/") in login.headers
    cookie = dict(login.headers)["Set-Cookie"].split(";", 1)[0]
    authed = {**ok_host, "Cookie": cookie}
    assert app.handle("GET", "/nowhere", authed, None).status == 404
    post = app.handle(
        "POST",
        "/bundles/" + "a" * 64 + "/approve",
        {**authed, "Content-Type": "application/x-www-form-urlencoded"},
        b"digest=" + b"a" * 64,
    )
    assert post.status == 403 and b"CSRF" in post.body


def test_the_server_binds_loopback_only(tmp_path: Path) -> None:
    server = UIServer(Session(home=Home(tmp_path)), "room", port=0)
    try:
        assert server.httpd.server_address[0] == "127.0.0.1"
        assert server.login_url.startswith(f"http://127.0.0.1:{server.port}/?token=")
    finally:
        server.shutdown()


def test_every_template_autoescapes() -> None:
    env = environment()
    assert env.from_string("{{ x }}").render(x=HOSTILE).startswith("&lt;script&gt;")
    names = env.list_templates()
    assert {"layout.html", "bundle.html", "confirm.html", "run.html"} <= set(names)
    for name in names:
        env.get_template(name)  # every template compiles
    for name in names:
        text = (Path(__file__).parents[2] / "sdk/party/ui/templates" / name).read_text()
        assert "|safe" not in text and "autoescape false" not in text, name
        assert "<script" not in text and "style=" not in text and "<style" not in text, name
    assert "script-src" not in CONTENT_SECURITY_POLICY and "'unsafe" not in CONTENT_SECURITY_POLICY


def test_charts_escape_their_text_and_use_classes_only() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    svgs = [
        bar_chart(
            [HOSTILE, "b"],
            [1.0, None],
            title=HOSTILE,
            unit=HOSTILE,
            intervals=[(0.5, 1.5), (None, None)],
        ),
        time_chart(
            [Series(HOSTILE, [(t0, 0.0), (t0 + timedelta(hours=1), 2.0)])],
            title=HOSTILE,
            y_label=HOSTILE,
            limit=4.0,
            limit_label=HOSTILE,
            steps=True,
        ),
        count_chart([(HOSTILE, 3), ("b", 0)], title=HOSTILE, y_label=HOSTILE),
        time_chart([], title="empty", y_label="y"),
        bar_chart([], [], title="empty"),
    ]
    allowed = {"svg", "title", "text", "line", "polyline", "circle", "rect"}
    for svg in svgs:
        text = str(svg)
        assert text.startswith('<svg class="chart"')
        root = ElementTree.fromstring(text)  # well-formed: the labels did not break out
        for element in root.iter():
            tag = element.tag.split("}")[-1]
            assert tag in allowed, tag
            assert not [a for a in element.attrib if a.lower().startswith("on")]
            assert "style" not in element.attrib
        labels = "".join(root.itertext())
        assert HOSTILE in labels or "empty" in labels or "nothing" in labels
    assert "&lt;script&gt;" in str(svgs[0]) and "no value" in str(svgs[0])


def test_numbers_for_display() -> None:
    assert number(Decimal("4")) == "4" and number(Decimal("1.0")) == "1"
    assert number(Decimal("0.25")) == "0.25" and number(None) == "-"
    assert number("282.5482398630596") == "282.5" and number("software") == "software"
    assert number(0.59595959) == "0.596" and number(12345.6) == "12346"


def test_a_bundle_replaces_the_same_authors_same_title_with_a_lower_sequence() -> None:
    base = _bundle()
    older = replace(base, sequence=1)
    other_title = replace(base, sequence=1, title="other title")
    newer = replace(base, sequence=5, output=replace(base.output, max_groups=7))
    other_author = replace(base, sequence=3, author="mallory")
    found = predecessor(
        newer,
        "d-new",
        [("d-old", older), ("d-x", other_title), ("d-m", other_author), ("d-new", newer)],
    )
    assert found is not None and found[0] == "d-old"
    assert predecessor(older, "d-old", [("d-new", newer)]) is None
    diff = changes("d-old", older, newer)
    assert [(c.field, c.before, c.after) for c in diff.fields] == [
        ("output.max_groups", "10000", "7")
    ]
    assert diff.earlier_sequence == 1 and diff.code == []
    code = changes("d-old", older, replace(newer, code="SELECT 2"))
    assert "-SELECT 1" in code.code and "+SELECT 2" in code.code


def _bundle() -> Any:  # a minimal bundle (not signed: the rule compares payloads)
    from sdk.protocol.models import Bundle, BundleInput
    from sdk.protocol.spec import OutputSpec

    return Bundle(
        room_id="r",
        manifest_digest="0" * 64,
        sequence=2,
        author="brand",
        title="t",
        purpose="",
        kind="sql",
        code="SELECT 1",
        template=None,
        params={},
        inputs=(BundleInput("customers", follow_latest=True),),
        output=OutputSpec(mode="aggregate", privacy_unit="person"),
        recipients=("brand",),
        max_runs=1,
        not_before="2026-01-01T00:00:00Z",
        expires="2026-02-01T00:00:00Z",
    )


def test_a_bundle_fetched_by_digest_must_have_that_digest() -> None:
    """The coordinator answering another (validly signed) bundle for a digest is refused
    before anything is shown or signed (what ``bundle approve DIGEST`` and the page rely on)."""
    from types import SimpleNamespace

    from sdk.errors import SignatureError
    from sdk.party.bundles import load_bundle
    from sdk.protocol.dsse import Envelope

    other = Envelope("application/vnd.sealroom.bundle+json", b"{}", ())
    session = SimpleNamespace(client=lambda: SimpleNamespace(bundle=lambda room, ref: other))
    room = SimpleNamespace(room_id="r")
    with pytest.raises(SignatureError, match="sent bundle"):
        load_bundle(session, room, "ab" * 32)  # type: ignore[arg-type]
