"""Against a real uvicorn server process over HTTP: the API, and crash safety (kill -9 in the
middle of an upload and of a run, then restart)."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from coordinator.worker import ensure_platform_key
from sdk.client import Client
from sdk.errors import NetworkError
from sdk.party.statements import make_approval, make_bundle, sign_manifest
from sdk.protocol.dsse import Envelope
from tests.coordinator.conftest import (
    ADMIN,
    AGG,
    answers_health,
    free_port,
    manifest_for,
    party,
    wait_until,
)
from tests.kit import acks, follow

REPO = Path(__file__).resolve().parents[2]


class Server:
    """A coordinator process on a free port; ``kill()`` is SIGKILL (a crash)."""

    def __init__(self, data: Path, mode: str = "ok", real: bool = False) -> None:
        self.data, self.port = data, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "tests.coordinator.server_main", "--data-dir", str(data),
                "--port", str(self.port), "--mode", mode, *(["--real"] if real else [])]
        self.proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_until(self._up, timeout=60)

    def _up(self) -> bool:
        return answers_health(self.url, self.proc)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture()
def data_dir(tmp_path: Path) -> Iterator[Path]:
    data = tmp_path / "data"
    data.mkdir()
    ensure_platform_key(data / "platform.key")
    yield data


class Room:
    """Parties and statements for a room on a remote coordinator."""

    def __init__(self, data: Path, budget: str = "10") -> None:
        self.alice, self.bob = party("alice"), party("bob")
        self.manifest = manifest_for("room1", [self.alice, self.bob],
                                     (data / "platform.key").read_bytes(), budget)
        self.env = sign_manifest(sign_manifest(self.manifest, self.alice), self.bob)
        self.digest = self.env.digest()

    def setup(self, url: str) -> None:
        Client(url, self.alice).submit_manifest(self.env)
        Client(url, admin_token=ADMIN).provision_worker()

    def statement(self, url: str, key: Any, dataset: str, data: bytes) -> Envelope:
        from datetime import UTC, datetime

        from sdk.protocol.clock import format_time
        from sdk.protocol.dsse import sign_envelope
        from sdk.protocol.models import Upload

        upload = Upload("room1", self.digest, dataset, 1,
                        self.manifest.dataset(dataset).schema_digest(), 1,
                        hashlib.sha256(data).hexdigest(), len(data), "ab" * 32,
                        Client(url).attestation().digest(), format_time(datetime.now(UTC)))
        return sign_envelope(Upload.KIND, upload.to_dict(), [key.signer])

    def ready(self, url: str, tmp: Path) -> Envelope:
        for key, name in ((self.alice, "crm"), (self.bob, "visits")):
            data = os.urandom(200_000)
            path = tmp / f"{name}.sealed"
            path.write_bytes(data)
            seen: list[int] = []
            Client(url, key).upload("room1", self.statement(url, key, name, data), path,
                                    progress=lambda done, total: seen.append(done))
            assert seen[-1] == len(data)
        from sdk.protocol.spec import OutputSpec

        bundle = make_bundle(self.alice, self.manifest, self.digest, sequence=1, title="t",
                             purpose="p", kind="sql", code="SELECT 1",
                             output=OutputSpec.from_dict({**AGG, "dp": {"epsilon": "1"}}),
                             inputs=follow("crm", "visits"), recipients=["alice"])
        Client(url, self.alice).submit_bundle("room1", bundle)
        for key in (self.alice, self.bob):
            Client(url, key).submit_approval("room1", make_approval(
                key, self.manifest, self.digest, bundle.digest(),
                follow_latest=acks(bundle, key, self.manifest)))
        return bundle


def test_api_over_http(data_dir: Path, tmp_path: Path) -> None:
    server = Server(data_dir)
    try:
        room = Room(data_dir)
        room.setup(server.url)
        bundle = room.ready(server.url, tmp_path)
        alice = Client(server.url, room.alice)
        run = alice.create_run("room1", bundle.digest(), idempotency_key="x")
        assert alice.wait_run("room1", run["run_id"], timeout=60)["status"] == "succeeded"
        assert alice.output("room1", run["run_id"]).startswith(b"sealed-output-for-alice")
        text = Client(server.url, admin_token=ADMIN).metrics()
        assert "# TYPE sealroom_runs gauge" in text
        r = httpx.get(f"{server.url}/v1/rooms/room1")
        assert r.status_code == 401 and r.json()["error"]["code"] == "E_AUTH"
    finally:
        server.stop()
    with pytest.raises(NetworkError):
        Client(server.url).health()


def _half_upload(url: str, path: str, token: str, total: int, sent: bytes) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    head = (f"PUT {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {total}\r\n\r\n")
    sock.sendall(head.encode() + sent)
    return sock


def test_kill_mid_upload_leaves_no_partial_blob(data_dir: Path) -> None:
    server = Server(data_dir)
    room = Room(data_dir)
    room.setup(server.url)
    data = os.urandom(8 * 1024 * 1024)
    alice = Client(server.url, room.alice)
    stmt = room.statement(server.url, room.alice, "crm", data)
    info = alice.upload_statement("room1", stmt)
    path = f"/v1/rooms/room1/uploads/{info['digest']}/data"
    sock = _half_upload(server.url, path, alice.authenticate(), len(data), data[:5_000_000])
    blobs = data_dir / "blobs"
    wait_until(lambda: any(p.name.startswith(".tmp-") for p in blobs.rglob("*")))
    server.kill()
    sock.close()
    digest = hashlib.sha256(data).hexdigest()
    assert not any(p.name == digest for p in blobs.rglob("*"))
    server = Server(data_dir)
    try:
        assert not any(p.name.startswith(".tmp-") for p in blobs.rglob("*"))  # cleaned
        alice = Client(server.url, room.alice)
        assert not alice.uploads("room1")[0]["complete"]
        # a truncated body (client gone mid-stream) publishes nothing either
        sock = _half_upload(server.url, path, alice.authenticate(), len(data), data[:1000])
        sock.close()
        assert not alice.uploads("room1")[0]["complete"]
        # the retry completes; nothing was lost
        file = data_dir.parent / "crm.sealed"
        file.write_bytes(data)
        assert alice.upload("room1", stmt, file)["complete"] is True
        assert any(p.name == digest for p in blobs.rglob("*"))
        assert not any(p.name.startswith(".tmp-") for p in blobs.rglob("*"))
    finally:
        server.stop()


def test_kill_mid_run_reconciles_to_one_terminal_state(data_dir: Path, tmp_path: Path) -> None:
    server = Server(data_dir, mode="hang")
    room = Room(data_dir)
    room.setup(server.url)
    bundle = room.ready(server.url, tmp_path)
    alice = Client(server.url, room.alice)
    first = alice.create_run("room1", bundle.digest(), idempotency_key="first")
    wait_until(lambda: alice.run("room1", first["run_id"])["status"] == "running")
    second = alice.create_run("room1", bundle.digest(), idempotency_key="second")
    assert alice.run("room1", second["run_id"])["status"] == "queued"  # same room: waits
    server.kill()
    server = Server(data_dir, mode="ok")
    try:
        alice = Client(server.url, room.alice)
        done = alice.wait_run("room1", first["run_id"], timeout=60)
        assert done["status"] == "failed" and done["error_code"] == "E_INTERNAL"
        assert "interrupted" in done["message"]
        # the queued run was not lost: it runs now, on the unchanged log
        later = alice.wait_run("room1", second["run_id"], timeout=60)
        assert later["status"] == "succeeded"
        # the retry with the same key is still the same (terminal) run
        assert alice.create_run("room1", bundle.digest(), idempotency_key="first")["run_id"] \
            == first["run_id"]
        states = [r["status"] for r in alice.runs("room1")]
        assert sorted(states) == ["failed", "succeeded"]
        assert len(alice.log_entries("room1")) == alice.receipt_info(
            "room1", second["run_id"]).log_index + 1
    finally:
        server.stop()
    time.sleep(0)  # nothing left running
