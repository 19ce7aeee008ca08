"""One real room for every ``sealroom ui`` test: a coordinator process (process launcher), a
worker provisioned through it, two parties with their keys, a room both signed, both datasets
uploaded, and bundles in every state a reviewer meets:

* ``overlap``: approved by both and run twice (budget charged twice, a result for both);
* ``lift``: approved by the brand only, waiting for the publisher;
* ``reach-1`` and ``reach-2``: the same plan by the same author, the second with a stricter
  minimum group size and more DP epsilon (it *replaces* the first);
* ``hostile``: custom code whose title, purpose, code and group keys are HTML and script.

Then the publisher's ``sealroom ui --no-browser`` runs as a child process on a free port; its
one-time URL is read from what it prints. Party commands run in this process through
:func:`sdk.cli.run_command` (as the demo runs them), each with its own ``--home``.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from coordinator.cli.demo import room_toml
from coordinator.cli.demo_data import PLANS, SEGMENTS, generate
from sdk.cli import run_command
from tests.cli.conftest import REPO, CoordinatorProcess, ok, sealroom

ADMIN = "ui-tests-admin-token-0123456789abcdef"
ROOM = "brand-x-publisher"
HOSTILE_TITLE = '<script>window.__pwned=1;document.title="pwned"</script>'
HOSTILE_PURPOSE = (
    '<img src=x onerror="window.__pwned=2"><b id="injected">bold</b> '
    '& "quotes" </td></table><style>body{display:none}</style>'
)
HOSTILE_CODE = (
    "# </pre><script>window.__pwned=3</script>"
    '<img src=x onerror="window.__pwned=4">\n'
    "def query(tables, params):\n"
    "    j = tables['customers'].join(tables['visitors'], on='email', how='inner')\n"
    "    return j.select('email', 'plan')\n"
)
HOSTILE_GROUP = '<svg onload="window.__pwned=5"></svg>'
# where the browser tests save their screenshots: a temporary folder, unless
# SEALROOM_SCREENSHOTS_DIR names one (SEALROOM_SCREENSHOTS_DIR=docs/images refreshes the docs')
SCREENSHOTS = Path(os.environ.get("SEALROOM_SCREENSHOTS_DIR") or
                   Path(tempfile.gettempdir()) / "sealroom-ui-screenshots")


@dataclass
class UIRoom:
    root: Path
    url: str  # the coordinator's
    digests: dict[str, str] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)

    def home(self, who: str) -> Path:
        return self.root / f"home-{who}"

    def cli(self, who: str, *argv: str) -> str:
        """Run a party command in this process; returns its stdout (fails the test on error)."""
        out, err = io.StringIO(), io.StringIO()
        full = ["--home", str(self.home(who)), "--coordinator", self.url, "--room", ROOM]
        if argv[:2] != ("keys", "new"):
            full += ["--as", who]
        code = run_command([*full, *argv], out=out, err=err)
        assert code == 0, f"{' '.join(argv)}: exit {code}\n{out.getvalue()}\n{err.getvalue()}"
        return out.getvalue()

    def bundle(self, who: str, name: str, *argv: str) -> str:
        path = self.root / f"{name}.bundle.json"
        digest = re.search(
            r"bundle ([0-9a-f]{64})", self.cli(who, "bundle", "new", *argv, "-o", str(path))
        ).group(1)
        self.cli(who, "bundle", "submit", str(path))
        self.digests[name] = digest
        return digest


def _room(root: Path, url: str) -> UIRoom:
    prov = ok(
        sealroom("--coordinator", url, "worker", "provision", env={"SEALROOM_ADMIN_TOKEN": ADMIN})
    )
    platform = re.search(r"platform key\s+([0-9a-f]{64})", prov.out)
    image = re.search(r"measurement\s+image (\S+)", prov.out)
    code = re.search(r"code\s+([0-9a-f]{64})", prov.out)
    assert platform and image and code, prov.out
    room = UIRoom(root, url)
    for party in ("brand", "publisher"):
        room.cli(party, "keys", "new", party)
    (root / "room.toml").write_text(
        room_toml(
            room.home("brand") / "keys" / "brand.pub",
            room.home("publisher") / "keys" / "publisher.pub",
            platform.group(1),
            image.group(1),
            code.group(1),
            unisolated=True,
            allow_custom_code=True,
        )
    )
    manifest = str(root / "room.json")
    room.cli("brand", "room", "new", str(root / "room.toml"), "-o", manifest)
    room.cli("brand", "room", "sign", manifest)
    room.cli("brand", "room", "submit", manifest)
    room.cli("publisher", "room", "sign")
    room.cli("brand", "room", "verify")
    data = generate(root / "data", brand_rows=400, publisher_rows=500, overlap=300)
    room.cli("brand", "data", "upload", str(data.brand_csv), "--dataset", "customers")
    room.cli("publisher", "data", "upload", str(data.publisher_csv), "--dataset", "visitors")

    overlap = room.bundle(
        "brand",
        "overlap",
        "--template",
        "overlap",
        "--param",
        "left=customers",
        "--param",
        "right=visitors",
        "--param",
        "epsilon=0.5",
        "--recipient",
        "brand",
        "--recipient",
        "publisher",
        "--title",
        "Audience overlap",
        "--purpose",
        "How many of our customers does the publisher reach?",
    )
    for party in ("brand", "publisher"):
        room.cli(party, "bundle", "approve", "--yes", overlap)
    for _ in range(2):
        out = room.cli("brand", "run", overlap)
        room.runs.append(re.search(r"run (\S+): succeeded", out).group(1))
    room.cli("brand", "feedback", room.runs[0], "--changed-decision", "yes")
    lift = room.bundle(
        "brand",
        "lift",
        "--template",
        "incrementality",
        "--param",
        "exposure=visitors",
        "--param",
        "conversions=customers",
        "--param",
        "epsilon=1",
        "--recipient",
        "brand",
        "--max-runs",
        "3",
        "--title",
        "Campaign incrementality",
        "--purpose",
        "Did exposure to the campaign lift paid conversion?",
    )
    room.cli("brand", "bundle", "approve", "--yes", lift)

    sql = root / "reach.sql"
    sql.write_text(
        "SELECT v.segment AS segment, COUNT(*) AS people\n"
        "FROM customers c JOIN visitors v ON c.email = v.email\n"
        "WHERE c.employees > 0 GROUP BY 1\n"
    )
    domain = "segment=" + ",".join(SEGMENTS)
    room.bundle(
        "brand",
        "reach-1",
        "--query",
        str(sql),
        "--domain",
        domain,
        "--epsilon",
        "0.5",
        "--recipient",
        "brand",
        "--title",
        "Reach by segment",
        "--sequence",
        "1",
        "--purpose",
        "Reach of the campaign per segment",
    )
    room.bundle(
        "brand",
        "reach-2",
        "--query",
        str(sql),
        "--domain",
        domain,
        "--epsilon",
        "0.25",
        "--min-group-size",
        "80",
        "--recipient",
        "brand",
        "--title",
        "Reach by segment",
        "--sequence",
        "2",
        "--purpose",
        "Reach of the campaign per segment",
    )

    (root / "hostile.py").write_text(HOSTILE_CODE)
    (root / "hostile.json").write_text(
        json.dumps(
            {
                "mode": "aggregate",
                "privacy_unit": "email",
                "group_by": [{"column": "plan", "domain": [*PLANS, HOSTILE_GROUP]}],
            }
        )
    )
    room.bundle(
        "brand",
        "hostile",
        "--custom-code",
        str(root / "hostile.py"),
        "--output-spec",
        str(root / "hostile.json"),
        "--input",
        "customers",
        "--input",
        "visitors",
        "--recipient",
        "brand",
        "--title",
        HOSTILE_TITLE,
        "--purpose",
        HOSTILE_PURPOSE,
    )
    return room


@pytest.fixture(scope="package")
def ui_room(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UIRoom]:
    root = tmp_path_factory.mktemp("ui-room")
    server = CoordinatorProcess(root / "coordinator", ADMIN).start()
    try:
        started = time.monotonic()
        room = _room(root, server.url)
        print(f"ui room set up in {time.monotonic() - started:.1f} s")
        yield room
    finally:
        server.stop()


@dataclass
class UIProcess:
    """``sealroom ui --no-browser`` as a child process, and the URL it printed."""

    proc: subprocess.Popen[str]
    login_url: str

    @property
    def origin(self) -> str:
        return self.login_url.split("/?", 1)[0]

    @property
    def port(self) -> int:
        return int(self.origin.rsplit(":", 1)[1])


def cli_env() -> dict[str, str]:
    """The environment a ``sealroom`` child process gets: no SEALROOM_ settings, this repo."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALROOM_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return env


def cli_argv(room: UIRoom, who: str, *command: str) -> list[str]:
    """``sealroom COMMAND...`` as party ``who`` of the room, for a child process."""
    return [sys.executable, "-m", "sdk.cli", "--home", str(room.home(who)),
            "--coordinator", room.url, "--room", ROOM, "--as", who, *command]


def start_ui(room: UIRoom, who: str) -> UIProcess:
    env = cli_env()
    proc = subprocess.Popen(
        cli_argv(room, who, "ui", "--no-browser"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        found = re.search(r"open (http://127\.0\.0\.1:\d+/\?token=\S+)", line)
        if found:
            return UIProcess(proc, found.group(1))
    proc.kill()
    raise AssertionError(
        f"sealroom ui printed no URL:\n{proc.stderr.read() if proc.stderr else ''}"
    )


def stop_ui(ui: UIProcess) -> None:
    if ui.proc.poll() is None:
        ui.proc.terminate()
        try:
            ui.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            ui.proc.kill()
            ui.proc.wait()
