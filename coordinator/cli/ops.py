"""Operator commands of ``sealroom`` (registered by entry point, ADR 0006; imported only when run):

* ``coordinator serve`` — run the coordinator under uvicorn (settings from ``SEALROOM_*``
  environment variables, overridden by the options given);
* ``worker build`` — build the worker image hermetically (``coordinator.images``);
* ``worker provision`` — start a worker that generates its keys inside its isolation, verify
  its attestation against the platform key and publish it as the room's current worker; prints
  what parties put in their room file (platform key, measurement);
* ``demo`` — the narrated two-party study (``coordinator.cli.demo``).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdk.cli.context import Context
from sdk.errors import ConfigError, InputError
from sdk.protocol.canonical import parse_json
from sdk.protocol.dsse import Envelope
from sdk.protocol.models import Attestation


@dataclass(frozen=True)
class WorkerInfo:
    """A provisioned worker as the operator publishes it."""

    attestation: Envelope
    platform_key: str
    image_id: str
    code_digest: str
    isolation: str

    def describe(self) -> list[str]:
        """Lines for the operator (and for the room file)."""
        return [
            f"worker attestation {self.attestation.digest()} (simulated provider, isolation "
            f"{self.isolation})",
            f"platform key       {self.platform_key}",
            f"measurement        image {self.image_id}",
            f"                   code  {self.code_digest}",
        ]


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in ("data_dir", "launcher", "worker_image", "database_url"):
        value = getattr(args, name, None)
        if value is not None:
            values[name] = Path(value) if name == "data_dir" else value
    return values


def settings_from(args: argparse.Namespace) -> Any:
    """Coordinator settings from the environment, with the command's options on top."""
    from coordinator.settings import Settings

    return Settings(**_overrides(args))


def make_launcher(settings: Any) -> Any:
    """The launcher the settings name (Docker by default; process = unisolated)."""
    from coordinator.launchers import DockerLauncher, ProcessLauncher

    if settings.launcher == "process":
        return ProcessLauncher()
    return DockerLauncher(settings.worker_image, instance=settings.instance)


def provision(settings: Any) -> WorkerInfo:
    """Provision and publish a worker for the coordinator whose data folder ``settings``
    names (creating the platform secret when missing)."""
    from coordinator.storage.db import Database
    from coordinator.worker import ensure_platform_key, platform_public_key, provision_worker

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    ensure_platform_key(settings.platform_key_file)
    db = Database(settings.db_url)
    try:
        db.create_all()
        envelope = provision_worker(settings, make_launcher(settings), db)
    finally:
        db.dispose()
    attestation = Attestation.from_dict(parse_json(envelope.payload))
    return WorkerInfo(
        attestation=envelope,
        platform_key=platform_public_key(settings.platform_key_file).hex(),
        image_id=attestation.measurement.image_id,
        code_digest=attestation.measurement.code_digest,
        isolation=attestation.isolation,
    )


def _http(method: str, url: str, **kwargs: Any) -> Any:
    import httpx

    from sdk.errors import NetworkError, error_for_code

    try:
        answer = httpx.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        raise NetworkError(f"coordinator unreachable ({type(exc).__name__})") from exc
    if answer.status_code >= 400:
        try:
            err = answer.json()["error"]
            code, message = str(err["code"]), str(err["message"])
        except (ValueError, KeyError, TypeError):
            raise NetworkError(f"coordinator answered HTTP {answer.status_code}") from None
        raise error_for_code(code, message)
    return answer.json()


def provision_remote(url: str, admin_token: str, platform_key_file: Path | None = None
                     ) -> WorkerInfo:
    """Ask the coordinator at ``url`` to provision a worker (``POST /v1/admin/workers``, admin
    token); its platform key comes from ``platform_key_file`` (an operator on the host) or
    ``GET /v1/platform``."""
    info = _http("POST", f"{url}/v1/admin/workers", timeout=900,
                 headers={"Authorization": f"Bearer {admin_token}"})
    if platform_key_file is not None:
        from coordinator.worker import platform_public_key

        platform_key = platform_public_key(platform_key_file).hex()
    else:
        platform_key = str(_http("GET", f"{url}/v1/platform", timeout=30)["platform_key"])
    envelope = Envelope.from_dict(info["envelope"])
    attestation = Attestation.from_dict(parse_json(envelope.payload))
    return WorkerInfo(
        attestation=envelope,
        platform_key=platform_key,
        image_id=attestation.measurement.image_id,
        code_digest=attestation.measurement.code_digest,
        isolation=attestation.isolation,
    )


def _serve(ctx: Context, args: argparse.Namespace) -> int:
    import uvicorn

    from coordinator.app import create_app

    settings = settings_from(args)
    if settings.launcher == "process":
        ctx.note("WARNING: process launcher — workers run UNISOLATED (development only)")
    ctx.note(f"sealroom coordinator on http://{args.host}:{args.port} (data in {settings.data_dir})")
    # the same server options as coordinator.serve.serve (whose ``launcher`` keyword is a
    # Launcher object, not the settings' launcher name)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level,
                access_log=False, timeout_keep_alive=30, h11_max_incomplete_event_size=64 * 1024)
    return 0


def _build(ctx: Context, args: argparse.Namespace) -> int:
    from coordinator import images

    argv = ["build", "--tag", args.tag] + (["--base", args.base] if args.base else [])
    if args.relock:
        argv.append("--relock")
    code = images.main(argv)
    if code != 0:
        raise ConfigError("the worker image build failed (see above)")
    return 0


def _provision(ctx: Context, args: argparse.Namespace) -> int:
    if args.data_dir:
        info = provision(settings_from(args))
    else:
        token = os.environ.get("SEALROOM_ADMIN_TOKEN")
        if not token:
            raise ConfigError("give --data-dir, or --coordinator URL with SEALROOM_ADMIN_TOKEN")
        info = provision_remote(ctx.coordinator_url(), token)
    for line in info.describe():
        ctx.say(line)
    if info.isolation == "none":
        ctx.note("WARNING: an UNISOLATED worker: rooms must say allow_unisolated = true")
    ctx.say("parties put the platform key and the measurement in their room file ([workers]).")
    return 0


def parser_for(command: str) -> argparse.ArgumentParser:
    """The argument parser of one operator command group."""
    parser = argparse.ArgumentParser(prog=f"sealroom {command}")
    sub = parser.add_subparsers(dest="op", required=True, metavar="COMMAND")
    if command == "coordinator":
        serve = sub.add_parser("serve", help="run the coordinator service")
        serve.add_argument("--data-dir", help="blobs, jobs and SQLite ($SEALROOM_DATA_DIR)")
        serve.add_argument("--database-url", help="SQLAlchemy URL (default SQLite in data dir)")
        serve.add_argument("--launcher", choices=("docker", "process"))
        serve.add_argument("--worker-image")
        serve.add_argument("--host", default="127.0.0.1")
        serve.add_argument("--port", type=int, default=8700)
        serve.add_argument("--log-level", default="warning")
        serve.set_defaults(run=_serve)
    elif command == "worker":
        build = sub.add_parser("build", help="build the worker image (no network in the build)")
        build.add_argument("--base", help="base image (default: the offline debootstrap image)")
        build.add_argument("--tag", default="sealroom-worker:latest")
        build.add_argument("--relock", action="store_true")
        build.set_defaults(run=_build)
        prov = sub.add_parser("provision", help="provision and publish a worker")
        prov.add_argument("--data-dir", help="provision directly in this coordinator data folder "
                          "(default: ask --coordinator URL, admin token $SEALROOM_ADMIN_TOKEN)")
        prov.add_argument("--database-url")
        prov.add_argument("--launcher", choices=("docker", "process"))
        prov.add_argument("--worker-image")
        prov.set_defaults(run=_provision)
    else:
        raise InputError(f"unknown operator command {command!r}")
    return parser


def main(command: str, argv: list[str], ctx: Context) -> int:
    """Entry point used by ``sdk.cli`` for ``coordinator``, ``worker`` and ``demo``."""
    if command == "demo":
        from coordinator.cli import demo

        return demo.main(argv, out=ctx.out)
    args = parser_for(command).parse_args(argv)
    result: int = args.run(ctx, args)
    return result
