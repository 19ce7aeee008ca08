"""API throughput under 200 concurrent clients: authenticated reads vs ``/healthz``.

Starts a real coordinator process (``python -m coordinator.serve``, uvicorn, SQLite, the process
launcher) on a loopback port in a temp data dir, provisions a worker, signs and submits a
two-party room, and (unless ``--runs 0``) uploads both datasets and runs a template bundle
``--runs`` times, so that the log, its checkpoints and the runs table are not empty. Then an
async httpx client opens ``--concurrency`` keep-alive connections and, per target, sends
requests until ``--requests`` were answered or ``--seconds`` passed (whichever comes first;
a warm-up round is not counted):

* ``healthz``   ``GET /healthz`` (no authentication: the baseline, measured in the same run)
* ``room``      ``GET /v1/rooms/{id}`` (the manifest, who signed)
* ``status``    ``GET /v1/rooms/{id}/status`` (the room's metrics)
* ``log head``  ``GET /v1/rooms/{id}/log/checkpoint``
* ``run``       ``GET /v1/rooms/{id}/runs/{run}`` (result metadata)
* ``receipt``   ``GET /v1/rooms/{id}/runs/{run}/receipt`` (receipt, entry, inclusion proof)
* ``status, N writes/s``  status again while another client posts ``--writes-per-s`` feedback
  writes a second: what the coordinator derived from the database goes stale at each write,
  so this measures status recomputed, not only served from memory

It prints p50, p99 and requests per second per target, and each target's p99 and throughput
as ratios to ``/healthz``'s. The goal of issue 14: status and room reads within 2x the p99 of
``/healthz``, and at least 500 requests per second for status on a 2-core machine. The load
generator shares the machine's cores with the server, so absolute figures mean little. By
default it sends requests through httpx's client API over a minimal keep-alive transport
(:class:`LeanTransport`): httpx's own connection pool costs the generator several times what
a small request costs the server; ``--client httpx`` uses it anyway.

Usage: ``python bench/api_load.py [--concurrency 200] [--requests 6000] [--seconds 20]
[--runs 2] [--writes-per-s 20] [--client lean|httpx] [--profile-out FILE.svg] [--keep]``; ``--profile-out`` records the server with
``py-spy`` (when it is on ``PATH``) during the status target (collapsed stacks for a ``.txt``
name).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench._server import wait_healthy  # noqa: E402
from sdk.client import Client  # noqa: E402
from sdk.protocol.keys import PartyKey  # noqa: E402

ADMIN = "bench-admin-token-0123456789"
ROOM = "brand-x-publisher"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve_flags(url: str) -> list[str]:
    """The origin flag ``coordinator.serve`` takes, if it takes one (issue 14: a configured
    public origin, or an explicit development mode)."""
    out = subprocess.run([sys.executable, "-m", "coordinator.serve", "--help"], cwd=REPO,
                         capture_output=True, text=True, check=False).stdout
    if "--public-origin" in out:
        return ["--public-origin", url]
    if "--dev" in out:
        return ["--dev"]
    return []


def start_server(data: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALROOM_")}
    env.update(SEALROOM_ADMIN_TOKEN=ADMIN, SEALROOM_LAUNCHER="process")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "coordinator.serve", "--data-dir", str(data), "--port",
             str(port), "--launcher", "process", "--log-level", "warning", *_serve_flags(url)],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    wait_healthy(proc, url, log)
    return proc, url


def setup_room(root: Path, data: Path, url: str, runs: int) -> tuple[PartyKey, list[str]]:
    """Provision a worker, sign and submit the room; upload, approve and run a bundle ``runs``
    times. Returns the brand's key and the run ids."""
    import sdk
    from coordinator.cli.demo import room_toml
    from coordinator.cli.demo_data import generate
    from sdk.party.statements import manifest_from_room_file, sign_manifest
    from sdk.protocol.canonical import parse_json
    from sdk.protocol.keys import PublicIdentity

    admin = Client(url, admin_token=ADMIN)
    attestation = parse_json(admin.provision_worker().payload)
    assert isinstance(attestation, dict)
    platform = admin.platform()["platform_key"]
    keys: dict[str, PartyKey] = {}
    for name in ("brand", "publisher"):
        keys[name] = PartyKey.generate(name)
        home = root / f"home-{name}"
        (home / "keys").mkdir(parents=True)
        keys[name].save(home / "keys" / f"{name}.key")
    measurement = attestation["measurement"]
    text = room_toml(root / "home-brand/keys/brand.pub",
                     root / "home-publisher/keys/publisher.pub", platform,
                     measurement["image_id"], measurement["code_digest"], unisolated=True)
    identities: dict[str, PublicIdentity] = {n: k.identity for n, k in keys.items()}
    manifest = manifest_from_room_file(text, identities)
    envelope = sign_manifest(sign_manifest(manifest, keys["brand"]), keys["publisher"])
    Client(url, keys["brand"]).submit_manifest(envelope)
    if runs <= 0:
        return keys["brand"], []
    (root / "room.json").write_bytes(envelope.to_json())
    parties = {n: sdk.Party(n, home=root / f"home-{n}", coordinator=url, room=ROOM)
               for n in keys}
    try:
        for p in parties.values():
            p.pin(root / "room.json")
        demo = generate(root / "data", brand_rows=2000, publisher_rows=2500, overlap=1000)
        parties["brand"].upload(demo.brand_csv, dataset="customers")
        parties["publisher"].upload(demo.publisher_csv, dataset="visitors")
        digest = parties["brand"].propose_template(
            "overlap", {"left": "customers", "right": "visitors", "epsilon": "0.1"},
            recipients=["brand", "publisher"], max_runs=max(runs, 1))
        for p in parties.values():
            p.approve(digest)
        run_ids = [str(parties["brand"].run(digest, timeout=300)["run_id"]) for _ in range(runs)]
    finally:
        for p in parties.values():
            p.close()
    return keys["brand"], run_ids


@dataclass
class Stats:
    name: str
    count: int
    errors: int
    seconds: float
    p50: float
    p99: float

    @property
    def rps(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class LeanTransport(httpx.AsyncBaseTransport):
    """One keep-alive HTTP/1.1 connection for one client that sends one request at a time.

    httpx's own pool (httpcore + h11) costs the load generator several times what a small
    request costs the server, and both share this machine's cores; this transport keeps the
    httpx client API and moves bytes with asyncio streams. ``--client httpx`` uses the stock
    transport instead."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        body = await request.aread()
        head = [f"{request.method} {request.url.raw_path.decode()} HTTP/1.1"]
        head += [f"{k.decode()}: {v.decode()}" for k, v in request.headers.raw]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        raw = await reader.readuntil(b"\r\n\r\n")
        status_line, *lines = raw[:-4].split(b"\r\n")
        headers: list[tuple[bytes, bytes]] = []
        for line in lines:
            name, _, value = line.partition(b": ")
            headers.append((name, value))
        length = next(int(v) for k, v in headers if k.lower() == b"content-length")
        content = await reader.readexactly(length)
        return httpx.Response(int(status_line.split(b" ", 2)[1]), headers=headers,
                              content=content)

    async def aclose(self) -> None:
        if self.streams is not None:
            self.streams[1].close()


def make_clients(url: str, kind: str, count: int) -> list[httpx.AsyncClient]:
    """``count`` clients of one connection each (one shared pool of 200 connections is
    quadratic in httpcore)."""
    host, port = url.removeprefix("http://").split(":")
    if kind == "lean":
        return [httpx.AsyncClient(base_url=url, transport=LeanTransport(host, int(port)),
                                  timeout=120) for _ in range(count)]
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    return [httpx.AsyncClient(base_url=url, limits=limits, timeout=120) for _ in range(count)]


async def _load(clients: list[httpx.AsyncClient], name: str, path: str,
                headers: dict[str, str], total: int, seconds: float) -> Stats:
    latencies: list[float] = []
    errors = 0
    left = total
    deadline = time.perf_counter() + seconds

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal left, errors
        while left > 0 and time.perf_counter() < deadline:
            left -= 1
            started = time.perf_counter()
            try:
                response = await client.get(path, headers=headers)
                ok = response.status_code == 200
            except (httpx.HTTPError, OSError, asyncio.IncompleteReadError):
                ok = False
            latencies.append(time.perf_counter() - started)
            errors += not ok

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in clients))
    elapsed = time.perf_counter() - started
    return Stats(name, len(latencies), errors, elapsed, statistics.median(latencies),
                 _quantile(latencies, 0.99))


async def measure(url: str, token: str, run_ids: list[str], args: argparse.Namespace,
                  server_pid: int) -> list[Stats]:
    auth = {"Authorization": f"Bearer {token}"}
    targets: list[tuple[str, str, dict[str, str]]] = [
        ("healthz", "/healthz", {}),
        ("room", f"/v1/rooms/{ROOM}", auth),
        ("status", f"/v1/rooms/{ROOM}/status", auth),
        ("log head", f"/v1/rooms/{ROOM}/log/checkpoint", auth),
    ]
    if run_ids:
        targets += [("run", f"/v1/rooms/{ROOM}/runs/{run_ids[-1]}", auth),
                    ("receipt", f"/v1/rooms/{ROOM}/runs/{run_ids[-1]}/receipt", auth)]
    if run_ids and args.writes_per_s > 0:
        targets.append((f"status, {args.writes_per_s:g} writes/s",
                        f"/v1/rooms/{ROOM}/status", auth))
    clients = make_clients(url, args.client, args.concurrency)
    out: list[Stats] = []
    try:
        for name, path, headers in targets:
            writer = None
            if "writes/s" in name:  # recipient feedback, each one a write, in the background
                writer = asyncio.ensure_future(_write_loop(
                    url, f"/v1/rooms/{ROOM}/runs/{run_ids[-1]}/feedback", auth,
                    args.writes_per_s))
            first = await clients[0].get(path, headers=headers)
            if first.status_code != 200:
                raise RuntimeError(f"{name}: HTTP {first.status_code} {first.text[:300]}")
            await _load(clients, name, path, headers,  # warm-up, not counted
                        max(args.concurrency * 2, args.requests // 10), args.seconds / 4)
            profiler = None
            if args.profile_out and name == "status" and shutil.which("py-spy"):
                profiler = subprocess.Popen(
                    ["py-spy", "record", "-p", str(server_pid), "-o", args.profile_out,
                     "-r", "200", "--nonblocking", "--format",
                     "raw" if args.profile_out.endswith(".txt") else "flamegraph"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            out.append(await _load(clients, name, path, headers, args.requests, args.seconds))
            if writer is not None:
                if writer.done():
                    writer.result()  # it failed: say why
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)
                profiler.wait(timeout=60)
    finally:
        for client in clients:
            await client.aclose()
    return out


async def _write_loop(url: str, path: str, headers: dict[str, str], per_s: float) -> None:
    """POST feedback that flips ``changed_decision`` ``per_s`` times a second, until cancelled
    (every one changes a row: a write that makes what the coordinator derived stale)."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        flip = False
        while True:
            flip = not flip
            started = time.perf_counter()
            response = await client.post(path, headers=headers,
                                         json={"changed_decision": flip, "note": "bench"})
            if response.status_code != 200:
                raise RuntimeError(f"feedback: HTTP {response.status_code} {response.text[:200]}")
            await asyncio.sleep(max(0.0, 1 / per_s - (time.perf_counter() - started)))


def report(stats: list[Stats], concurrency: int, client: str) -> int:
    """Print the table and the goals; returns the number of requests that failed."""
    base = stats[0]
    print(f"{concurrency} concurrent clients ({client} httpx transport), keep-alive, loopback; "
          "ratios are to /healthz measured in the same run")
    width = max(len(s.name) for s in stats)
    print(f"{'target':<{width}} {'requests':>8} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'req/s':>7} {'p99 / healthz':>13} {'req/s / healthz':>15}")
    for s in stats:
        print(f"{s.name:<{width}} {s.count:>8} {s.errors:>6} {s.p50 * 1e3:>8.1f} {s.p99 * 1e3:>8.1f} "
              f"{s.rps:>7.0f} {s.p99 / base.p99:>12.2f}x {s.rps / base.rps:>14.2f}x")
    by = {s.name: s for s in stats}
    for name in ("room", "status"):
        within = by[name].p99 <= 2 * base.p99
        print(f"goal: {name} p99 within 2x of /healthz's: "
              f"{'met' if within else 'NOT met'} ({by[name].p99 / base.p99:.2f}x)")
    fast = by["status"].rps >= 500
    print(f"goal: status at least 500 req/s: {'met' if fast else 'NOT met'} "
          f"({by['status'].rps:.0f} req/s)")
    errors = sum(s.errors for s in stats)
    if errors:
        print(f"ERRORS: {errors} requests did not answer 200")
    return errors


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--requests", type=int, default=6000, help="per target (a bound)")
    parser.add_argument("--seconds", type=float, default=20.0, help="per target (a bound)")
    parser.add_argument("--client", choices=("lean", "httpx"), default="lean",
                        help="httpx over a minimal keep-alive transport, or httpx's own")
    parser.add_argument("--writes-per-s", type=float, default=20.0,
                        help="background writes during a second status target (0: none)")
    parser.add_argument("--runs", type=int, default=2, help="runs executed before the load")
    parser.add_argument("--profile-out", help="py-spy profile of the server under the status target (.svg or .txt)")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sealroom-bench-api-"))
    data = root / "coordinator"
    data.mkdir()
    server, url = start_server(data, root / "coordinator.log")
    try:
        started = time.perf_counter()
        brand, run_ids = setup_room(root, data, url, args.runs)
        print(f"setup: room signed by 2 parties, {len(run_ids)} run(s) "
              f"({time.perf_counter() - started:.0f} s)")
        token = Client(url, brand).authenticate()
        stats = asyncio.run(measure(url, token, run_ids, args, server.pid))
        failed = report(stats, args.concurrency, args.client)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"kept {root}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
