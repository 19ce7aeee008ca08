"""Benchmark: seal and unseal a file on disk next to raw AES-256-GCM and SHA-256 on the same bytes.

    python bench/seal.py [--size-mib 1024] [--rounds 3]

Generates the plaintext once (bench/.data/, random bytes), then runs each phase in its own child
process so that its peak RSS is its own, several rounds interleaved (the machine may be shared;
the best round of each phase is reported):

- ``sha256``: read the file in 1 MiB chunks and hash it;
- ``aead``: read the file in 1 MiB chunks and AES-256-GCM encrypt each (``cryptography``);
- ``aead-open``: read the sealed file in chunks and AES-256-GCM decrypt each with its data key;
- ``copy``: read the file and write it to bench/.data/copy-*.bin (the disk-write floor);
- ``seal``: ``seal_stream`` from the file to bench/.data/sealed-*.bin (encrypt + hash the
  ciphertext, as an upload statement needs its digest); ``seal-null``: the same to /dev/null;
- ``unseal``: ``open_to`` from the sealed file to bench/.data/unsealed-*.bin; ``unseal-null``:
  the same to /dev/null.

Prints MB/s for each (by wall time, and by the CPU time the phase used, which a busy shared
machine disturbs less), the ratios seal / min(AEAD, SHA-256), seal / serial bound (one thread
must do both AEAD and SHA-256 on every byte: 1 / (1/AEAD + 1/SHA-256)) and unseal / AEAD, and
the peak RSS of each phase. Goal: seal ≥ 0.8 × min(AEAD, SHA-256), peak RSS < 200 MB. Writes
bench/out/seal.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _util

CHUNK = 1 << 20
WORKER_SEED = hashlib.sha256(b"bench-worker").digest()
BINDING = {"room_id": "bench", "manifest_digest": "0" * 64, "dataset": "d", "version": 1}
# seal before the phases that read its output
PHASES = ("sha256", "aead", "copy", "seal", "seal-null", "aead-open", "unseal", "unseal-null")


# -- phases (run in a child process) ----------------------------------------------------------


def _phase(name: str, data: Path, sealed: Path, unsealed: Path) -> dict[str, Any]:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from nacl.public import PrivateKey, SealedBox

    from sdk.protocol.sealing import TAG_SIZE, open_to, read_header, seal_stream

    key = PrivateKey(WORKER_SEED)
    buf = bytearray(CHUNK + TAG_SIZE)
    view = memoryview(buf)
    null = Path(os.devnull)
    # write fresh files: truncating the last round's output may wait for its writeback
    for stale in (sealed if name == "seal" else None, unsealed if name == "unseal" else None):
        if stale is not None:
            stale.unlink(missing_ok=True)
    (_util.DATA / "copy.bin").unlink(missing_ok=True)
    cpu0 = _cpu()
    start = time.perf_counter()
    size = 0
    if name == "sha256":
        h = hashlib.sha256()
        with open(data, "rb", buffering=0) as f:
            while n := f.readinto(view[:CHUNK]):
                h.update(view[:n])
                size += n
    elif name == "aead":
        aead = AESGCM(AESGCM.generate_key(bit_length=256))
        with open(data, "rb", buffering=0) as f:
            i = 0
            while n := f.readinto(view[:CHUNK]):
                aead.encrypt(i.to_bytes(12, "big"), view[:n], b"aad")
                size += n
                i += 1
    elif name == "aead-open":
        with open(sealed, "rb") as f:
            header = read_header(f)
            aead = AESGCM(SealedBox(key).decrypt(header.wrapped_key))
            hd = header.digest
            i = 0
            block = header.chunk_size + TAG_SIZE
            while n := f.readinto(view[:block]):
                final = n < block
                aad = hd + i.to_bytes(8, "big") + (b"\x01" if final else b"\x00")
                size += len(aead.decrypt(i.to_bytes(8, "big") + bytes(4), view[:n], aad))
                i += 1
    elif name == "copy":
        with open(data, "rb", buffering=0) as f, open(_util.DATA / "copy.bin", "wb") as dst:
            while n := f.readinto(view[:CHUNK]):
                dst.write(view[:n])
                size += n
    elif name in ("seal", "seal-null"):
        with open(data, "rb") as src, open(sealed if name == "seal" else null, "wb") as dst:
            result = seal_stream(src, dst, bytes(key.public_key), BINDING, chunk_size=CHUNK)
        size = result.plaintext_size
    elif name in ("unseal", "unseal-null"):
        with open(sealed, "rb") as src, open(unsealed if name == "unseal" else null, "wb") as dst:
            size = open_to(src, dst, key, expected_binding=BINDING)
    else:
        raise SystemExit(f"unknown phase {name}")
    seconds = time.perf_counter() - start
    return {
        "phase": name,
        "bytes": size,
        "seconds": seconds,
        "cpu_seconds": _cpu() - cpu0,
        "peak_rss_mib": _util.peak_rss_mib(),
    }


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- driver -----------------------------------------------------------------------------------


def _check_round_trip(data: Path, unsealed: Path) -> bool:
    """Sizes equal, and the first and last MiB equal (a full compare would double the run)."""
    if data.stat().st_size != unsealed.stat().st_size:
        return False
    with open(data, "rb") as a, open(unsealed, "rb") as b:
        if a.read(CHUNK) != b.read(CHUNK):
            return False
        size = data.stat().st_size
        a.seek(max(0, size - CHUNK))
        b.seek(max(0, size - CHUNK))
        return a.read() == b.read()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="plaintext size (1024)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--paths", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        data, sealed, unsealed = (Path(p) for p in args.paths)
        print(json.dumps(_phase(args.phase, data, sealed, unsealed)))
        return 0

    data = _util.random_file(args.size_mib)
    sealed = _util.DATA / f"sealed-{args.size_mib}MiB.bin"
    unsealed = _util.DATA / f"unsealed-{args.size_mib}MiB.bin"
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in PHASES}
    for r in range(args.rounds):
        for phase in PHASES:
            doc = _util.run_child(
                Path(__file__), ["--phase", phase, "--paths", str(data), str(sealed), str(unsealed)]
            )
            runs[phase].append(doc)
            speed = _util.mb_per_s(doc["bytes"], doc["seconds"])
            print(f"  round {r + 1} {phase:12s} {speed:8.0f} MB/s", file=sys.stderr, flush=True)
    ok = _check_round_trip(data, unsealed)
    (_util.DATA / "copy.bin").unlink(missing_ok=True)
    size = args.size_mib * _util.MIB

    def rate(doc: dict[str, Any], key: str) -> float:
        return _util.mb_per_s(doc["bytes"], doc[key])

    best = {p: max(rate(d, "seconds") for d in runs[p]) for p in PHASES}
    median = {p: statistics.median(rate(d, "seconds") for d in runs[p]) for p in PHASES}
    cpu = {p: max(rate(d, "cpu_seconds") for d in runs[p]) for p in PHASES}
    rss = {p: max(d["peak_rss_mib"] for d in runs[p]) for p in PHASES}

    def ratios(r: dict[str, float]) -> dict[str, float]:
        floor = min(r["aead"], r["sha256"])
        serial = 1 / (1 / r["aead"] + 1 / r["sha256"])
        return {
            "seal/min(aead,sha256)": r["seal"] / floor,
            "seal/serial_bound": r["seal"] / serial,
            "seal-null/min(aead,sha256)": r["seal-null"] / floor,
            "seal-null/serial_bound": r["seal-null"] / serial,
            "unseal/aead": r["unseal"] / r["aead"],
            "unseal-null/aead": r["unseal-null"] / r["aead"],
            "serial_bound_mb_s": serial,
        }

    wall_ratios, cpu_ratios = ratios(best), ratios(cpu)
    print(f"sealing benchmark: {args.size_mib} MiB, {args.rounds} rounds")
    print(f"  {'phase':12s} {'best MB/s':>9s} {'median':>7s} {'by CPU':>7s}  peak RSS")
    for p in PHASES:
        print(f"  {p:12s} {best[p]:9.0f} {median[p]:7.0f} {cpu[p]:7.0f}  {rss[p]:6.1f} MiB")
    print(f"  {'ratio':28s} {'wall':>5s} {'CPU':>5s}")
    for name in wall_ratios:
        print(f"  {name:28s} {wall_ratios[name]:5.2f} {cpu_ratios[name]:5.2f}")
    goal_speed = wall_ratios["seal/min(aead,sha256)"] >= 0.8
    goal_rss = max(rss["seal"], rss["unseal"]) * _util.MIB < 200e6
    print(
        f"  goal seal >= 0.8 x min: {'met' if goal_speed else 'MISSED'}; "
        f"peak RSS < 200 MB: {'met' if goal_rss else 'MISSED'}; round trip: {'ok' if ok else 'BAD'}"
    )
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"  load average at the end: {' '.join(load)} (on {os.cpu_count()} cores)")
    _util.write_json(
        "seal.json",
        {
            "size_mib": args.size_mib,
            "rounds": args.rounds,
            "best_mb_s": best,
            "median_mb_s": median,
            "cpu_mb_s": cpu,
            "peak_rss_mib": rss,
            "ratios_wall": wall_ratios,
            "ratios_cpu": cpu_ratios,
            "round_trip_ok": ok,
            "load_average": load,
            "runs": runs,
            "bytes": size,
        },
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
