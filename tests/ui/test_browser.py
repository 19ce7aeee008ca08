"""``sealroom ui`` in a real browser: Debian's ``chromium`` driven by ``chromium-driver`` through
Selenium, against the publisher's ``sealroom ui --no-browser`` over the real room of
``conftest.py``. One browser and one UI process for the module.

* The one-time URL sets the session cookie and lands on the clean URL.
* The publisher finds the bundle waiting for it, opens its review, goes through the
  confirmation (which shows the exact digest), signs; the coordinator then holds an approval
  of that digest that the SDK's own approval verification accepts, and the bundle runs.
* A bundle whose title, purpose, code and group keys are HTML and script renders as text: the
  text is there, no injected element exists, no script ran, and the browser reported no
  Content-Security-Policy violation (nor any other error) on any page.
* A run's verified receipt, its result table and chart, and its CSV and Parquet downloads.
* Every page is photographed into ``docs/images/ui-*.png`` for ``docs/ui.md``.

Without chromium or chromedriver these tests skip, except under ``CI=true`` where they fail.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sdk.party.home import Home
from sdk.party.session import Session
from sdk.protocol.approvals import approval_status, check_approval, verify_approvals
from sdk.protocol.clock import utcnow
from sdk.protocol.dsse import Envelope
from tests.ui.conftest import (
    HOSTILE_CODE,
    HOSTILE_GROUP,
    HOSTILE_PURPOSE,
    HOSTILE_TITLE,
    ROOM,
    SCREENSHOTS,
    UIProcess,
    UIRoom,
    start_ui,
    stop_ui,
)

pytestmark = pytest.mark.browser

WIDTH, HEIGHT = 1280, 900
MAX_PNG_BYTES = 200_000
CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver", "/usr/lib/chromium/chromedriver")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def _find(names: tuple[str, ...]) -> str | None:
    for name in names:
        found = shutil.which(name) or (name if Path(name).is_file() else None)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def chromium() -> tuple[str, str]:
    """(browser, chromedriver) paths; session-scoped so that it is checked before the room is
    set up (pytest sets up wider scopes first)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        _unavailable("selenium is not installed (pip install '.[dev]')")
    binary, chromedriver = _find(CHROMIUM), _find(DRIVERS)
    if binary is None or chromedriver is None:
        _unavailable(
            "chromium and chromium-driver are needed (apt-get install -y chromium chromium-driver)"
        )
    assert binary is not None and chromedriver is not None
    return binary, chromedriver


@pytest.fixture(scope="module")
def driver(chromium: tuple[str, str]) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, chromedriver = chromium
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={WIDTH},{HEIGHT}",
        "--hide-scrollbars",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        browser.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
        )
        yield browser
    finally:
        browser.quit()


@pytest.fixture(scope="module")
def ui(driver: Any, ui_room: UIRoom) -> Iterator[UIProcess]:
    process = start_ui(ui_room, "publisher")
    try:
        driver.get(process.login_url)
        # the token is spent: the cookie holds the session and the address bar a clean URL
        assert driver.current_url == process.origin + "/", driver.current_url
        assert "token" not in driver.current_url
        yield process
    finally:
        stop_ui(process)


class Page:
    """Visits a page and checks the browser reported nothing (no CSP violation, no error)."""

    def __init__(self, driver: Any, ui: UIProcess) -> None:
        self.driver, self.ui = driver, ui

    def visit(self, path: str) -> Any:
        self.driver.get(self.ui.origin + path)
        return self.driver

    def wait_for(self, condition: Any, timeout: float = 30) -> None:
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(self.driver, timeout).until(condition)

    def by(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def quiet(self) -> None:
        logs = self.driver.get_log("browser")
        csp = [
            e
            for e in logs
            if "Content Security Policy" in e["message"] or "Refused to" in e["message"]
        ]
        assert not csp, csp
        assert not [e for e in logs if e["level"] == "SEVERE"], logs

    def shoot(self, name: str, *, at: str | None = None) -> Path:
        if at is not None:
            self.driver.execute_script("arguments[0].scrollIntoView(true);", self.by(at))
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"ui-{name}.png"
        data = self.driver.get_screenshot_as_png()
        width, height = struct.unpack(">II", data[16:24])
        assert width <= WIDTH and height <= HEIGHT, (width, height)
        assert len(data) < MAX_PNG_BYTES, (name, len(data))
        path.write_bytes(data)
        return path


@pytest.fixture(scope="module")
def page(driver: Any, ui: UIProcess) -> Page:
    return Page(driver, ui)


def _approvals(room: UIRoom, digest: str) -> list[Envelope]:
    session = Session(home=Home(room.home("brand")), coordinator=room.url, party="brand", room=ROOM)
    try:
        return session.client().approvals(ROOM, digest)
    finally:
        session.close()


def test_the_room_page_shows_the_verified_room(page: Page) -> None:
    page.visit("/")
    body = page.by("main").text
    assert "Room brand-x-publisher" in body and "log verified" in body
    assert "brand" in body and "publisher" in body
    assert re.search(r"plan\s+string\s+dimension", body) and re.search(
        r"employees\s+int\s+filter", body
    )
    assert "simulated" in body and "unisolated" in body
    page.quiet()
    page.shoot("room")


def test_the_budget_chart_from_the_verified_log(page: Page) -> None:
    page.visit("/budgets")
    body = page.by("main").text
    assert re.search(r"customers\s+brand\s+4\s+1\s+3\s+2", body), body
    charts = page.all("svg.chart")
    assert len(charts) == 2
    assert page.all("svg.chart polyline.line") and page.all("svg.chart line.limit")
    page.quiet()
    page.shoot("budgets")


def test_approve_a_pending_bundle_through_the_confirmation(page: Page, ui_room: UIRoom) -> None:
    from selenium.webdriver.common.by import By

    digest = ui_room.digests["lift"]
    assert not [a for a in _approvals(ui_room, digest) if b'"party":"publisher"' in a.payload]
    page.visit("/bundles")
    waiting = page.all("main table")[0]
    assert "Campaign incrementality" in waiting.text and "awaiting your decision" in waiting.text
    page.quiet()
    page.shoot("approvals")
    link = waiting.find_element(By.XPATH, f".//a[@href='/bundles/{digest}']")
    link.click()
    assert page.by("#bundle-title").text == "Campaign incrementality"
    text = page.by("main").text
    assert "template incrementality (plan regenerated and identical)" in text
    assert re.search(r"customers\s+4\s+1\s+3\s+1\s+3", text), text  # cost against the budget
    assert re.search(r"version 1 \(upload [0-9a-f]{12}\): \d+ rows", text), text  # the pins
    page.quiet()
    page.by("#approve").click()
    assert page.by("#confirm-digest").text == digest
    assert digest in page.by("form.confirm").text
    assert page.by("form.confirm input[name=digest]").get_attribute("value") == digest
    page.quiet()
    page.shoot("confirm")
    page.by("#sign").click()
    page.wait_for(lambda d: "done=" in d.current_url or page.all("p.notice.bad"))
    assert page.driver.current_url == f"{page.ui.origin}/bundles/{digest}?done=approve", page.by(
        "main"
    ).text
    assert "approval was signed" in page.by("#done").text
    assert "approved by you" in page.by("main").text
    page.quiet()

    # the coordinator holds the publisher's approval of exactly this digest, and the SDK's
    # approval verification accepts it (and, with the brand's, the whole rule)
    room = Session(
        home=Home(ui_room.home("publisher")), coordinator=ui_room.url, party="publisher", room=ROOM
    )
    from sdk.party.trust import load_room

    pinned = load_room(room)
    statements = _approvals(ui_room, digest)
    mine = []
    for envelope in statements:
        approval = check_approval(
            envelope, pinned.manifest, pinned.digest, now=utcnow(), bundle_digest=digest
        )
        if approval.party == "publisher":
            mine.append(approval)
    assert len(mine) == 1 and mine[0].decision == "approve"
    status = approval_status(statements, pinned.manifest, pinned.digest, digest, now=utcnow())
    assert set(status.approved) == {"brand", "publisher"} and status.runnable
    verify_approvals(statements, pinned.manifest, pinned.digest, digest, now=utcnow())
    room.close()
    # ... and the worker, the verifier of record, runs it
    assert re.search(r"run \S+: succeeded", ui_room.cli("brand", "run", digest))


def test_a_replacement_shows_what_changed(page: Page, ui_room: UIRoom) -> None:
    page.visit(f"/bundles/{ui_room.digests['reach-2']}")
    text = page.by("main").text
    assert "Replaces an earlier bundle" in text
    assert ui_room.digests["reach-1"][:12] in text
    assert re.search(r"output\.dp\.epsilon\s+0\.5\s+0\.25", text), text
    assert re.search(r"output\.min_group_size\s+-\s+80", text), text
    assert "reads customers (owner brand): email (id, joined only), employees (filter)" in text
    page.quiet()
    page.shoot("bundle")


def test_hostile_bundle_text_renders_as_text(page: Page, ui_room: UIRoom) -> None:
    from selenium.webdriver.common.by import By

    digest = ui_room.digests["hostile"]
    for path in ("/bundles", f"/bundles/{digest}", f"/bundles/{digest}/approve"):
        driver = page.visit(path)
        assert driver.execute_script("return window.__pwned === undefined")
        assert "pwned" not in driver.title
        assert driver.find_elements(By.TAG_NAME, "script") == []
        assert page.all("#injected") == [] and page.all("img") == []
        assert page.all("[onerror], [onload], main style, main svg:not(.chart)") == []
        assert page.by("body").is_displayed()
        assert HOSTILE_TITLE in page.by("main").text
        page.quiet()
    page.visit(f"/bundles/{digest}")
    assert page.by("#bundle-title").text == HOSTILE_TITLE
    assert page.by("#bundle-purpose").text == HOSTILE_PURPOSE.replace("  ", " ")
    assert page.by("#bundle-code").text == HOSTILE_CODE.rstrip("\n")
    assert HOSTILE_GROUP in page.by("main").text
    assert "CUSTOM PYTHON CODE" in page.by("main").text
    assert page.driver.execute_script("return window.__pwned === undefined")
    page.shoot("escaping")


def test_a_run_with_its_verified_receipt_result_and_downloads(page: Page, ui_room: UIRoom) -> None:
    page.visit("/runs")
    rows = page.by("main table").text
    for run in ui_room.runs:
        assert run in rows
    assert rows.count("verified") >= len(ui_room.runs)
    page.quiet()
    page.shoot("runs")
    run = ui_room.runs[0]
    page.visit(f"/runs/{run}")
    assert page.by("#receipt-badge").text == "receipt verified"
    table = page.by("#result-table").text
    for figure in ("overlap", "left_count", "left_match_rate", "right_match_rate"):
        assert figure in table
    assert page.all("svg.chart rect.bar") and page.all("svg.chart line.whisker")
    page.quiet()
    page.shoot("run")

    cookie = page.driver.get_cookie(f"sealroom_ui_{page.ui.port}")
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    headers = {"Cookie": f"{cookie['name']}={cookie['value']}"}
    got = httpx.get(f"{page.ui.origin}/runs/{run}/result.csv", headers=headers)
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv")
    assert got.headers["content-disposition"].startswith("attachment;")
    rows_csv = list(csv.reader(io.StringIO(got.text)))
    assert rows_csv[0] == ["figure", "value", "ci95_low", "ci95_high"]
    assert [r[0] for r in rows_csv[1:3]] == ["overlap", "left_count"]
    got = httpx.get(f"{page.ui.origin}/runs/{run}/result.parquet", headers=headers)
    assert got.status_code == 200
    import pyarrow.parquet as pq

    table_pq = pq.read_table(io.BytesIO(got.content)).to_pylist()
    assert [r["figure"] for r in table_pq][:2] == ["overlap", "left_count"]


def test_metrics_charts(page: Page) -> None:
    page.visit("/metrics")
    text = page.by("main").text
    assert "From the verified log" in text and "Reported by the coordinator" in text
    rates = page.by("#match-rates").text  # measured by the worker in the overlap runs
    assert "customers" in rates and "visitors" in rates, rates
    assert len(page.all("svg.chart")) >= 3
    page.quiet()
    page.shoot("metrics")
