"""Helpers for the CLI tests: run ``sealroom`` as a real process and check its promises."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    code: int
    out: str
    err: str


def sealroom(*args: str, home: Path | None = None, env: dict[str, str] | None = None,
             cwd: Path | None = None, timeout: float = 600) -> Result:
    """Run ``python -m sdk.cli ARGS`` as a separate process (the installed entry point)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SEALROOM_")}
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    full_env["PYTHONPATH"] = path
    if home is not None:
        full_env["SEALROOM_HOME"] = str(home)
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "sdk.cli", *args], capture_output=True,
                          text=True, env=full_env, cwd=cwd or REPO, timeout=timeout, check=False)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def ok(result: Result) -> Result:
    assert result.code == 0, f"exit {result.code}\nstdout:\n{result.out}\nstderr:\n{result.err}"
    return result


def fails(result: Result, code: str, exit_code: int | None = None) -> Result:
    """A failure: non-zero exit, exactly one line on stderr naming ``code``, no traceback."""
    assert result.code != 0, result.out
    lines = [line for line in result.err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, result.err
    assert code in errors[0], result.err
    assert "Traceback" not in result.err
    if exit_code is not None:
        assert result.code == exit_code, (result.code, result.err)
    return result


@pytest.fixture()
def run_cli() -> object:
    return sealroom


class CoordinatorProcess:
    """``sealroom coordinator serve --launcher process`` on a free loopback port, with an admin
    token, as a child process (stop it with :meth:`stop`)."""

    def __init__(self, data_dir: Path, admin_token: str) -> None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.data_dir = data_dir
        self.admin_token = admin_token
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir.parent / f"coordinator-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> CoordinatorProcess:
        import time

        import httpx

        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEALROOM_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        env["SEALROOM_ADMIN_TOKEN"] = self.admin_token
        with open(self.log, "ab") as sink:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sdk.cli", "coordinator", "serve", "--data-dir",
                 str(self.data_dir), "--port", str(self.port), "--launcher", "process",
                 "--public-origin", self.url],
                stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        for _ in range(600):
            assert self.proc.poll() is None, self.log.read_text(errors="replace")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"coordinator did not start:\n{self.log.read_text(errors='replace')}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
