"""The whole study through real ``sealroom`` processes and a real coordinator process
(process launcher): keys, room, uploads, template bundles, review, approvals, runs, results,
receipts, the log — and the error paths a user meets on the way: a dataset that does not match
its schema, a wrong key, a bundle one party has not approved, a revoked approval, a tampered
receipt, a coordinator that rolls its log back and then forks it.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from coordinator.cli.demo import free_port, room_toml
from coordinator.cli.demo_data import PLANS, SEGMENTS, generate
from sdk.errors import SealroomError
from tests.cli.conftest import REPO, Result, fails, ok, sealroom

ROOM = "brand-x-publisher"
ADMIN = "test-admin-token-0123456789"


class Server:
    """``sealroom coordinator serve`` as a child process (restartable on the same port)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEALROOM_")}
        env.update(PYTHONPATH=path, SEALROOM_ADMIN_TOKEN=ADMIN)
        log = open(self.data_dir.parent / "coordinator.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sdk.cli", "coordinator", "serve", "--data-dir",
             str(self.data_dir), "--port", str(self.port), "--launcher", "process", "--dev"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        for _ in range(300):
            assert self.proc.poll() is None, (self.data_dir.parent / "coordinator.log").read_text()
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("coordinator did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class World:
    def __init__(self, root: Path, server: Server) -> None:
        self.root = root
        self.server = server
        self.bundles: dict[str, str] = {}
        self.runs: dict[str, str] = {}

    def home(self, who: str) -> Path:
        return self.root / f"home-{who}"

    def cli(self, who: str, *args: str) -> Result:
        return sealroom("--coordinator", self.server.url, *args, home=self.home(who))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("flow")
    (root / "coordinator").mkdir()
    server = Server(root / "coordinator")
    server.start()
    w = World(root, server)
    try:
        yield w
    finally:
        server.stop()


def _field(text: str, pattern: str) -> str:
    match = re.search(pattern, text)
    assert match, text
    return match.group(1)


def provisioned(out: str) -> tuple[str, str, str]:
    """The platform key, image id and code digest ``worker provision`` printed."""
    return (_field(out, r"platform key\s+([0-9a-f]{64})"),
            _field(out, r"measurement\s+image (\S+)"), _field(out, r"code\s+([0-9a-f]{64})"))


def signed_room(world: World, *, allow_custom_code: bool) -> Path:
    """Worker provisioned (process launcher), keys made, the room signed by both parties and
    submitted; returns the brand's signed manifest file."""
    prov = ok(sealroom("worker", "provision", "--data-dir", str(world.server.data_dir),
                       "--launcher", "process"))
    platform, image, code = provisioned(prov.out)
    for party in ("brand", "publisher"):
        ok(world.cli(party, "keys", "new", party))
    toml = room_toml(world.home("brand") / "keys" / "brand.pub",
                     world.home("publisher") / "keys" / "publisher.pub",
                     platform, image, code, unisolated=True, allow_custom_code=allow_custom_code)
    (world.root / "room.toml").write_text(toml)
    manifest = world.root / "room.manifest.json"
    ok(world.cli("brand", "room", "new", str(world.root / "room.toml"), "-o", str(manifest)))
    ok(world.cli("brand", "room", "sign", str(manifest)))
    ok(world.cli("brand", "room", "submit", str(manifest)))
    # the publisher signs the coordinator's copy; the brand verifies and keeps the signed file
    res = ok(world.cli("publisher", "--room", ROOM, "room", "sign"))
    assert "missing signatures" not in res.out
    ok(world.cli("brand", "--room", ROOM, "room", "verify", "-o", str(manifest)))
    return manifest


@pytest.fixture(scope="module")
def room(world: World) -> World:
    """Worker provisioned, keys made, room signed by both and submitted, data uploaded."""
    signed_room(world, allow_custom_code=True)
    data = generate(world.root / "data", brand_rows=3000, publisher_rows=3750, overlap=1500)
    ok(world.cli("brand", "data", "upload", str(data.brand_csv), "--dataset", "customers"))
    ok(world.cli("publisher", "data", "upload", str(data.publisher_csv), "--dataset", "visitors"))
    out = ok(world.cli("brand", "bundle", "new", "--template", "overlap", "--param",
                       "left=customers", "--param", "right=visitors", "--recipient", "brand",
                       "--recipient", "publisher", "-o", str(world.root / "overlap.json"))).out
    world.bundles["overlap"] = _field(out, r"bundle ([0-9a-f]{64})")
    out = ok(world.cli("brand", "bundle", "new", "--template", "incrementality", "--param",
                       "exposure=visitors", "--param", "conversions=customers", "--param",
                       "epsilon=1", "--recipient", "brand", "-o",
                       str(world.root / "lift.json"))).out
    world.bundles["lift"] = _field(out, r"bundle ([0-9a-f]{64})")
    for name in ("overlap", "lift"):
        ok(world.cli("brand", "bundle", "submit", str(world.root / f"{name}.json")))
    return world


def test_schema_mismatch_is_refused_before_upload(room: World) -> None:
    bad = room.root / "bad.csv"
    bad.write_text("email,plan,employees,converted\na@b.com,team,3,1\n")  # arr is missing
    fails(room.cli("brand", "data", "upload", str(bad), "--dataset", "customers"), "E_INPUT", 2)


def test_refused_uploads_store_nothing(room: World) -> None:
    """Invalid ids with --strict, no valid rows, 0-byte, binary, non-UTF-8, header-only and
    another party's dataset: one line each, and the coordinator's uploads stay the same."""
    before = ok(room.cli("brand", "--room", ROOM, "room", "status")).out
    uploads = before[before.index("uploads ("):]
    assert "customers" in uploads and "none dropped" in uploads
    canary = "canary.flow.77@nodot"
    cases = {
        "strict.csv": (f"email,plan,employees,converted,arr\n{canary},team,3,1,10\n".encode(),
                       ("--strict",), "row 1: invalid_email"),
        "none.csv": (f"email,plan,employees,converted,arr\n{canary},team,3,1,10\n".encode(),
                     (), "no valid rows"),
        "empty.csv": (b"", (), "empty (0 bytes)"),
        "binary.csv": (b"PK\x03\x04\x00\x00" + bytes(range(256)) * 30, (), "neither CSV"),
        "latin1.csv": ("email,plan,employees,converted,arr\né@b.com,t,1,1,1\n".encode("latin-1"),
                       (), "not UTF-8"),
        "header.csv": (b"email,plan,employees,converted,arr\n", (), "no data rows"),
    }
    bad = room.root / "bad-inputs"
    bad.mkdir(exist_ok=True)
    for name, (content, extra, message) in cases.items():
        (bad / name).write_bytes(content)
        res = fails(room.cli("brand", "data", "upload", str(bad / name), "--dataset",
                             "customers", "--rejects", str(bad / "rejects.csv"), *extra),
                    "E_INPUT", 2)
        assert message in res.err, res.err
        assert canary not in res.out + res.err
    res = fails(room.cli("publisher", "data", "upload", str(bad / "strict.csv"), "--dataset",
                         "customers"), "E_SIGNATURE", 3)
    assert sorted(p.name for p in bad.iterdir()) == sorted(cases)  # no rejects file, nothing
    after = ok(room.cli("brand", "--room", ROOM, "room", "status")).out
    assert after[after.index("uploads ("):] == uploads
    for who in ("brand", "publisher"):
        assert not [p for p in room.home(who).rglob("*") if ".seal" in p.name or ".tmp" in p.name]


def test_wrong_key_cannot_upload_or_sign_for_a_party(room: World) -> None:
    impostor = room.root / "impostor"
    ok(sealroom("keys", "new", "brand", "--out", str(impostor)))
    csv = room.root / "data" / "customers.csv"
    res = room.cli("brand", "--key", str(impostor / "brand.key"), "data", "upload", str(csv),
                   "--dataset", "customers")
    fails(res, "E_", None)
    assert res.code in (3, 13), res.err  # E_SIGNATURE or E_AUTH
    fails(room.cli("publisher", "data", "upload", str(csv), "--dataset", "customers"),
          "E_SIGNATURE", 3)


def test_review_shows_cost_and_risks(room: World) -> None:
    out = ok(room.cli("publisher", "bundle", "review", room.bundles["lift"])).out
    assert "template incrementality (plan regenerated and identical)" in out
    assert "epsilon 1, delta 0 per run" in out or "epsilon 1" in out
    assert re.search(r"customers\s+4\s+0\s+4\s+1\s+4", out), out
    assert "risk report" in out and "not yet" in out
    out = ok(room.cli("publisher", "bundle", "review", room.bundles["overlap"])).out
    assert "NO DIFFERENTIAL PRIVACY" in out


def test_unapproved_bundle_is_refused(room: World) -> None:
    ok(room.cli("brand", "bundle", "approve", "--yes", room.bundles["lift"]))
    res = fails(room.cli("brand", "run", room.bundles["lift"]), "E_SIGNATURE", 3)
    assert "publisher" in res.err


def test_approved_runs_and_results(room: World) -> None:
    ok(room.cli("publisher", "bundle", "approve", "--yes", room.bundles["lift"]))
    for party in ("brand", "publisher"):
        ok(room.cli(party, "bundle", "approve", "--yes", room.bundles["overlap"]))
    for name in ("lift", "overlap"):
        out = ok(room.cli("brand", "run", room.bundles[name])).out
        room.runs[name] = _field(out, r"run (\S+): succeeded")
    res = ok(room.cli("brand", "result", "get", room.runs["lift"], "-o",
                      str(room.root / "lift.csv")))
    assert "absolute_lift" in res.out and "receipt verified" in res.out
    rows = dict(line.split(",")[:2] for line in (room.root / "lift.csv").read_text().splitlines())
    assert 0 < float(rows["exposed_users"]) and 0 < float(rows["control_users"])
    assert rows["absolute_lift"] != ""  # released, not suppressed
    res = ok(room.cli("publisher", "result", "get", room.runs["overlap"], "-o",
                      str(room.root / "overlap.parquet")))
    import pyarrow.parquet as pq

    table = pq.read_table(room.root / "overlap.parquet").to_pylist()
    assert [r["figure"] for r in table][:2] == ["overlap", "left_count"]
    rate = re.search(r"right_match_rate\s+(\S+)", res.out)
    assert rate and 0.2 < float(rate.group(1)) < 0.6, res.out  # 1500 of 3750 match
    # the publisher is not a recipient of the lift result
    res = room.cli("publisher", "result", "get", room.runs["lift"])
    assert res.code != 0 and "Traceback" not in res.err
    ok(room.cli("brand", "feedback", room.runs["lift"], "--changed-decision", "yes"))
    listed = ok(room.cli("publisher", "result", "list")).out
    assert room.runs["lift"] in listed and "succeeded" in listed
    assert room.bundles["overlap"][:12] in ok(room.cli("publisher", "bundle", "list")).out
    ok(room.cli("brand", "room", "status"))


def test_the_python_api_verifies_like_the_cli(room: World) -> None:
    import sdk

    party = sdk.Party("publisher", home=room.home("publisher"), coordinator=room.server.url,
                      room=ROOM)
    try:
        log = party.log()
        assert log.checkpoint is not None and log.runs_of(room.bundles["lift"]) == 1
        assert any("NO DIFFERENTIAL PRIVACY" in r for r in party.risks(room.bundles["overlap"]))
        result = party.result(room.runs["overlap"])
        assert result.columns[0] == "figure" and result.receipt.status == "succeeded"
        assert result.to_arrow().num_rows == len(result.rows)
        with pytest.raises(SealroomError):  # not a recipient of the lift result
            party.result(room.runs["lift"])
    finally:
        party.close()
    receipt = room.home("publisher") / "rooms" / ROOM / "receipts" / f"{room.runs['overlap']}.json"
    verified = sdk.verify_receipt(receipt, room.root / "room.manifest.json")
    assert verified.receipt.run_id == room.runs["overlap"]


def test_revoked_approval_stops_the_bundle(room: World) -> None:
    ok(room.cli("publisher", "bundle", "revoke", "--yes", room.bundles["overlap"],
                "--reason", "enough"))
    res = fails(room.cli("brand", "run", room.bundles["overlap"]), "E_SIGNATURE", 3)
    assert "revoked" in res.err


def test_sql_plan_bundle_reviewed_in_words_and_run(room: World) -> None:
    (room.root / "reach.sql").write_text(
        "SELECT v.segment AS segment, COUNT(*) AS people,\n"
        "       SUM(LEAST(GREATEST(c.arr, 0), 50000)) AS revenue\n"
        "FROM customers c JOIN visitors v ON c.email = v.email\n"
        "WHERE c.employees > 0 GROUP BY 1\n")
    out = ok(room.cli("brand", "bundle", "new", "--query", str(room.root / "reach.sql"),
                      "--domain", "segment=" + ",".join(SEGMENTS), "--recipient", "brand",
                      "--title", "reach", "-o", str(room.root / "reach.bundle.json"))).out
    digest = _field(out, r"bundle ([0-9a-f]{64})")
    ok(room.cli("brand", "bundle", "submit", str(room.root / "reach.bundle.json")))
    review = ok(room.cli("publisher", "bundle", "review", digest[:12])).out
    assert "BY CONSTRUCTION" in review and "CUSTOM" not in review
    assert "only rows where (customers.employees > 0)" in review
    assert "reads customers (owner brand): email (id, joined only), arr (measure), " \
           "employees (filter)" in review
    assert "reads visitors (owner publisher): email (id, joined only), segment (dimension)" \
        in review
    for party in ("brand", "publisher"):
        ok(room.cli(party, "bundle", "approve", "--yes", digest[:12]))
    run = _field(ok(room.cli("brand", "run", digest)).out, r"run (\S+): succeeded")
    res = ok(room.cli("brand", "result", "get", run, "-o", str(room.root / "reach.csv")))
    assert "privacy by construction" in res.out
    header = (room.root / "reach.csv").read_text().splitlines()[0]
    assert header == "segment,people,revenue"


def test_custom_sql_bundle_with_an_output_spec(room: World) -> None:
    (room.root / "segments.sql").write_text(
        "SELECT c.email AS unit, v.segment FROM customers c JOIN visitors v USING (email)")
    (room.root / "segments.json").write_text(json.dumps({
        "mode": "aggregate", "privacy_unit": "unit",
        "group_by": [{"column": "segment", "domain": list(SEGMENTS)}]}))
    out = ok(room.cli("publisher", "bundle", "new", "--code", str(room.root / "segments.sql"),
                      "--output-spec", str(room.root / "segments.json"), "--input", "customers",
                      "--input", "visitors", "--recipient", "publisher", "--title", "segments",
                      "-o", str(room.root / "segments.bundle.json"))).out
    digest = _field(out, r"bundle ([0-9a-f]{64})")
    ok(room.cli("publisher", "bundle", "submit", str(room.root / "segments.bundle.json")))
    review = ok(room.cli("brand", "bundle", "review", digest[:12])).out
    assert "CUSTOM SQL CODE" in review and "NO DIFFERENTIAL PRIVACY" in review
    assert "recipient publisher owns" not in review
    for party in ("brand", "publisher"):
        ok(room.cli(party, "bundle", "approve", "--yes", digest[:12]))
    run = _field(ok(room.cli("publisher", "run", digest)).out, r"run (\S+): succeeded")
    res = ok(room.cli("publisher", "result", "get", run))
    assert "software" in res.out and "min group 50" in res.out


def test_custom_python_bundle_with_params(room: World) -> None:
    (room.root / "plans.py").write_text(
        "def query(tables, params):\n"
        "    j = tables['customers'].join(tables['visitors'], on='email', how='inner')\n"
        "    j = j.filter(j['visits'] >= params['min_visits'])\n"
        "    return j.select('email', 'plan')\n")
    (room.root / "plans.json").write_text(json.dumps({
        "mode": "aggregate", "privacy_unit": "email",
        "group_by": [{"column": "plan", "domain": list(PLANS)}]}))
    out = ok(room.cli("brand", "bundle", "new", "--code", str(room.root / "plans.py"),
                      "--output-spec", str(room.root / "plans.json"), "--input", "customers",
                      "--input", "visitors", "--param", "min_visits=2",
                      "-o", str(room.root / "plans.bundle.json"))).out
    digest = _field(out, r"bundle ([0-9a-f]{64})")
    ok(room.cli("brand", "bundle", "submit", str(room.root / "plans.bundle.json")))
    assert "CUSTOM PYTHON CODE" in ok(room.cli("publisher", "bundle", "review", digest)).out
    for party in ("brand", "publisher"):
        ok(room.cli(party, "bundle", "approve", "--yes", digest))
    run = _field(ok(room.cli("brand", "run", digest)).out, r"run (\S+): succeeded")
    assert "starter" in ok(room.cli("brand", "result", "get", run)).out


def test_receipts_verify_offline_and_tampering_is_caught(room: World) -> None:
    manifest = str(room.root / "room.manifest.json")
    for name, who in (("lift", "brand"), ("overlap", "publisher")):
        path = room.home(who) / "rooms" / ROOM / "receipts" / f"{room.runs[name]}.json"
        out = ok(sealroom("receipt", "verify", str(path), "--manifest", manifest,
                          home=room.root / "home-auditor")).out
        assert "VALID" in out
    receipts = room.home("brand") / "rooms" / ROOM / "receipts"
    data = json.loads((receipts / f"{room.runs['lift']}.json").read_text())
    payload = json.loads(base64.b64decode(data["receipt"]["payload"]))
    payload["privacy"]["epsilon_charged"] = "0.1"
    data["receipt"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    (room.root / "tampered.json").write_text(json.dumps(data))
    fails(sealroom("receipt", "verify", str(room.root / "tampered.json"), "--manifest",
                   manifest), "E_")


def test_log_export_is_verified_offline_by_an_auditor(room: World) -> None:
    export = room.root / "log-export.json"
    ok(room.cli("publisher", "log", "export", "-o", str(export)))
    manifest = str(room.root / "room.manifest.json")
    auditor = room.root / "home-auditor"
    out = ok(sealroom("log", "verify", "--from", str(export), "--manifest", manifest,
                      home=auditor)).out
    assert "log VERIFIED" in out and "no checkpoint stored here before" in out
    assert "extends the checkpoint seen before" in ok(sealroom(
        "log", "verify", "--from", str(export), "--manifest", manifest, home=auditor)).out
    data = json.loads(export.read_text())
    data["receipts"].pop(room.runs["lift"])
    (room.root / "no-receipt.json").write_text(json.dumps(data))
    fails(sealroom("log", "verify", "--from", str(room.root / "no-receipt.json"), "--manifest",
                   manifest, home=auditor), "E_LOG", 6)
    data = json.loads(export.read_text())
    data["entries"] = data["entries"][:-1]
    (room.root / "short.json").write_text(json.dumps(data))
    fails(sealroom("log", "verify", "--from", str(room.root / "short.json"), "--manifest",
                   manifest, home=auditor), "E_LOG", 6)


def test_log_rollback_and_fork_are_reported(room: World) -> None:
    db = room.server.data_dir / "sealroom.db"
    ok(room.cli("publisher", "log", "verify"))
    # the operator snapshots its database, the room moves on, the auditor sees the new head
    snapshot = room.root / "snapshot.db"
    with sqlite3.connect(db) as src, sqlite3.connect(snapshot) as dst:
        src.backup(dst)
    ok(room.cli("brand", "run", room.bundles["lift"]))
    ok(room.cli("brand", "run", room.bundles["lift"]))
    out = ok(room.cli("publisher", "log", "verify")).out
    assert "extends the checkpoint seen before" in out
    # ... then restores the old database: a rollback
    room.server.stop()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.copy(snapshot, db)
    room.server.start()
    res = fails(room.cli("publisher", "log", "verify"), "E_LOG", 6)
    assert "rollback" in res.err
    # ... and grows a different history past the old head: a fork
    for _ in range(3):
        ok(room.cli("brand", "run", room.bundles["lift"]))
    res = fails(room.cli("publisher", "log", "verify"), "E_LOG", 6)
    assert "fork" in res.err
