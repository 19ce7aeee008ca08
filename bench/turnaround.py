"""Benchmark: turnaround of a small plan job (issue 13), from the party's run request to its
verified, decrypted result, through a real coordinator serving HTTP and a real worker.

    python bench/turnaround.py [--runs 7] [--rows 100000] [--launcher auto|docker|process]
                               [--poll 0.05] [--keep]

Starts ``python -m coordinator.serve`` (SQLite in a temp folder, its own process, loopback
port) with the Docker launcher when an engine answers and the worker image exists (else the
unisolated process launcher, and the output says so), provisions a worker through the admin
API, builds the ``tests.kit.Room`` room on it (manifest signed by both parties, both sealed
uploads of ``--rows`` rows each, the plan bundle of ``bench/query.py`` approved by both with
``max_runs`` and epsilon budget enough for every run), then after one warm-up run:

* **SDK path** (the headline): ``--runs`` times ``Party.run(digest)`` then
  ``Party.result(run_id)``, exactly what a party's notebook calls (its run poll is the SDK's
  default, 0.25 s);
* **staged**: ``--runs`` times the same steps written out, with the run polled every
  ``--poll`` seconds, timed on the client's clock: prepare (fetch + verify the bundle), request
  (``POST /runs``), queued (until a poll sees ``running``), running (until a poll sees the end:
  job directory, worker start, verify/decrypt/run/privacy/seal/sign, result check and commit),
  result fetch (attestations, log, receipt, sealed output), verify (attestations, log
  consistency, receipt and inclusion), decrypt + decode;
* the receipts' worker step timings (whole seconds only) and the coordinator's run timestamps
  (also whole seconds), for what they are worth;
* after the coordinator stopped, the worker alone on an equal job directory: in-process
  ``Job.run()`` (steps in ms) and ``python -m enclave run`` (a fresh interpreter, as the process
  launcher starts it), to split the running span into worker start + imports, worker steps
  and the coordinator's own part.

Goal (issue 13): median turnaround under 1.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
_HERE = ROOT / "bench"
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(ROOT))

from bench._server import wait_healthy  # noqa: E402
from bench._synth import tables  # noqa: E402
from bench.query import EPSILON, PLAN  # noqa: E402

ADMIN = "bench-turnaround-admin-token-0123456789"
ROOM = "room1"  # tests.kit.Room's room id
GOAL_S = 1.5
WORKER_IMAGE = os.environ.get("SEALROOM_WORKER_IMAGE", "sealroom-worker:latest")
STAGES = ("prepare", "request", "queued", "running", "fetch", "verify", "decrypt")
WORKER_STEPS = ("verify", "decrypt", "run", "privacy", "seal", "sign")
FRESH_RUNS = 3


def now() -> float:
    return time.perf_counter()


def choose_launcher(wanted: str) -> tuple[str, str]:
    """(launcher, why the process launcher was chosen or "")."""
    from coordinator.cli.demo import docker_ready

    if wanted == "process":
        return "process", "--launcher process"
    reason = docker_ready(WORKER_IMAGE)
    if reason is None:
        return "docker", ""
    if wanted == "docker":
        raise SystemExit(f"docker launcher unavailable: {reason}")
    return "process", f"no Docker engine with {WORKER_IMAGE}: {reason}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(data: Path, launcher: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALROOM_")}
    env.update(SEALROOM_ADMIN_TOKEN=ADMIN, SEALROOM_WORKER_IMAGE=WORKER_IMAGE)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "coordinator.serve", "--data-dir", str(data), "--host",
             "127.0.0.1", "--port", str(port), "--launcher", launcher, "--dev",
             "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    wait_healthy(proc, url, log)
    return proc, url


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def build_room(work: Path, url: str, rows: int, max_runs: int) -> tuple[Any, str]:
    """The kit room on the coordinator's worker: manifest, uploads, approved plan bundle.
    Returns (the brand's ``sdk.Party``, the bundle digest)."""
    import sdk
    from sdk.client import Client
    from sdk.party.statements import sign_manifest
    from sdk.protocol.models import Manifest, Measurement
    from sdk.protocol.plan import Plan
    from tests.kit import Room

    brand_file, publisher_file = tables(rows, rows)
    room = Room(work / "kit", min_group_size=50, epsilon_budget="1000")
    admin = Client(url, admin_token=ADMIN)
    attestation = admin.provision_worker()
    payload = json.loads(attestation.payload)
    room.attestation = attestation
    room.worker_encryption_key = bytes.fromhex(payload["worker_encryption_key"])
    room.measurement = Measurement(**payload["measurement"])
    room.manifest = Manifest.from_dict(room.manifest_dict())
    room.manifest_envelope = sign_manifest(sign_manifest(room.manifest, room.alice), room.bob)
    room.manifest_digest = room.manifest_envelope.digest()
    alice = Client(url, room.alice)
    bob = Client(url, room.bob)
    alice.submit_manifest(room.manifest_envelope)
    for client, key, name, path in ((alice, room.alice, "crm", brand_file),
                                    (bob, room.bob, "visits", publisher_file)):
        statement = room.upload_file(key, name, path, rows)
        digest = json.loads(statement.payload)["ciphertext_digest"]
        assert client.upload(ROOM, statement, room.sealed_files[digest])["complete"]
    bundle = room.plan_bundle(Plan.from_dict(PLAN), dp={"epsilon": EPSILON}, max_runs=max_runs)
    alice.submit_bundle(ROOM, bundle)
    for client, approval in zip((alice, bob), room.approvals(bundle), strict=True):
        client.submit_approval(ROOM, approval)
    for c in (admin, alice, bob):
        c.close()
    home = work / "home-alice"
    (home / "keys").mkdir(parents=True)
    room.alice.save(home / "keys" / "alice.key")
    (work / "room.json").write_bytes(room.manifest_envelope.to_json())
    party = sdk.Party("alice", home=home, coordinator=url, room=ROOM)
    party.pin(work / "room.json")
    return party, bundle.digest()


def sdk_run(party: Any, digest: str) -> tuple[float, dict[str, int]]:
    """One run as a party's notebook does it: (seconds, the receipt's worker timings)."""
    start = now()
    run = party.run(digest)
    result = party.result(str(run["run_id"]))
    elapsed = now() - start
    assert result.columns, "empty result"
    return elapsed, dict(result.receipt.timings_ms)


def staged_run(party: Any, digest: str, poll: float) -> dict[str, Any]:
    """The steps of ``Party.run`` + ``Party.result``, written out and timed one by one."""
    from sdk.party.bundles import load_bundle
    from sdk.party.files import write_json_file
    from sdk.party.receipts import verify_receipt_file
    from sdk.party.results import (
        TERMINAL,
        decode_result,
        decrypt_output,
        raise_for_run,
        receipt_file_for,
        run_state,
        start_run,
    )
    from sdk.party.trust import verify_room_log, verify_workers
    from sdk.protocol.canonical import parse_json
    from sdk.protocol.records import Checkpoint

    session = party.session
    room = party.room()
    client = session.client()
    marks = {"start": now()}
    envelope, _bundle = load_bundle(session, room, digest)
    marks["prepare"] = now()
    run = start_run(session, room, envelope)
    marks["request"] = now()
    run_id = str(run["run_id"])
    seen_running = None
    while run_state(run) not in TERMINAL:
        time.sleep(poll)
        run = dict(client.run(room.room_id, run_id))
        if seen_running is None and run_state(run) != "queued":
            seen_running = now()
    marks["running"] = now()
    marks["queued"] = seen_running if seen_running is not None else marks["request"]
    raise_for_run(run)
    attestations = client.attestations(room.room_id)
    checkpoint = client.checkpoint(room.room_id)
    entries = []
    if checkpoint is not None:
        size = Checkpoint.from_dict(parse_json(checkpoint.payload)).tree_size
        entries = client.log_entries(room.room_id, 0, size)[:size]
    receipt_envelope = client.receipt(room.room_id, run_id)
    sealed = client.output(room.room_id, run_id)
    marks["fetch"] = now()
    workers, _ = verify_workers(room, attestations)
    log = verify_room_log(session.home, room, workers, entries, checkpoint)
    rfile = receipt_file_for(session, room, log, receipt_envelope, [w.envelope for w in workers],
                             run_id, {session.key().name: sealed})
    verified = verify_receipt_file(rfile, room.manifest, room.digest)
    path = session.home.receipt_path(room.room_id, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_file(path, rfile.to_dict())
    marks["verify"] = now()
    columns, _rows, _meta = decode_result(decrypt_output(session, room, rfile, verified.receipt))
    marks["decrypt"] = now()
    assert columns, "empty result"
    order = ["start", *STAGES]
    stages = {s: marks[s] - marks[order[i]] for i, s in enumerate(order[1:])}

    def stamp(name: str) -> float | None:
        value = run.get(name)
        return None if not value else datetime.fromisoformat(
            str(value).replace("Z", "+00:00")).timestamp()

    created, started, finished = stamp("created_at"), stamp("started_at"), stamp("finished_at")
    return {
        "stages": stages,
        "total": marks["decrypt"] - marks["start"],
        "receipt_ms": dict(verified.receipt.timings_ms),
        "coordinator": {
            "queued": None if created is None or started is None else started - created,
            "running": None if started is None or finished is None else finished - started,
        },
    }


def local_worker(work: Path, rows: int) -> dict[str, Any]:
    """The worker alone on an equal job: in-process ``Job.run`` (ms steps) and a fresh
    ``python -m enclave run`` (what the process launcher starts; best of ``FRESH_RUNS``)."""
    from enclave.job import Job
    from sdk.protocol.plan import Plan
    from tests.kit import Room

    brand_file, publisher_file = tables(rows, rows)
    room = Room(work / "local", min_group_size=50, epsilon_budget="1000")
    room.upload_file(room.alice, "crm", brand_file, rows)
    room.upload_file(room.bob, "visits", publisher_file, rows)
    bundle = room.plan_bundle(Plan.from_dict(PLAN), dp={"epsilon": EPSILON})
    dirs = [room.job_dir(bundle, room.approvals(bundle)) for _ in range(FRESH_RUNS + 1)]
    fresh, status = float("inf"), "crashed"
    for job_dir in dirs[:FRESH_RUNS]:
        start = now()
        proc = subprocess.run(
            [sys.executable, "-m", "enclave", "run", "--job", str(job_dir), "--image-id",
             "unisolated", "--isolation", "none"], capture_output=True, check=False, cwd=ROOT)
        fresh = min(fresh, now() - start)
        status = json.loads(proc.stdout)["status"] if proc.returncode == 0 else "crashed"
    job = Job(dirs[-1], image_id="unisolated", isolation="none")
    start = now()
    doc = job.run()
    in_process = now() - start
    return {"fresh": fresh, "fresh_status": status, "in_process": in_process,
            "status": doc["status"], "ms": dict(job.timer.ms)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--rows", type=int, default=100_000, help="rows of each party")
    parser.add_argument("--launcher", choices=("auto", "docker", "process"), default="auto")
    parser.add_argument("--poll", type=float, default=0.05, help="staged runs' poll interval")
    parser.add_argument("--gap", type=float, default=2.0,
                        help="seconds between runs (a waiting worker is ready by then; the "
                        "back-to-back series has none)")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = parser.parse_args()
    launcher, why = choose_launcher(args.launcher)
    work = Path(tempfile.mkdtemp(prefix="sealroom-turnaround-"))
    data = work / "coordinator"
    data.mkdir()
    from tests.kit import seed

    fd = os.open(data / "platform.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:  # the kit room's platform key
        handle.write(seed("platform"))
    print(f"turnaround: plan job, crm {args.rows:,} x visits {args.rows:,} rows, from the run "
          "request to the verified, decrypted result on the party's side")
    if launcher == "process":
        print(f"WARNING: Docker is not used ({why}): the UNISOLATED process launcher runs the "
              "worker as a plain subprocess; a Docker worker adds its container start")
    else:
        print(f"launcher: docker ({WORKER_IMAGE})")
    try:
        proc, url = start_server(data, launcher, work / "coordinator.log")
        try:
            party, digest = build_room(work, url, args.rows, max_runs=3 * args.runs + 5)
            warm, _ = sdk_run(party, digest)
            sdk_times = []
            receipts: list[dict[str, int]] = []
            for _ in range(args.runs):
                time.sleep(args.gap)
                elapsed, timings = sdk_run(party, digest)
                sdk_times.append(elapsed)
                receipts.append(timings)
            staged = []
            for _ in range(args.runs):
                time.sleep(args.gap)
                staged.append(staged_run(party, digest, args.poll))
            back_to_back = [sdk_run(party, digest)[0] for _ in range(args.runs)]
            party.close()
        finally:
            stop_server(proc)
        local = local_worker(work, args.rows)
    finally:
        if args.keep:
            print(f"kept {work} (coordinator.log inside)")
        else:
            shutil.rmtree(work, ignore_errors=True)

    sdk_median = statistics.median(sdk_times)
    staged_median = statistics.median(s["total"] for s in staged)
    print(f"{args.runs} runs each after a warm-up ({warm:.2f} s), launcher {launcher}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"SDK path (Party.run + Party.result)  median {sdk_median:6.2f} s  "
          f"min {min(sdk_times):.2f}  max {max(sdk_times):.2f}  "
          f"({'under' if sdk_median < GOAL_S else 'NOT under'} the {GOAL_S} s goal)")
    print(f"  (each run {args.gap:g} s after the previous one; back to back, the SDK path's "
          f"median is {statistics.median(back_to_back):.2f} s, min {min(back_to_back):.2f}, "
          f"max {max(back_to_back):.2f})")
    print(f"staged (poll {args.poll:g} s)              median {staged_median:6.2f} s  "
          f"min {min(s['total'] for s in staged):.2f}  max {max(s['total'] for s in staged):.2f}")
    print(f"  {'stage (client clock)':<44} {'median s':>8} {'share':>6}")
    medians = {st: statistics.median(s["stages"][st] for s in staged) for st in STAGES}
    labels = {
        "prepare": "prepare: GET bundle + verify",
        "request": "request: POST /runs (queued)",
        "queued": "queued: until a poll sees running",
        "running": "running: until a poll sees the end",
        "fetch": "result fetch: attestations, log, receipt, output",
        "verify": "verify: workers, log, receipt, inclusion",
        "decrypt": "decrypt + decode",
    }
    for st in STAGES:
        print(f"  {labels[st]:<44} {medians[st]:8.3f} {medians[st] / staged_median:6.0%}")
    every = receipts + [s["receipt_ms"] for s in staged]
    whole = {st: sum(r.get(st, 0) for r in every) / 1000 / len(every) for st in WORKER_STEPS}
    print("  receipts' worker steps (whole seconds, mean over runs): "
          + ", ".join(f"{st} {whole[st]:.1f}" for st in WORKER_STEPS))
    queued_c = [s["coordinator"]["queued"] for s in staged if s["coordinator"]["queued"] is not None]
    running_c = [s["coordinator"]["running"] for s in staged
                 if s["coordinator"]["running"] is not None]
    if queued_c and running_c:
        print(f"  coordinator timestamps (whole seconds): created->started median "
              f"{statistics.median(queued_c):.0f} s, started->finished median "
              f"{statistics.median(running_c):.0f} s")
    print(f"worker alone on an equal job ({local['status']}, fresh process "
          f"{local['fresh_status']}):")
    fresh_label = f"python -m enclave run (fresh, best of {FRESH_RUNS})"
    print(f"  {fresh_label:<43}{local['fresh']:6.3f} s")
    print(f"  {'Job.run() in process':<43}{local['in_process']:6.3f} s  ("
          + ", ".join(f"{st} {local['ms'].get(st, 0) / 1000:.3f}" for st in WORKER_STEPS) + ")")
    start_cost = local["fresh"] - local["in_process"]
    rest = medians["running"] - local["fresh"]
    parts = ("container create, start, wait, remove" if launcher == "docker" else "spawn")
    rest_text = f"~{rest:.2f} s" if rest > 0 else "within the noise (the worker alone took longer)"
    print(f"  => worker start + imports ~{start_cost:.2f} s; the rest of running, {rest_text}: "
          f"the coordinator (gather, job dir, result check, commit), the launcher ({parts}) "
          "and the poll")
    biggest = max(STAGES, key=lambda st: medians[st])
    print(f"dominant stage: {biggest} ({medians[biggest]:.2f} s of {staged_median:.2f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
