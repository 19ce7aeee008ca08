"""``sealroom match preview`` between two real CLI processes through a real coordinator
process: the intersection both print equals the true one (computed here, by hand, from the raw
files); both signed statements are stored, verified and listed; a set below the minimum group
size is refused with one line, exit 7 and nothing stored; a party outside the room reads
nothing of the session; a malformed message ends the preview with one line, exit 2, and the
session aborted with its messages deleted.

The room is set up as in ``test_party_extra``: a worker provisioned (the manifest pins its
measurement), keys, the room signed by both parties. Nothing is uploaded: a preview runs on
the parties' local files, before any upload.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from coordinator.cli.demo import room_toml
from coordinator.cli.demo_data import generate
from sdk.client import Client
from sdk.errors import AuthError, NotFoundError
from sdk.protocol.keys import PartyKey
from tests.cli.conftest import REPO, CoordinatorProcess, Result, fails, ok, sealroom
from tests.cli.test_flow import provisioned

ADMIN = "match-preview-admin-token-0123456789"
ROOM = "brand-x-publisher"


@dataclass
class World:
    root: Path
    server: CoordinatorProcess
    data: dict[str, Path] = field(default_factory=dict)
    truth: int = 0
    session: str = ""

    def home(self, who: str) -> Path:
        return self.root / who

    def cli(self, who: str, *args: str) -> Result:
        return sealroom("--coordinator", self.server.url, "--room", ROOM, *args,
                        home=self.home(who))

    def spawn(self, who: str, *args: str) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEALROOM_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO),
                                                          os.environ.get("PYTHONPATH")]))
        env["SEALROOM_HOME"] = str(self.home(who))
        return subprocess.Popen(
            [sys.executable, "-m", "sdk.cli", "--coordinator", self.server.url, "--room", ROOM,
             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            cwd=REPO)

    def client(self, who: str) -> Client:
        key = PartyKey.load(self.home(who) / "keys" / f"{who}.key")
        return Client(self.server.url, key)

    def previews_on_disk(self) -> list[Path]:
        folder = self.server.data_dir / "previews"
        return sorted(folder.rglob("*")) if folder.is_dir() else []


def _normalised(path: Path) -> set[str]:
    """The file's emails as a person would compare them: trimmed, lower-cased, plausible."""
    lines = path.read_text().splitlines()[1:]
    emails = {line.split(",")[0].strip().strip('"').strip().lower() for line in lines}
    return {e for e in emails if re.fullmatch(r"[^@\s]+@[a-z0-9.-]+\.[a-z]+", e)}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("match-preview")
    server = CoordinatorProcess(root / "coordinator", ADMIN).start()
    try:
        prov = ok(sealroom("--coordinator", server.url, "worker", "provision",
                           env={"SEALROOM_ADMIN_TOKEN": ADMIN}))
        platform, image, code = provisioned(prov.out)
        w = World(root, server)
        for party in ("brand", "publisher", "outsider"):
            ok(sealroom("keys", "new", party, home=w.home(party)))
        (root / "room.toml").write_text(room_toml(
            w.home("brand") / "keys" / "brand.pub",
            w.home("publisher") / "keys" / "publisher.pub",
            platform, image, code, unisolated=True))
        manifest = str(root / "room.json")
        ok(w.cli("brand", "room", "new", str(root / "room.toml"), "-o", manifest))
        ok(w.cli("brand", "room", "sign", manifest))
        ok(w.cli("brand", "room", "submit", manifest))
        ok(w.cli("publisher", "room", "sign"))
        ok(w.cli("brand", "room", "verify"))
        # messy emails (mixed case, spaces) on both sides and junk rows the SDK drops
        data = generate(root / "data", brand_rows=300, publisher_rows=360, overlap=170,
                        junk=12)
        w.data = {"brand": data.brand_csv, "publisher": data.publisher_csv}
        w.truth = len(_normalised(data.brand_csv) & _normalised(data.publisher_csv))
        assert w.truth == data.truth.overlap == 170
        yield w
    finally:
        server.stop()


def _preview(w: World, who: str, dataset: str, partner: str, file: Path,
             *extra: str) -> subprocess.Popen[str]:
    return w.spawn(who, "match", "preview", "--dataset", dataset, "--with", partner,
                   "--file", str(file), "--timeout", "60", *extra)


def _done(proc: subprocess.Popen[str]) -> Result:
    out, err = proc.communicate(timeout=120)
    return Result(proc.returncode, out, err)


def test_preview_between_two_cli_processes_equals_the_true_intersection(world: World) -> None:
    # both start at once: whichever opens the session first, the other joins it
    brand = _preview(world, "brand", "customers", "publisher", world.data["brand"])
    publisher = _preview(world, "publisher", "visitors", "brand", world.data["publisher"])
    b, p = ok(_done(brand)), ok(_done(publisher))
    for res, own, other in ((b, 300, 360), (p, 360, 300)):
        assert f"in common: {world.truth} " in res.out, res.out + res.err
        assert f"({own} ids) x" in res.out and f"({other} ids)" in res.out, res.out
        assert "both statements signed and verified (minimum group size 50" in res.out
        assert "match preview: 100% of the work done" in res.err, res.err
    assert "12 rows dropped" in p.err  # the junk rows, dropped as `data seal` drops them
    session = re.search(r"match preview ([0-9a-f]{12}):", b.out)
    assert session and session.group(1) in p.out
    for who in ("brand", "publisher"):
        listed = ok(world.cli(who, "match", "list")).out
        row = next(line for line in listed.splitlines() if line.startswith(session.group(1)))
        assert "done" in row and str(world.truth) in row and "2/2 agree" in row, listed
    with world.client("brand") as client:
        [info] = [i for i in client.previews(ROOM) if i["session_id"].startswith(session.group(1))]
        world.session = info["session_id"]
        assert info["state"] == "done" and len(info["statements"]) == 2
        assert info["messages"] == {}
    assert world.previews_on_disk() == []  # every message deleted once both statements were in
    ok(world.cli("brand", "room", "status"))


def test_refused_below_the_minimum_group_size_and_nothing_is_stored(world: World) -> None:
    small = world.root / "small.csv"
    lines = world.data["brand"].read_text().splitlines()
    small.write_text("\n".join(lines[:31]) + "\n")  # 30 rows: below the room's 50
    with world.client("brand") as client:
        before = client.previews(ROOM)
    res = fails(world.cli("brand", "match", "preview", "--dataset", "customers", "--with",
                          "publisher", "--file", str(small)), "E_PRIVACY", 7)
    assert "below the minimum group size 50" in res.err
    assert "@" not in res.err  # no identifier in the message
    with world.client("brand") as client:
        assert client.previews(ROOM) == before
    assert world.previews_on_disk() == []


def test_an_outsider_reads_nothing_of_the_session(world: World) -> None:
    assert world.session, "runs after the preview test"
    with world.client("outsider") as outsider:
        for call in (lambda: outsider.previews(ROOM),
                     lambda: outsider.preview(ROOM, world.session),
                     lambda: outsider.preview_message(ROOM, world.session, "brand", "setup",
                                                      1 << 20),
                     lambda: outsider.open_preview(ROOM, "customers", "publisher", "visitors",
                                                   100)):
            with pytest.raises(AuthError, match="not a party of this room"):
                call()
    # and without credentials at all
    response = httpx.get(f"{world.server.url}/v1/rooms/{ROOM}/previews/{world.session}")
    assert response.status_code == 401


def test_a_malformed_message_is_refused_and_the_session_aborted(world: World) -> None:
    brand = _preview(world, "brand", "customers", "publisher", world.data["brand"])
    with world.client("publisher") as publisher:
        deadline = time.monotonic() + 30
        info: dict[str, object] = {}
        while time.monotonic() < deadline:  # the brand's process opens the session
            waiting = [i for i in publisher.previews(ROOM) if i["state"] == "waiting"]
            if waiting:
                info = publisher.open_preview(ROOM, "visitors", "brand", "customers", 360)
                break
            time.sleep(0.1)
        assert info.get("state") == "running", info
        sid = str(info["session_id"])
        garbage = b"SRPSI01\n" + (40).to_bytes(4, "big") + b"\x00" * 60
        publisher.put_preview_message(ROOM, sid, "request-0", garbage,
                                      int(str(info["piece_bytes"])))
        res = fails(_done(brand), "E_INPUT", 2)
        assert "malformed or unexpected request message (part 0)" in res.err, res.err
        assert publisher.preview(ROOM, sid)["state"] == "aborted"
        with pytest.raises(NotFoundError):
            publisher.preview_message(ROOM, sid, "brand", "request-0", 1 << 20)
    assert world.previews_on_disk() == []
