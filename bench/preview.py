"""Benchmark: match preview (ECDH PSI cardinality, issue 10 item 5) at 100k x 100k ids (and
1M x 1M with ``--slow``), against baselines measured in the same run.

    python bench/preview.py [--sizes 100000x100000] [--slow] [--overlap 0.4]
                            [--skip library|recipe|e2e ...]

For each size (SHA-256 hex ids, ``--overlap`` of the smaller set shared):

* **set**: a plain Python ``set`` intersection of the ids (what it would cost if one party saw
  both sets: the floor);
* **library**: openmined-psi alone, one direction, one thread (client request, server setup,
  server re-encryption, client count): the raw cost of the cryptography;
* **recipe**: ``sdk.protocol.psi`` both ways, as two parties exchange it, in memory, on this
  machine's cores (one thread per party): element encoding, signed frames, every check before
  the library reads a message, the response re-sorted and re-cut. Each party does one
  direction's work, so on two cores ``recipe / library`` is the recipe's overhead;
* **e2e**: two ``sealroom match preview`` processes (``--workers 1`` each: they share the
  cores) through a real coordinator process over loopback HTTP, from their start to both
  exits: reading and normalising the Parquet files as ``data seal`` does, the protocol, the
  messages relayed in pieces, both statements signed, posted and verified.

Prints seconds, ratios, the messages' sizes and peak RSS (this process: the recipe; the two
two CLI processes: their ``VmHWM``). Every run checks that the count equals the true
intersection size.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
_HERE = ROOT / "bench"
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(ROOT))

from bench._server import wait_healthy  # noqa: E402
from bench._util import peak_rss_mib  # noqa: E402

ADMIN = "bench-preview-admin-token-0123456789"
ROOM = "preview"
MB = 1e6


def ids(n_a: int, n_b: int, overlap: float) -> tuple[list[str], list[str], int]:
    shared = int(min(n_a, n_b) * overlap)
    a = [hashlib.sha256(b"u%d" % i).hexdigest() for i in range(n_a)]
    b = a[:shared] + [hashlib.sha256(b"p%d" % i).hexdigest() for i in range(n_b - shared)]
    return a, b, shared


def time_set(a: list[str], b: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    n = len(set(a) & set(b))
    return time.perf_counter() - start, n


def time_library(a: list[str], b: list[str]) -> dict[str, Any]:
    """One direction with openmined-psi alone (a is the client), one thread."""
    import private_set_intersection.python as lib

    from sdk.protocol.psi import false_positive_rate

    marks = [time.perf_counter()]
    client = lib.client.CreateWithNewKey(False)
    server = lib.server.CreateWithNewKey(False)
    request = client.CreateRequest(a)
    marks.append(time.perf_counter())
    setup = server.CreateSetupMessage(false_positive_rate(len(a), len(b)), len(a), b,
                                      lib.DataStructure.GCS)
    marks.append(time.perf_counter())
    response = server.ProcessRequest(request)
    marks.append(time.perf_counter())
    count = client.GetIntersectionSize(setup, response)
    marks.append(time.perf_counter())
    steps = [marks[i + 1] - marks[i] for i in range(4)]
    return {"seconds": marks[-1] - marks[0], "steps": steps, "count": count,
            "sizes": [len(m.SerializeToString()) for m in (request, setup, response)]}


def time_recipe(a: list[str], b: list[str]) -> dict[str, Any]:
    """Both directions with sdk.protocol.psi, two parties, one thread each, in memory."""
    from sdk.protocol import psi
    from sdk.protocol.keys import PartyKey

    ka, kb = PartyKey.generate("alice"), PartyKey.generate("bob")
    ctx = psi.PsiContext(ROOM, "ab" * 32, os.urandom(16).hex(), "sha256")
    start = time.perf_counter()
    pa = psi.PsiParty(ctx, "alice", ka.signer, "bob", kb.signer.public_key, psi.encode_ids(ctx, a))
    pb = psi.PsiParty(ctx, "bob", kb.signer, "alice", ka.signer.public_key, psi.encode_ids(ctx, b))
    encoded = time.perf_counter() - start
    # the phases each party goes through (it waits for the other's messages in between)
    with ThreadPoolExecutor(max_workers=2) as pool:
        def phase1(me: psi.PsiParty, n_other: int) -> tuple[list[bytes], bytes]:
            requests = [me.request(i) for i in range(len(psi.part_sizes(me.size)))]
            return requests, me.setup(n_other)

        fa, fb = pool.submit(phase1, pa, pb.size), pool.submit(phase1, pb, pa.size)
        (req_a, setup_a), (req_b, setup_b) = fa.result(), fb.result()
        t1 = time.perf_counter()

        def phase2(me: psi.PsiParty, requests: list[bytes], n_other: int) -> list[bytes]:
            answered = [me.answer(i, f, n_other) for i, f in enumerate(requests)]
            return me.responses(answered, n_other)

        fa, fb = pool.submit(phase2, pa, req_b, pb.size), pool.submit(phase2, pb, req_a, pa.size)
        resp_from_a, resp_from_b = fa.result(), fb.result()
        t2 = time.perf_counter()

        def phase3(me: psi.PsiParty, setup: bytes, responses: list[bytes], n_other: int) -> int:
            verified = me.read_setup(setup, n_other)
            return sum(me.count(verified, i, f) for i, f in enumerate(responses))

        fa = pool.submit(phase3, pa, setup_b, resp_from_b, pb.size)
        fb = pool.submit(phase3, pb, setup_a, resp_from_a, pa.size)
        count_a, count_b = fa.result(), fb.result()
    end = time.perf_counter()
    sent = {"request": sum(len(f) for f in req_a), "setup": len(setup_a),
            "response": sum(len(f) for f in resp_from_a)}
    return {"seconds": end - start, "encode": encoded, "phases": [t1 - start, t2 - t1, end - t2],
            "counts": (count_a, count_b), "sent_by_alice": sent}


# -- end to end ----------------------------------------------------------------------------------


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _hwm(pid: int) -> int:
    """Peak RSS (bytes) of a running process, 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _parquet(path: Path, values: list[str]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"uid": values, "x": [1] * len(values)}), path)
    return path


def time_e2e(work: Path, a: list[str], b: list[str]) -> dict[str, Any]:
    from sdk.client import Client
    from sdk.party.home import Home
    from sdk.party.statements import sign_manifest
    from sdk.protocol.keys import PartyKey, Signer
    from sdk.protocol.models import Manifest

    data = work / "coordinator"
    port = _port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALROOM_")}
    env.update(SEALROOM_ADMIN_TOKEN=ADMIN, PYTHONPATH=str(ROOT))
    log = work / "coordinator.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "coordinator.serve", "--data-dir", str(data), "--port",
             str(port), "--launcher", "process", "--log-level", "warning",
             "--public-origin", url], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_healthy(server, url, log)
        with Client(url, admin_token=ADMIN) as admin:
            attestation = json.loads(admin.provision_worker().payload)
        keys = {n: PartyKey.generate(n) for n in ("alice", "bob")}

        def party(k: PartyKey) -> dict[str, Any]:
            return {**k.identity.to_dict(), "roles": ["data_owner", "analyst", "recipient"]}

        schema = [{"name": "uid", "type": "string"}, {"name": "x", "type": "int"}]
        manifest = Manifest.from_dict({
            "room_id": ROOM, "version": 1, "parties": [party(k) for k in keys.values()],
            "datasets": [{"name": d, "owner": o, "schema": schema, "id_column": "uid",
                          "id_kind": "sha256", "min_group_size": 50, "epsilon_budget": "1"}
                         for d, o in (("crm", "alice"), ("visits", "bob"))],
            "workers": {"measurements": [attestation["measurement"]],
                        "providers": ["simulated"],
                        "platform_keys": [Signer.from_seed(
                            (data / "platform.key").read_bytes()).public_key.hex()],
                        "allow_unisolated": True},
            "policies": {"min_group_size": 50, "max_runs": 10},
            "expires": "2099-01-01T00:00:00Z"})
        envelope = sign_manifest(sign_manifest(manifest, keys["alice"]), keys["bob"])
        with Client(url, keys["alice"]) as client:
            client.submit_manifest(envelope)
        files = {"alice": _parquet(work / "crm.parquet", a),
                 "bob": _parquet(work / "visits.parquet", b)}
        procs = {}
        cmd_env = dict(env)
        start = time.perf_counter()
        for name, dataset, partner in (("alice", "crm", "bob"), ("bob", "visits", "alice")):
            home = Home(work / f"home-{name}")
            home.key_path(name).parent.mkdir(parents=True, exist_ok=True)
            keys[name].save(home.key_path(name))
            home.pin_manifest(ROOM, envelope)
            cmd_env["SEALROOM_HOME"] = str(home.root)
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "sdk.cli", "--coordinator", url, "--room", ROOM,
                 "match", "preview", "--dataset", dataset, "--with", partner, "--file",
                 str(files[name]), "--workers", "1", "--timeout", "7200"],
                cwd=ROOT, env=dict(cmd_env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True)
        peaks = {n: 0 for n in procs}
        watching = threading.Event()

        def watch() -> None:  # VmHWM only grows: the last reading before exit is the peak
            while not watching.wait(0.2):
                for n, p in procs.items():
                    peaks[n] = max(peaks[n], _hwm(p.pid))

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        outs = {n: p.communicate(timeout=7200) for n, p in procs.items()}
        seconds = time.perf_counter() - start
        watching.set()
        watcher.join()
        counts = {}
        for name, (out, err) in outs.items():
            if procs[name].returncode != 0:
                raise RuntimeError(f"{name}: exit {procs[name].returncode}\n{err[-2000:]}")
            found = re.search(r"in common: (\d+)", out)
            assert found, out
            counts[name] = int(found.group(1))
        return {"seconds": seconds, "counts": counts,
                "rss_mib": {n: v / 2**20 for n, v in peaks.items()}, "outputs": outs}
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000x100000")
    parser.add_argument("--slow", action="store_true", help="add 1000000x1000000")
    parser.add_argument("--overlap", type=float, default=0.4)
    parser.add_argument("--skip", action="append", default=[],
                        choices=["library", "recipe", "e2e"])
    args = parser.parse_args()
    sizes = [tuple(int(x) for x in s.split("x")) for s in args.sizes.split(",") if s]
    if args.slow:
        sizes.append((1_000_000, 1_000_000))
    print(f"{os.cpu_count()} CPUs; overlap {args.overlap:.0%} of the smaller set; "
          "ECDH over P-256, GCS setup, fpr per direction = n_c * n_s / min(2^60, n_s * 2^50)")
    for n_a, n_b in sizes:
        a, b, truth = ids(n_a, n_b, args.overlap)
        base, n = time_set(a, b)
        assert n == truth
        print(f"\n{n_a:,} x {n_b:,} ids, {truth:,} in common")
        print(f"  set      Python set intersection        {base:9.3f} s")
        library = None
        if "library" not in args.skip:
            library = time_library(a, b)
            assert library["count"] == truth, library["count"]
            req, setup, resp = (s / MB for s in library["sizes"])
            steps = " + ".join(f"{s:.1f}" for s in library["steps"])
            print(f"  library  one direction, 1 thread        {library['seconds']:9.1f} s "
                  f"(request + setup + answer + count = {steps} s) x{library['seconds'] / base:,.0f} "
                  f"set; request {req:.1f} MB, setup {setup:.2f} MB, response {resp:.1f} MB")
        if "recipe" not in args.skip:
            recipe = time_recipe(a, b)
            assert recipe["counts"] == (truth, truth), recipe["counts"]
            sent = recipe["sent_by_alice"]
            ratio = f" x{recipe['seconds'] / library['seconds']:.2f} library" if library else ""
            phases = " + ".join(f"{p:.1f}" for p in recipe["phases"])
            print(f"  recipe   both ways, 2 parties x 1 thread {recipe['seconds']:8.1f} s "
                  f"(encode {recipe['encode']:.1f} s; phases {phases} s){ratio}; one party "
                  f"sends {sent['request'] / MB:.1f} + {sent['setup'] / MB:.2f} + "
                  f"{sent['response'] / MB:.1f} MB (requests, setup, responses)")
            print(f"           peak RSS of this process so far {peak_rss_mib():.0f} MiB")
        if "e2e" not in args.skip:
            with tempfile.TemporaryDirectory(prefix="bench-preview-") as tmp:
                e2e = time_e2e(Path(tmp), a, b)
            assert set(e2e["counts"].values()) == {truth}, e2e["counts"]
            ratio = f" x{e2e['seconds'] / library['seconds']:.2f} library" if library else ""
            rss = ", ".join(f"{n} {v:.0f}" for n, v in e2e["rss_mib"].items())
            print(f"  e2e      2 CLI processes + coordinator   {e2e['seconds']:8.1f} s{ratio}"
                  f"; peak RSS of the CLI processes (MiB): {rss}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
