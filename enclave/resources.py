"""Sizing the keyless runner from what the worker was given (container cgroup or host)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from enclave.runner import RunnerLimits

if TYPE_CHECKING:  # pragma: no cover
    from enclave.runner.client import Runner

GIB = 1 << 30
SUPERVISOR_HEADROOM = 1 * GIB  # the supervisor keeps the decrypted inputs while the runner works
_CGROUP_FILES = (
    Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1
)


def memory_available() -> int:
    """The memory this worker may use: its cgroup limit, else the machine's physical memory."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in _CGROUP_FILES:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < physical:
            return int(text)
    return physical


def runner_limits(input_bytes: int = 0) -> RunnerLimits:
    """Limits for one runner: address space = available memory minus the supervisor's share
    (the decrypted inputs plus headroom), at least 1 GiB; threads = CPUs this process may use.

    RLIMIT_AS counts address space, not resident memory, so it is a ceiling the cgroup (in a
    container) or the machine enforces first; its job is to turn runaway allocations into a
    clean ``E_RESOURCE`` rather than an OOM kill of the whole worker.
    """
    available = memory_available()
    runner = max(GIB, available - SUPERVISOR_HEADROOM - input_bytes)
    threads = max(1, min(len(os.sched_getaffinity(0)), 8))
    return RunnerLimits(
        cpu_seconds=float(int(os.environ.get("SEALROOM_RUNNER_CPU_SECONDS", "600"))),
        wall_seconds=float(int(os.environ.get("SEALROOM_RUNNER_WALL_SECONDS", "300"))),
        memory_bytes=runner,
        threads=threads,
        spill_bytes=int(os.environ.get("SEALROOM_RUNNER_SPILL_BYTES", "0")),
    )


def start_runner(root: Path) -> Runner | None:
    """Start the keyless runner for the job in ``root`` now, so its engines load while the
    supervisor imports, verifies and decrypts; it receives nothing until the run step. Its
    memory is sized from the sealed files present (an upper bound of their plaintext).
    ``None`` when it cannot start (the run step then starts one and reports what fails)."""
    from enclave.runner.client import Runner

    try:
        return Runner(runner_limits(sealed_input_bytes(root)), prewarm=True)
    except OSError:
        return None


def sealed_input_bytes(root: Path) -> int:
    """The sealed inputs' bytes in the job directory ``root`` (an upper bound of their
    plaintext); 0 before the job's files are there.

    Raises ``OSError`` when the directory cannot be read."""
    from sdk.protocol import jobdir as layout

    return sum(p.stat().st_size for p in (root / layout.DATA_DIR).glob(f"*{layout.SEALED_SUFFIX}"))
