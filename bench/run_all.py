"""Run every benchmark and write docs/benchmarks.md with their output and the machine.

    python bench/run_all.py [--quick] [--slow] [--only NAME ...]

Each benchmark prints ratios against baselines it measures in the same run; absolute times on
a shared 2-core VM mean little. ``--quick`` uses small sizes (a smoke run, not for figures).
``--slow`` adds the very long sizes (the plan path at 100M x 50M rows in ``query`` and
``enclave``); ``make bench`` passes it.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHES: list[tuple[str, str, list[str], list[str]]] = [
    ("seal", "Sealing and unsealing vs raw AES-GCM and SHA-256 (issue 2)", [], ["--size-mib", "128", "--rounds", "1"]),
    ("prepare", "Preparing a dataset: identifier validation vs none (issue 10)", [], ["--rows", "100000", "--phone-rows", "10000", "--rounds", "1"]),
    ("runner", "Keyless runner hand-over and join vs in-process DuckDB and pandas (issue 3)", [], ["--left", "100000", "--right", "50000", "--repeat", "1"]),
    ("enclave", "One worker job on the plan path, step by step, vs plain DuckDB (issues 3, 13)", [], ["--sizes", "100000x50000", "--repeat", "1"]),
    ("privacy", "Aggregation + DP release vs plain DuckDB group-by (issue 4)", [], ["--sizes", "100000", "--repeat", "1"]),
    ("query", "The plan path's query step (run_plan + release_groups) vs plain DuckDB (issues 4, 13)", [], ["--sizes", "100000x50000", "--repeat", "1"]),
    ("launcher", "DockerLauncher vs ProcessLauncher start-to-result (issue 5)", ["--enclave"], ["--repeat", "2"]),
    ("upload", "Streaming upload over loopback, server RSS (issue 6)", [], ["--sizes-mb", "20,50"]),
    ("plan", "The plan path's fused query vs plain DuckDB join + group-by (issue 13)", [], ["--sizes", "200000x100000", "--repeat", "1"]),
    ("cli_startup", "sealroom start-up: plugin discovery and the modules party commands import (issue 15)", [], ["--repeat", "3"]),
    ("api_load", "Authenticated reads under 200 concurrent clients vs /healthz (issue 14)", [], ["--requests", "1000", "--seconds", "5", "--runs", "1"]),
    ("turnaround", "A small plan job from run request to verified result, real coordinator + worker (issue 13)", [], ["--runs", "2"]),
    ("preview", "Match preview: ECDH PSI cardinality vs a set intersection and the library alone (issue 10)", [], ["--sizes", "2000x2000"]),
]
SLOW: dict[str, list[str]] = {"query": ["--slow"], "enclave": ["--slow"],
                              "preview": ["--slow", "--skip", "library"]}
"""Arguments ``--slow`` adds per benchmark (never with ``--quick``)."""


def machine() -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs ({cpu}), {mem:.0f} GiB RAM, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}; "
        f"load average at start {load}"
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--slow", action="store_true",
                        help="add the very long sizes (100M x 50M rows on the plan path)")
    parser.add_argument("--only", nargs="*", help="names of benchmarks to run")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    parts = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (`bench/run_all.py{' --quick' if args.quick else ''}"
        f"{' --slow' if args.slow and not args.quick else ''}`) on "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}.",
        "",
        f"Machine: {machine()}.",
        "",
        "Every benchmark measures its baseline in the same run and prints ratios; absolute",
        "times on a shared VM are noisy.",
        "",
    ]
    failed = 0
    if args.slow and not args.quick:
        # 100M x 50M needs the runner to spill (an operator setting: bench/.data is local disk)
        # and more CPU and wall time than a production default allows
        os.environ.setdefault("SEALROOM_RUNNER_SPILL_BYTES", str(40 * 10**9))
        os.environ.setdefault("SEALROOM_RUNNER_CPU_SECONDS", "7200")
        os.environ.setdefault("SEALROOM_RUNNER_WALL_SECONDS", "3600")
    for name, title, extra, quick in BENCHES:
        if args.only and name not in args.only:
            continue
        argv = extra + (quick if args.quick else SLOW.get(name, []) if args.slow else [])
        cmd = [sys.executable, str(ROOT / "bench" / f"{name}.py"), *argv]
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - start
        output = proc.stdout.strip() or "(no output)"
        print(output, flush=True)
        status = "" if proc.returncode == 0 else f" — FAILED (exit {proc.returncode})"
        if proc.returncode:
            failed += 1
            output += "\n" + "\n".join(proc.stderr.strip().splitlines()[-15:])
        parts += [
            f"## {name}: {title}{status}",
            "",
            f"`python bench/{name}.py {' '.join(argv)}`".replace(" `", "`"),
            f"({elapsed:.0f} s)",
            "",
            "```",
            output,
            "```",
            "",
        ]
    Path(args.out).write_text("\n".join(parts))
    print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
