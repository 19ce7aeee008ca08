"""``ProcessLauncher``: the worker as a plain subprocess. UNISOLATED — for development only.

It keeps the job protocol (same job directory, same args, secrets in ``job_dir/secrets/``,
stdout as the only result) but gives no isolation at all: the worker runs as the coordinator's
user, with its network and its filesystem. Every result says ``isolation="none"``; the
attestation and every receipt must say so too, and a room whose manifest does not explicitly
accept unisolated workers must refuse it (that rule lives with the caller).

Arguments equal to ``/job`` or under ``/job/`` are rewritten to the real job directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

from coordinator.launchers.base import (
    DEFAULT_DEADLINE_S,
    DEFAULT_MAX_OUTPUT_BYTES,
    JOB_MOUNT,
    Isolation,
    Launcher,
    LaunchResult,
    prepare_job_dir,
    remove_secrets,
    settings_digest,
    write_secrets,
)
from coordinator.launchers.errors import OutputLimitError
from sdk.protocol.jobdir import ISOLATION_DIGEST_SECRET

UNISOLATED_SETTINGS: dict[str, object] = {"isolation": "none", "launcher": "process"}


def rewrite_job_paths(args: Sequence[str], job_dir: Path) -> list[str]:
    """Replace the container path ``/job`` (and ``/job/...``) in ``args`` with ``job_dir``."""
    out = []
    for arg in args:
        if arg == JOB_MOUNT:
            out.append(str(job_dir))
        elif arg.startswith(JOB_MOUNT + "/"):
            out.append(str(job_dir / arg[len(JOB_MOUNT) + 1:]))
        else:
            out.append(arg)
    return out


class ProcessLauncher(Launcher):
    """Runs ``[sys.executable, "-m", "enclave", *args]`` with the job directory. Unisolated.

    ``_entrypoint`` replaces the command prefix, for tests only.
    """

    isolation: ClassVar[Isolation] = "none"

    def __init__(self, *, python: str = sys.executable,
                 max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
                 extra_env: Mapping[str, str] | None = None,
                 _entrypoint: Sequence[str] | None = None) -> None:
        self.python = python
        self.max_output_bytes = max_output_bytes
        self.extra_env = dict(extra_env or {})
        self._entrypoint = list(_entrypoint) if _entrypoint is not None else None

    def command(self, job_dir: Path, args: Sequence[str]) -> list[str]:
        """The full command line for ``args`` on ``job_dir``."""
        prefix = self._entrypoint or [self.python, "-m", "enclave"]
        return [*prefix, *rewrite_job_paths(args, job_dir)]

    def environment(self) -> dict[str, str]:
        """A minimal environment: no coordinator settings, tokens or database URLs leak in."""
        env = {"PATH": os.defpath, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
        env.update(self.extra_env)
        return env

    def launch(
        self,
        job_dir: Path,
        args: Sequence[str],
        secrets: Mapping[str, bytes] | None = None,
        *,
        run_id: str | None = None,
        deadline_s: float = DEFAULT_DEADLINE_S,
    ) -> LaunchResult:
        """See :meth:`Launcher.launch`. Secrets are written before start (nothing to inspect).

        Raises OutputLimitError (E_RESOURCE) when stdout exceeds ``max_output_bytes``.
        """
        job_path = prepare_job_dir(job_dir)
        run_id = run_id or uuid.uuid4().hex
        try:
            digest = settings_digest(UNISOLATED_SETTINGS).encode()
            write_secrets(
                job_path, {**(secrets or {}), ISOLATION_DIGEST_SECRET: digest}, uid=None, gid=None
            )
            return self._run(job_path, args, run_id, deadline_s)
        finally:
            remove_secrets(job_path)

    def _run(self, job_path: Path, args: Sequence[str], run_id: str,
             deadline_s: float) -> LaunchResult:
        started = time.monotonic()
        proc = subprocess.Popen(
            self.command(job_path, args), cwd=job_path, env=self.environment(),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            start_new_session=True)
        timed_out = False
        try:
            stdout, _ = proc.communicate(timeout=deadline_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            stdout, _ = proc.communicate()
        finally:
            if proc.poll() is None:
                _kill_group(proc)
                proc.wait()
        if len(stdout) > self.max_output_bytes:
            raise OutputLimitError(f"worker output exceeded {self.max_output_bytes} bytes")
        return LaunchResult(
            exit_code=proc.returncode, stdout=stdout, oom_killed=False, timed_out=timed_out,
            isolation=self.isolation, settings_digest=settings_digest(UNISOLATED_SETTINGS),
            duration=time.monotonic() - started, run_id=run_id, image_id=None,
            settings=dict(UNISOLATED_SETTINGS))


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
