"""A coordinator started by a benchmark: wait until it answers /healthz."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def wait_healthy(proc: subprocess.Popen[bytes], url: str, log: Path,
                 timeout_s: float = 60.0) -> None:
    """Return once ``url``/healthz answers 200; raise ``RuntimeError`` (with the log's tail)
    when the server exits, or kill it when it does not answer within ``timeout_s``."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the coordinator exited: {log.read_text()[-800:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    raise RuntimeError("the coordinator did not answer /healthz within a minute")
