"""Small helpers of the benchmarks that measure bytes: data files, peak RSS, child phases."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / ".data"
OUT = ROOT / "bench" / "out"
MIB = 1 << 20


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def random_file(size_mib: int, name: str = "plain") -> Path:
    """A file of ``size_mib`` MiB of random bytes in bench/.data/, written once."""
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f"{name}-{size_mib}MiB.bin"
    if path.exists() and path.stat().st_size == size_mib * MIB:
        return path
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        for _ in range(size_mib):
            f.write(os.urandom(MIB))
    tmp.replace(path)
    return path


def run_child(script: Path, args: list[str], timeout: float = 3600) -> dict[str, Any]:
    """Run ``script`` with ``args`` in a fresh interpreter; it prints one JSON object."""
    proc = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{script.name} {' '.join(args)} failed:\n{proc.stderr.decode()[-3000:]}"
        )
    doc: dict[str, Any] = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    return doc


def mb_per_s(size_bytes: int, seconds: float) -> float:
    """Throughput in MB/s (10**6 bytes, as the figures in the docs)."""
    return size_bytes / seconds / 1e6 if seconds > 0 else float("inf")


def write_json(name: str, doc: dict[str, Any]) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / name
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path
