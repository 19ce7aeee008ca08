"""Fixtures of the coordinator tests: a throwaway PostgreSQL server, an app with the fake
launcher, parties, a fully signed room and helpers to seal, bundle and approve."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from coordinator.app import create_app
from coordinator.context import Services
from coordinator.settings import Settings
from coordinator.worker import ensure_platform_key
from sdk.client import Client
from sdk.party.statements import make_approval, make_bundle, sign_manifest
from sdk.protocol.clock import format_time
from sdk.protocol.dsse import Envelope, sign_envelope
from sdk.protocol.keys import PartyKey, Signer
from sdk.protocol.models import Manifest, Upload
from sdk.protocol.spec import OutputSpec
from tests.coordinator.fake import MEASUREMENT, FakeLauncher, seed
from tests.kit import acks, follow

ADMIN = "admin-secret-token"
BASE = "http://testserver"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- PostgreSQL ------------------------------------------------------------------------------


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for base in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (base / name).exists():
            return str(base / name)
    return None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server (skipped without ``initdb``, except under CI=true)."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL (initdb) is required under CI=true")
        pytest.skip("PostgreSQL is not installed (initdb missing)")
    root = Path(tempfile.mkdtemp(prefix="sealroom-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    subprocess.run([*prefix, initdb, "-D", str(data), "-A", "trust", "-U", "postgres",
                    "--no-sync"], check=True, capture_output=True)
    subprocess.run([*prefix, pg_ctl, "-D", str(data), "-l", str(root / "log"), "-w", "-o",
                    f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off",
                    "start"], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


# -- the room ----------------------------------------------------------------------------------


def party(name: str) -> PartyKey:
    return PartyKey.from_seeds(name, seed(f"{name}-s"), seed(f"{name}-e"))


def manifest_for(room_id: str, parties: list[PartyKey], platform_seed: bytes,
                 budget: str = "10") -> Manifest:
    def p(k: PartyKey) -> dict[str, Any]:
        return {**k.identity.to_dict(), "roles": ["data_owner", "analyst", "recipient"]}

    datasets = [{
        "name": name, "owner": owner.name,
        "schema": [{"name": "uid", "type": "string"}, {"name": "x", "type": "int"}],
        "id_column": "uid", "id_kind": "sha256", "min_group_size": 5,
        "epsilon_budget": budget, "delta_budget": "0", "allow_custom_code": True,
    } for name, owner in (("crm", parties[0]), ("visits", parties[-1]))]
    return Manifest.from_dict({
        "room_id": room_id, "version": 1, "parties": [p(k) for k in parties],
        "datasets": datasets,
        "workers": {"measurements": [MEASUREMENT.to_dict()], "providers": ["simulated"],
                    "platform_keys": [Signer.from_seed(platform_seed).public_key.hex()],
                    "allow_unisolated": True},
        "policies": {"min_group_size": 5, "max_runs": 100},
        "expires": "2099-01-01T00:00:00Z",
    })


AGG: dict[str, Any] = {
    "mode": "aggregate", "privacy_unit": "uid",
    "group_by": [{"column": "x", "domain": ["0", "1"]}], "measures": [],
}


@dataclass
class Env:
    """An entered TestClient over an app with the fake launcher, and a signed room."""

    tc: TestClient
    services: Services
    launcher: FakeLauncher
    tmp: Path
    alice: PartyKey = field(default_factory=lambda: party("alice"))
    bob: PartyKey = field(default_factory=lambda: party("bob"))
    carol: PartyKey = field(default_factory=lambda: party("carol"))
    room_id: str = "room1"
    budget: str = "10"

    def __post_init__(self) -> None:
        seed_ = self.services.settings.platform_key_file.read_bytes()
        self.manifest = manifest_for(self.room_id, [self.alice, self.bob], seed_, self.budget)
        self.manifest_env = sign_manifest(sign_manifest(self.manifest, self.alice), self.bob)
        self.digest = self.manifest_env.digest()
        self.other = manifest_for("other", [self.carol], seed_)
        self.other_env = sign_manifest(self.other, self.carol)

    def client(self, key: PartyKey | None = None, admin: bool = False) -> Client:
        return Client(BASE, key, ADMIN if admin else None, transport=self.tc._transport)

    def setup_room(self) -> None:
        self.client(self.alice).submit_manifest(self.manifest_env)
        self.client(self.carol).submit_manifest(self.other_env)
        self.client(admin=True).provision_worker()

    def attestation_digest(self) -> str:
        return self.client(admin=True).attestation().digest()

    def statement(self, owner: PartyKey, dataset: str, data: bytes, version: int = 1,
                  *, digest: str | None = None, size: int | None = None,
                  created_at: str | None = None) -> Envelope:
        upload = Upload(
            room_id=self.room_id, manifest_digest=self.digest, dataset=dataset, version=version,
            schema_digest=self.manifest.dataset(dataset).schema_digest(), row_count=10,
            ciphertext_digest=digest or hashlib.sha256(data).hexdigest(),
            ciphertext_size=len(data) if size is None else size,
            key_commitment="ab" * 32, attestation_digest=self.attestation_digest(),
            created_at=created_at or format_time(datetime.now(UTC)))
        return sign_envelope(Upload.KIND, upload.to_dict(), [owner.signer])

    def upload(self, owner: PartyKey, dataset: str, data: bytes, version: int = 1,
               created_at: str | None = None) -> dict[str, Any]:
        path = self.tmp / f"{dataset}-{version}-{hashlib.sha256(data).hexdigest()[:8]}.sealed"
        path.write_bytes(data)
        statement = self.statement(owner, dataset, data, version, created_at=created_at)
        return self.client(owner).upload(self.room_id, statement, path)

    def upload_both(self) -> None:
        self.upload(self.alice, "crm", b"crm-ciphertext" * 100)
        self.upload(self.bob, "visits", b"visits-ciphertext" * 100)

    def bundle(self, epsilon: str | None = "1", recipients: tuple[str, ...] = ("alice",),
               sequence: int = 1, author: PartyKey | None = None) -> Envelope:
        spec = dict(AGG)
        if epsilon is not None:
            spec["dp"] = {"epsilon": epsilon}
        return make_bundle(author or self.alice, self.manifest, self.digest, sequence=sequence,
                           title="t", purpose="p", kind="sql", code="SELECT 1",
                           output=OutputSpec.from_dict(spec), inputs=follow("crm", "visits"),
                           recipients=list(recipients))

    def approve(self, bundle: Envelope) -> None:
        for key in (self.alice, self.bob):
            self.client(key).submit_approval(
                self.room_id, make_approval(key, self.manifest, self.digest, bundle.digest(),
                                            follow_latest=acks(bundle, key, self.manifest)))

    def ready_bundle(self, **kw: Any) -> Envelope:
        bundle = self.bundle(**kw)
        self.client(self.alice).submit_bundle(self.room_id, bundle)
        self.approve(bundle)
        return bundle


def make_settings(tmp: Path, **kw: Any) -> Settings:
    values: dict[str, Any] = {"data_dir": tmp / "data", "admin_token": ADMIN,
                              "launcher": "process", "poll_interval_s": 0.05,
                              "public_origin": BASE}
    values.update(kw)
    settings = Settings(**values)
    ensure_platform_key(settings.platform_key_file)
    return settings


@pytest.fixture()
def make_env(tmp_path: Path) -> Iterator[Any]:
    """Factory: ``make_env(mode="ok", **settings)`` → an entered :class:`Env`."""
    stack: list[TestClient] = []

    def factory(mode: str = "ok", budget: str = "10", **kw: Any) -> Env:
        launcher = FakeLauncher(mode)
        app = create_app(make_settings(tmp_path, **kw), launcher)
        tc = TestClient(app, base_url=BASE, raise_server_exceptions=False)
        tc.__enter__()
        stack.append(tc)
        env = Env(tc, app.state.services, launcher, tmp_path, budget=budget)
        return env

    yield factory
    for tc in stack:
        tc.__exit__(None, None, None)


@pytest.fixture()
def env(make_env: Any) -> Env:
    e: Env = make_env()
    e.setup_room()
    return e


def wait_until(predicate: Any, timeout: float = 30.0) -> None:
    """Poll ``predicate`` (not a timing assertion: only a bound on waiting)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


def answers_health(url: str, proc: subprocess.Popen[bytes], detail: Any = "server exited",
                   timeout: float = 1.0) -> bool:
    """Whether the coordinator process at ``url`` answers ``/healthz`` (it must still run;
    ``detail``, or its result when callable, explains an early exit)."""
    import httpx

    assert proc.poll() is None, detail() if callable(detail) else detail
    try:
        return httpx.get(f"{url}/healthz", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Terminate a server process, killing it when it does not exit within ``timeout``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


def expired_approval(key: PartyKey, manifest: Manifest, digest: str, bundle: str) -> Envelope:
    from sdk.protocol.models import Approval

    issued = datetime.now(UTC) - timedelta(days=3)
    approval = Approval(room_id=manifest.room_id, manifest_digest=digest, bundle_digest=bundle,
                        party=key.name, decision="approve", reason="",
                        issued_at=format_time(issued),
                        expires=format_time(issued + timedelta(days=1)))
    return sign_envelope(Approval.KIND, approval.to_dict(), [key.signer])
