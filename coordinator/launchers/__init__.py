"""Worker launchers: start one worker run on a job directory and collect its result.

* :class:`DockerLauncher` — a fresh hardened container per run (production).
* :class:`ProcessLauncher` — a plain subprocess, unisolated (development only).

The Docker SDK is imported lazily, so importing this package needs no engine.
"""

from coordinator.launchers.base import JOB_MOUNT, Isolation, Launcher, LaunchResult
from coordinator.launchers.docker import DockerLauncher
from coordinator.launchers.errors import (
    EngineUnavailableError,
    HardeningError,
    JobDirError,
    OutputLimitError,
)
from coordinator.launchers.process import ProcessLauncher
from coordinator.launchers.profile import DEFAULT_PROFILE, HardeningProfile
from coordinator.launchers.reaper import reap_orphans

__all__ = [
    "DEFAULT_PROFILE",
    "JOB_MOUNT",
    "DockerLauncher",
    "EngineUnavailableError",
    "HardeningError",
    "HardeningProfile",
    "Isolation",
    "JobDirError",
    "LaunchResult",
    "Launcher",
    "OutputLimitError",
    "ProcessLauncher",
    "reap_orphans",
]
