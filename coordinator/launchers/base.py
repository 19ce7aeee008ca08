"""The launcher contract: how the coordinator starts one worker run and what it gets back.

The job protocol (fixed):

* ``job_dir`` holds the job's JSON files and ciphertexts. A container launcher mounts it
  read-only at ``/job`` (``JOB_MOUNT``), so ``args`` name paths under ``/job``
  (e.g. ``["run", "--job", "/job"]``).
* ``secrets`` are files written into ``job_dir/secrets/`` only once the launcher has checked
  the worker's isolation (for containers: after ``inspect`` of the created container, before
  ``start``). They are removed again when the launch ends, whatever happened.
* The worker's only result channel is its stdout, returned whole; stderr is never returned
  (it could carry data) and the exit code, an OOM kill and the wall-clock deadline are mapped
  onto :class:`LaunchResult`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from coordinator.launchers.errors import JobDirError, ResourceError
from sdk.protocol import jobdir as layout
from sdk.protocol.canonical import canonical_json

Isolation = Literal["container", "none"]

JOB_MOUNT = "/job"
WORKER_UID = 65534
WORKER_GID = 65534
DEFAULT_DEADLINE_S = 600.0
DEFAULT_MAX_OUTPUT_BYTES = 256 * 1024 * 1024
# The measurement's ``image_id`` of a worker without isolation (there is no image to measure).
UNISOLATED_MEASUREMENT = "unisolated"
_SECRET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class LaunchResult:
    """What one worker run produced. ``stdout`` is the worker's whole result stream."""

    exit_code: int
    stdout: bytes = field(repr=False)
    oom_killed: bool
    timed_out: bool
    isolation: Isolation
    settings_digest: str
    duration: float
    run_id: str = ""
    image_id: str | None = None  # the Docker image id run (the engine's handle), if any
    settings: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """True when the worker exited 0 on its own (no deadline, no OOM kill)."""
        return self.exit_code == 0 and not self.timed_out and not self.oom_killed

    def resource_error(self) -> ResourceError | None:
        """``E_RESOURCE`` for a deadline or an OOM kill (one terminal state each), else None."""
        if self.timed_out:
            return ResourceError("worker stopped at its wall-clock deadline")
        if self.oom_killed:
            return ResourceError("worker killed at its memory limit")
        return None


def settings_digest(settings: Mapping[str, Any]) -> str:
    """Hex SHA-256 of the canonical JSON (RFC 8785) of the inspected isolation settings."""
    return hashlib.sha256(canonical_json(dict(settings))).hexdigest()


class Launcher(ABC):
    """Starts one worker run on a job directory and returns its :class:`LaunchResult`."""

    isolation: ClassVar[Isolation]

    def measurement_id(self) -> str:
        """The ``image_id`` of the worker's measurement: what its attestation names and what
        manifests pin. ``unisolated`` for a launcher without isolation; a container launcher
        returns the tree digest of its image (``sha256:<hex>``, :mod:`sdk.protocol.treedigest`).

        Raises ``E_CONFIG`` errors when the image cannot be measured.
        """
        if self.isolation == "none":
            return UNISOLATED_MEASUREMENT
        raise NotImplementedError(f"{type(self).__name__} must say what it runs")

    def close(self) -> None:  # noqa: B027 - most launchers hold nothing between runs
        """Release what the launcher keeps between runs (a container waiting for the next
        run). Never raises."""

    def ran_measurement(self, result: LaunchResult) -> str:
        """The ``image_id`` of the measurement of the worker that produced ``result`` (for a
        container: of the image it was created from, which may differ from the one measured
        before the launch if the image's tag moved in between)."""
        return self.measurement_id()

    @abstractmethod
    def launch(
        self,
        job_dir: Path,
        args: Sequence[str],
        secrets: Mapping[str, bytes] | None = None,
        *,
        run_id: str | None = None,
        deadline_s: float = DEFAULT_DEADLINE_S,
    ) -> LaunchResult:
        """Run the worker with ``args`` on ``job_dir``; hand over ``secrets`` once isolated.

        Returns the result even when the worker failed, timed out or was OOM-killed.
        Raises ``E_CONFIG`` errors when the isolation cannot be established (nothing is handed
        over then), and ``E_RESOURCE`` when the output exceeds the launcher's cap.
        """


def prepare_job_dir(job_dir: Path) -> Path:
    """Resolve ``job_dir`` and make sure ``secrets/`` exists and is empty.

    Raises JobDirError when the directory is missing or already holds secret files (they must
    only ever be written by the launcher, after the isolation check).
    """
    path = Path(job_dir).resolve()
    if not path.is_dir():
        raise JobDirError(f"job directory {path} does not exist")
    secrets_dir = path / layout.SECRETS_DIR
    if secrets_dir.is_symlink() or (secrets_dir.exists() and not secrets_dir.is_dir()):
        raise JobDirError("job secrets path is not a directory")
    secrets_dir.mkdir(mode=0o755, exist_ok=True)
    if any(secrets_dir.iterdir()):
        raise JobDirError("job secrets directory is not empty before launch")
    return path


def _secret_modes(uid: int | None, gid: int | None) -> tuple[tuple[int, int] | None, int, int]:
    """(owner to chown to or None, file mode, directory mode) for handing secrets to uid/gid."""
    if uid is None:  # the worker is this process's own user (process launcher)
        return None, 0o400, 0o700
    if os.geteuid() == 0:
        return (uid, -1 if gid is None else gid), 0o400, 0o500
    if gid is not None and gid in os.getgroups():
        return (-1, gid), 0o440, 0o750
    return None, 0o444, 0o755


def write_secrets(job_dir: Path, secrets: Mapping[str, bytes], *, uid: int | None = WORKER_UID,
                  gid: int | None = WORKER_GID) -> None:
    """Write each secret as ``job_dir/secrets/<name>``, readable by the worker user.

    As root, files and directory are given to ``uid``/``gid`` (0400, directory 0500). A
    non-root coordinator that is a member of group ``gid`` gives them to that group (0440,
    0750). Otherwise (no uid: the worker is this user; or no way to hand over ownership) the
    files are 0400 for this user, or, as a last resort, world-readable (0444) — deployments
    should avoid that case (see docs/operators.md).
    Raises JobDirError for a name that is not a plain file name.
    """
    secrets_dir = job_dir / layout.SECRETS_DIR
    owner, file_mode, dir_mode = _secret_modes(uid, gid)
    for name, data in secrets.items():
        if not _SECRET_NAME.match(name):
            raise JobDirError("secret names must be plain file names")
        target = secrets_dir / name
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o400)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        if owner is not None:
            os.chown(target, *owner)
        os.chmod(target, file_mode)
    if secrets:
        if owner is not None:
            os.chown(secrets_dir, *owner)
        os.chmod(secrets_dir, dir_mode)


def remove_secrets(job_dir: Path) -> None:
    """Delete every file under ``job_dir/secrets/`` and leave the directory empty. Never raises."""
    secrets_dir = job_dir / layout.SECRETS_DIR
    try:
        if secrets_dir.is_dir() and not secrets_dir.is_symlink():
            if os.geteuid() == 0:
                os.chown(secrets_dir, os.getuid(), os.getgid())
            os.chmod(secrets_dir, 0o755)  # noqa: S103 - the worker user must traverse it
            for entry in secrets_dir.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
    except OSError:
        pass
