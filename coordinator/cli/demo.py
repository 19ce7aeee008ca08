"""``sealroom demo``: a complete two-party study on this machine, narrated command by command.

What it promises:

* an embedded coordinator (SQLite in a temporary folder, a separate ``sealroom coordinator
  serve`` process on a free loopback port) with the Docker launcher when an engine answers and
  the worker image exists, else the unisolated process launcher with a visible warning (and the
  room file then says ``allow_unisolated = true``);
* the operator provisions a worker; two parties — a B2B SaaS brand (its customer list with
  conversions) and a publisher (visitors with ad exposure and a segment) — each with seeded
  synthetic data (120k and 150k rows by default) and its own key and home folder;
* a room both sign, sealed uploads, the ``overlap`` and ``incrementality`` templates reviewed and
  approved by both, two runs, the decrypted results printed as tables next to the ground truth,
  and every receipt and the log verified as an auditor would (offline, from files).

Every step is a real ``sealroom`` command, run in-process and echoed, so the transcript doubles
as a walkthrough. Any failing step stops the demo with that command's one-line error.
"""

from __future__ import annotations

import argparse
import io
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO, cast

from coordinator.cli.demo_data import BRAND_SCHEMA, PUBLISHER_SCHEMA, DemoData, generate
from sdk.cli import run_command
from sdk.errors import ConfigError, SealroomError

ROOM_ID = "brand-x-publisher"
WORKER_IMAGE = os.environ.get("SEALROOM_WORKER_IMAGE", "sealroom-worker:latest")


class _Indent(io.TextIOBase):
    """Writes to ``stream`` with every line indented, and keeps a copy."""

    def __init__(self, stream: TextIO, prefix: str = "    ") -> None:
        self.stream, self.prefix, self.copy = stream, prefix, io.StringIO()
        self._bol = True

    def isatty(self) -> bool:
        return bool(getattr(self.stream, "isatty", lambda: False)())

    def write(self, text: str) -> int:
        self.copy.write(text)
        text = text.replace("\r", "\r" + self.prefix)
        for chunk in text.splitlines(keepends=True):
            if self._bol and chunk.strip("\r\n"):
                self.stream.write(self.prefix)
            self.stream.write(chunk)
            self._bol = chunk.endswith("\n")
        self.stream.flush()
        return len(text)


def docker_ready(image: str) -> str | None:
    """None when a Docker engine answers and ``image`` exists, else the reason it cannot."""
    try:
        import docker
        import docker.errors
    except ImportError:
        return "the docker package is not installed"
    try:
        client = docker.from_env(timeout=5)
        client.ping()
    except Exception as exc:
        return f"the engine does not answer: {type(exc).__name__}"
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        return "the image is not built"
    except Exception as exc:
        return f"the image cannot be inspected: {type(exc).__name__}"
    return None


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Demo:
    """The state of one demo run."""

    work: Path
    rows: int
    launcher: str
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    url: str = ""
    admin_token: str = field(default_factory=lambda: secrets.token_hex(24))
    started: float = field(default_factory=time.monotonic)
    server: subprocess.Popen[bytes] | None = None
    data: DemoData | None = None
    fallback: str = ""

    def home(self, who: str) -> Path:
        return self.work / f"home-{who}"

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def section(self, title: str) -> None:
        self.say("")
        self.say(f"== {title} " + "=" * max(0, 74 - len(title)))

    def sh(self, who: str, *argv: str, quiet: bool = False, expect_error: str = "",
           silent: bool = False) -> str:
        """Run one ``sealroom`` command as ``who`` (own home folder); returns its stdout.
        With ``expect_error``, the command must fail with that error code; ``silent`` shows
        nothing, not even the command (a step run beside another)."""
        shown = " ".join(a if " " not in a else repr(a) for a in argv)
        if not silent:
            self.say(f"[{who}] $ sealroom {shown}")
        sink = _Indent(io.StringIO() if quiet or silent else self.out)
        # explicit home, coordinator, key and room: nothing comes from the caller's SEALROOM_*
        full = ["--home", str(self.home(who)), "--room", ROOM_ID]
        if self.url:
            full += ["--coordinator", self.url]
        if who in ("brand", "publisher") and argv[:2] != ("keys", "new"):
            full += ["--as", who]
        err = _Indent(io.StringIO() if silent else self.out if expect_error else self.err)
        code = run_command([*full, *argv], out=cast(TextIO, sink), err=cast(TextIO, err))
        text = sink.copy.getvalue()
        if expect_error:
            if code == 0 or expect_error not in err.copy.getvalue():
                raise SealroomDemoError(f"step should have failed with {expect_error}: {shown}")
            return text
        if code != 0:
            raise SealroomDemoError(f"step failed (exit {code}): sealroom {shown}")
        return text


class SealroomDemoError(SealroomError):
    """A demo step failed; the step's own error was printed just above."""

    code = "E_CONFIG"
    exit_code = 11


@contextmanager
def coordinator_process(demo: Demo) -> Iterator[None]:
    """Run ``sealroom coordinator serve`` on a free loopback port until the block ends."""
    port = free_port()
    data_dir = demo.work / "coordinator"
    data_dir.mkdir(parents=True)
    log = open(demo.work / "coordinator.log", "wb")
    # the embedded coordinator takes nothing from the caller's SEALROOM_* settings (no
    # database URL, data dir or token of a real deployment) except the worker image name
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALROOM_")}
    env.update(SEALROOM_ADMIN_TOKEN=demo.admin_token, SEALROOM_WORKER_IMAGE=WORKER_IMAGE)
    cmd = [sys.executable, "-m", "sdk.cli", "coordinator", "serve", "--data-dir", str(data_dir),
           "--host", "127.0.0.1", "--port", str(port), "--launcher", demo.launcher, "--dev"]
    demo.server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    demo.url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(demo)
        yield
    finally:
        demo.server.terminate()
        try:
            demo.server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            demo.server.kill()
            demo.server.wait()
        log.close()


def _wait_healthy(demo: Demo, timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    assert demo.server is not None
    while time.monotonic() < deadline:
        if demo.server.poll() is not None:
            tail = (demo.work / "coordinator.log").read_text(errors="replace")[-600:]
            raise ConfigError(f"the coordinator exited at start-up: {tail.strip().splitlines()[-1:]}")
        try:
            if httpx.get(f"{demo.url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise ConfigError("the coordinator did not answer /healthz within a minute")


def room_toml(brand_pub: Path, publisher_pub: Path, platform_key: str, image_id: str,
              code_digest: str, *, unisolated: bool, allow_custom_code: bool = False) -> str:
    """The room file both parties sign (public keys given as .pub file paths)."""
    def schema(cols: dict[str, str]) -> str:
        return "{ " + ", ".join(f'{k} = "{v}"' for k, v in cols.items()) + " }"

    return f"""# The room both parties sign: who takes part, which data, which worker, which limits.
room_id = "{ROOM_ID}"
min_group_size = 50        # no released group may describe fewer than 50 people
max_runs = 10              # default cap of runs per approved bundle

[[parties]]
name = "brand"
public_key = "{brand_pub}"
roles = ["data_owner", "analyst", "recipient"]

[[parties]]
name = "publisher"
public_key = "{publisher_pub}"
roles = ["data_owner", "analyst", "recipient"]

[[datasets]]
name = "customers"
owner = "brand"
id_column = "email"
id_kind = "email"          # trimmed, lowercased and SHA-256 hashed before sealing
min_group_size = 50
epsilon_budget = "4"
schema = {schema(BRAND_SCHEMA)}
# what a query may do with each column (a column without a role is private: never read)
roles = {{ plan = "dimension", employees = "filter", converted = "measure", arr = "measure" }}
allow_custom_code = {"true" if allow_custom_code else "false"}  # may whole-table custom code read it?

[[datasets]]
name = "visitors"
owner = "publisher"
id_column = "email"
id_kind = "email"
min_group_size = 50
epsilon_budget = "4"
schema = {schema(PUBLISHER_SCHEMA)}
roles = {{ exposed = "dimension", segment = "dimension", visits = "measure" }}
allow_custom_code = {"true" if allow_custom_code else "false"}

[workers]
providers = ["simulated"]
platform_keys = ["{platform_key}"]
allow_unisolated = {"true" if unisolated else "false"}

[[workers.measurements]]
image_id = "{image_id}"
code_digest = "{code_digest}"
"""


def _field(text: str, prefix: str) -> str:
    for line in text.splitlines():
        if line.startswith(prefix):
            return line[len(prefix):].split()[0].rstrip(":")
    raise ConfigError(f"demo: no {prefix!r} in the command's output")


def run_demo(demo: Demo) -> int:
    """The narrated study; see the module docstring."""
    from coordinator.cli.provision import provision_remote

    demo.say("sealroom demo: a B2B SaaS brand and a publisher measure their audience overlap "
             "and the campaign's incrementality without showing each other a single row.")
    demo.say(f"working folder {demo.work}")
    demo.section("operator: start the coordinator and provision a worker")
    if demo.launcher == "process":
        why = (f"no Docker engine with the worker image {WORKER_IMAGE} ({demo.fallback}): "
               if demo.fallback else "--launcher process: ")
        demo.say(f"WARNING: {why}using the UNISOLATED process launcher. Nothing separates the "
                 "worker from this machine; the room file says allow_unisolated = true and every "
                 "receipt says isolation none."
                 + (" Build the image with `sealroom worker build`." if demo.fallback else ""))
    with coordinator_process(demo):
        demo.say(f"coordinator {demo.url} (SQLite in {demo.work / 'coordinator'}, "
                 f"{demo.launcher} launcher)")
        demo.say("[operator] $ sealroom worker provision   (POST /v1/admin/workers)")
        worker = provision_remote(demo.url, demo.admin_token,
                                  demo.work / "coordinator" / "platform.key")
        for line in worker.describe(WORKER_IMAGE):
            demo.say(f"    {line}")
        _study(demo, worker.platform_key, worker.image_id, worker.code_digest)
    demo.section("done")
    demo.say(f"the whole study took {time.monotonic() - demo.started:.0f} s")
    return 0


def _study(demo: Demo, platform_key: str, image_id: str, code_digest: str) -> None:
    demo.section("each party makes its key (kept in its own home folder)")
    for party in ("brand", "publisher"):
        demo.sh(party, "keys", "new", party)
    demo.section("synthetic first-party data (seeded; never leaves its owner unsealed)")
    n = demo.rows
    demo.data = generate(demo.work / "data", brand_rows=n, publisher_rows=n * 5 // 4,
                         overlap=n * 3 // 8, junk=max(6, n // 500))
    demo.say(f"brand     {demo.data.brand_csv}: {n} customers (email, plan, employees, "
             "converted, arr)")
    demo.say(f"publisher {demo.data.publisher_csv}: {n * 5 // 4} visitors (email, exposed, "
             f"segment, visits), and {max(6, n // 500)} rows with no usable email")
    demo.section("the room: written once, signed by both parties")
    room_file = demo.work / "room.toml"
    room_file.write_text(room_toml(
        demo.home("brand") / "keys" / "brand.pub", demo.home("publisher") / "keys" / "publisher.pub",
        platform_key, image_id, code_digest, unisolated=demo.launcher == "process"))
    manifest = demo.work / "room.manifest.json"
    demo.sh("brand", "room", "new", str(room_file), "-o", str(manifest), quiet=True)
    demo.sh("brand", "room", "sign", str(manifest), quiet=True)
    demo.sh("publisher", "room", "sign", str(manifest))
    demo.sh("brand", "room", "verify", str(manifest), quiet=True)
    demo.sh("brand", "room", "submit", str(manifest))
    demo.section("before uploading: is the overlap worth it? (private set intersection, no worker)")
    _preview(demo)
    demo.section("uploads: attestation verified, identifiers validated and hashed, sealed to the worker")
    demo.sh("brand", "data", "upload", str(demo.data.brand_csv), "--dataset", "customers")
    demo.sh("publisher", "data", "upload", str(demo.data.publisher_csv), "--dataset", "visitors")
    demo.section("the brand proposes two template bundles")
    overlap = demo.sh(
        "brand", "bundle", "new", "--template", "overlap", "--param", "left=customers",
        "--param", "right=visitors", "--param", "epsilon=0.5", "--recipient", "brand",
        "--recipient", "publisher", "--title", "Audience overlap",
        "--purpose", "How many of our customers does the publisher reach?",
        "-o", str(demo.work / "overlap.bundle.json"))
    lift = demo.sh(
        "brand", "bundle", "new", "--template", "incrementality", "--param", "exposure=visitors",
        "--param", "conversions=customers", "--param", "epsilon=1", "--param", "spend=arr",
        "--param", "spend_upper=50000", "--recipient", "brand", "--max-runs", "3",
        "--title", "Campaign incrementality",
        "--purpose", "Did exposure to the campaign lift paid conversion?",
        "-o", str(demo.work / "lift.bundle.json"))
    digests = {"overlap": _field(overlap, "bundle "), "lift": _field(lift, "bundle ")}
    for name in ("overlap", "lift"):
        demo.sh("brand", "bundle", "submit", str(demo.work / f"{name}.bundle.json"), quiet=True)
    demo.section("both parties review and approve the exact bundle digests")
    demo.sh("brand", "bundle", "approve", "--yes", digests["lift"])
    demo.say("    (a bundle runs only once EVERY party approved its exact digest:)")
    demo.sh("brand", "run", digests["lift"], expect_error="E_SIGNATURE")
    demo.sh("publisher", "bundle", "review", digests["lift"])
    demo.sh("publisher", "bundle", "review", digests["overlap"], "--no-code", quiet=True)
    for party, name in (("publisher", "overlap"), ("publisher", "lift"), ("brand", "overlap")):
        demo.sh(party, "bundle", "approve", "--yes", digests[name])
    demo.section("runs: a fresh worker per run verifies everything again")
    runs = {name: _field(demo.sh("brand", "run", digests[name]), "run ") for name in digests}
    demo.section("results: decrypted by each recipient, receipts verified")
    demo.sh("brand", "result", "get", runs["overlap"], "-o", str(demo.work / "overlap.csv"))
    demo.sh("publisher", "result", "get", runs["overlap"])
    demo.sh("brand", "result", "get", runs["lift"], "-o", str(demo.work / "lift.parquet"))
    _truth(demo)
    demo.sh("brand", "feedback", runs["lift"], "--changed-decision", "yes")
    demo.sh("brand", "room", "status")
    demo.section("auditor: every receipt and the whole log, verified offline from files")
    audit = demo.work / "audit"
    audit.mkdir()
    shutil.copy(manifest, audit / "room.manifest.json")
    for run_id in runs.values():
        src = demo.home("brand") / "rooms" / ROOM_ID / "receipts" / f"{run_id}.json"
        shutil.copy(src, audit / f"{run_id}.receipt.json")
        demo.sh("auditor", "receipt", "verify", str(audit / f"{run_id}.receipt.json"),
                "--manifest", str(audit / "room.manifest.json"))
    demo.sh("publisher", "log", "verify")
    demo.sh("publisher", "log", "export", "-o", str(audit / "log.json"))
    demo.sh("auditor", "log", "verify", "--from", str(audit / "log.json"), "--manifest",
            str(audit / "room.manifest.json"))


def _preview(demo: Demo) -> None:
    """Both parties run ``match preview`` on their local files at the same time (each waits
    for the other); the brand's side is shown."""
    data = demo.data
    assert data is not None
    failure: list[BaseException] = []

    argv = ("match", "preview", "--dataset", "visitors", "--with", "brand", "--file",
            str(data.publisher_csv))
    demo.say(f"[publisher] $ sealroom {' '.join(argv)}    (at the same time, output not shown)")

    def publisher() -> None:
        try:
            demo.sh("publisher", *argv, silent=True)
        except BaseException as exc:  # re-raised in the main thread
            failure.append(exc)

    other = threading.Thread(target=publisher, daemon=True)
    other.start()
    demo.sh("brand", "match", "preview", "--dataset", "customers", "--with", "publisher",
            "--file", str(data.brand_csv))
    other.join()
    if failure:
        raise failure[0]


def _truth(demo: Demo) -> None:
    assert demo.data is not None
    t = demo.data.truth
    demo.say("    ground truth (known only because this data is synthetic): "
             f"overlap {t.overlap}, brand match rate {t.overlap / t.brand_rows:.3f}, "
             f"publisher match rate {t.overlap / t.publisher_rows:.3f}; conversion exposed "
             f"{t.exposed_conversion_rate:.4f} vs control {t.control_conversion_rate:.4f} "
             f"(lift {t.exposed_conversion_rate - t.control_conversion_rate:+.4f})")


def main(argv: list[str], out: TextIO | None = None) -> int:
    """``sealroom demo [--rows N] [--launcher auto|docker|process] [--workdir DIR] [--keep]``."""
    parser = argparse.ArgumentParser(prog="sealroom demo", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=120_000, help="brand rows (publisher: 1.25x)")
    parser.add_argument("--launcher", choices=("auto", "docker", "process"), default="auto")
    parser.add_argument("--workdir", help="keep everything in this (new) folder")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    if args.rows < 1000:
        raise ConfigError("--rows: at least 1000")
    launcher, reason = args.launcher, None
    if launcher in ("auto", "docker"):
        reason = docker_ready(WORKER_IMAGE)
        if reason is not None and launcher == "docker":
            raise ConfigError(f"docker launcher unavailable: {reason}")
        launcher = "docker" if reason is None else "process"
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="sealroom-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    demo = Demo(work=work, rows=args.rows, launcher=launcher, out=out or sys.stdout,
                fallback=reason or "")
    try:
        code = run_demo(demo)
    except BaseException:
        print(f"the demo stopped; its files (coordinator.log included) are kept in {work}",
              file=sys.stderr)
        raise
    if not args.workdir and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return code
