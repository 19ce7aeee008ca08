"""Start-to-result time of a trivial worker job: DockerLauncher vs ProcessLauncher, same run.

Each launcher runs the same tiny Python job (and, with --payload-mib, a job that hashes a file
of that size from the job directory) ``--repeat`` times after one warm-up. Prints the median
and p90 per launcher, the seconds the hardened container adds, and the ratio.

    .venv/bin/python bench/launcher.py [--repeat 10] [--image sealroom-worker:latest]
                                       [--payload-mib 256] [--enclave]

``--enclave`` also times the production entrypoint (``python -m enclave --help``) when the
enclave package has a ``__main__``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from coordinator.launchers import DockerLauncher, LaunchResult, ProcessLauncher

TRIVIAL = "import sys; sys.stdout.write('ok')"
HASH_FILE = ("import hashlib, sys; h = hashlib.sha256(); f = open(sys.argv[1], 'rb')\n"
             "for b in iter(lambda: f.read(1 << 20), b''): h.update(b)\n"
             "sys.stdout.write(h.hexdigest())")
GOAL_ADDED_S = 0.4


def timed(run: Callable[[], LaunchResult], repeat: int) -> list[float]:
    """Wall-clock seconds of ``repeat`` runs (after one warm-up); each must exit 0."""
    run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
        if result.exit_code != 0:
            raise SystemExit(f"bench job failed with exit code {result.exit_code}")
    return times


def p90(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.9 * len(values)) - 1)]


def compare(name: str, docker_run: Callable[[], LaunchResult],
            process_run: Callable[[], LaunchResult], repeat: int) -> float:
    """Print one comparison row; return the median seconds the container adds."""
    d = timed(docker_run, repeat)
    p = timed(process_run, repeat)
    dm, pm = statistics.median(d), statistics.median(p)
    added = dm - pm
    print(f"{name:<28} docker median {dm:7.3f}s p90 {p90(d):7.3f}s | process median "
          f"{pm:7.3f}s p90 {p90(p):7.3f}s | added {added:+.3f}s | ratio {dm / pm:5.1f}x")
    return added


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--image", default=os.environ.get("SEALROOM_WORKER_IMAGE",
                                                          "sealroom-worker:latest"))
    parser.add_argument("--payload-mib", type=int, default=256)
    parser.add_argument("--enclave", action="store_true")
    args = parser.parse_args()

    container_py = ["/opt/venv/bin/python", "-I"]
    with tempfile.TemporaryDirectory(prefix="sealroom-bench-") as tmp:
        job = Path(tmp) / "job"
        job.mkdir()
        job.chmod(0o755)
        print(f"launcher bench: image {args.image}, {args.repeat} runs each after a warm-up")
        docker_trivial = DockerLauncher(args.image, _entrypoint=[*container_py, "-c", TRIVIAL])
        process_trivial = ProcessLauncher(_entrypoint=[sys.executable, "-I", "-c", TRIVIAL])
        added = compare("trivial job", lambda: docker_trivial.launch(job, []),
                        lambda: process_trivial.launch(job, []), args.repeat)
        if args.payload_mib:
            blob = job / "payload.bin"
            with blob.open("wb") as fh:
                for _ in range(args.payload_mib):
                    fh.write(os.urandom(1 << 20))
            blob.chmod(0o644)
            docker_hash = DockerLauncher(args.image, _entrypoint=[*container_py, "-c", HASH_FILE])
            process_hash = ProcessLauncher(_entrypoint=[sys.executable, "-I", "-c", HASH_FILE])
            compare(f"hash {args.payload_mib} MiB from /job",
                    lambda: docker_hash.launch(job, ["/job/payload.bin"]),
                    lambda: process_hash.launch(job, ["/job/payload.bin"]), args.repeat)
            blob.unlink()
        if args.enclave and importlib.util.find_spec("enclave.__main__") is not None:
            docker_enclave, process_enclave = DockerLauncher(args.image), ProcessLauncher()
            compare("python -m enclave --help",
                    lambda: docker_enclave.launch(job, ["--help"]),
                    lambda: process_enclave.launch(job, ["--help"]), args.repeat)
    verdict = "within" if added <= GOAL_ADDED_S else "OVER"
    print(f"container start adds {added:.3f}s per run: {verdict} the {GOAL_ADDED_S}s goal")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
