"""A worker started ahead of its job (``python -m enclave run --wait-for-go``).

The launcher starts the container before a run needs it. The worker then loads what every run
loads (the supervisor's modules, and the keyless runner with its engines), and waits for the
launcher's go file (:data:`sdk.protocol.jobdir.GO_FILE`), which is written after the job files
and the secrets. Nothing of the job exists before that, so a worker started early has seen no
job, no key and no data: one container still serves exactly one run.
"""

from __future__ import annotations

import importlib
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from sdk.protocol import jobdir as layout

IDLE_LIMIT_S = 3600.0
"""A worker nobody used within this time exits (its launcher has gone)."""
POLL_S = 0.01

_PRELOAD = ("enclave.job", "enclave.state", "enclave.release", "enclave.privacy.aggregate",
            "enclave.privacy._post", "enclave.planrun", "pyarrow", "pyarrow.parquet",
            "cryptography.hazmat.primitives.ciphers.aead")


def wait_for_go(job: Path, runner: Any = None, *, idle_limit_s: float = IDLE_LIMIT_S) -> bool:
    """Load the modules a run needs, then wait until ``job/GO_FILE`` exists; True then (the
    runner, when given, counts its deadline and sizes its memory from that moment and the
    sealed inputs), False after ``idle_limit_s`` without one."""
    for module in _PRELOAD:
        with suppress(Exception):  # the real import, in the run, reports any problem
            importlib.import_module(module)
    go = job / layout.GO_FILE
    deadline = time.monotonic() + idle_limit_s
    while not go.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    if runner is not None:
        from enclave.resources import runner_limits, sealed_input_bytes

        try:
            sealed = sealed_input_bytes(job)
        except OSError:
            sealed = 0  # the run itself reports the unreadable job
        runner.begin(runner_limits(sealed).memory_bytes)
    return True


__all__ = ["IDLE_LIMIT_S", "wait_for_go"]
