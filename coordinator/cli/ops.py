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

from coordinator.cli.provision import provision, provision_remote, settings_from
from sdk.cli.context import Context
from sdk.errors import ConfigError, InputError


def _serve(ctx: Context, args: argparse.Namespace) -> int:
    from coordinator.serve import build_server, run_server

    settings = settings_from(args)
    # the one server configuration (coordinator.serve.server_config: limits, timeouts, the
    # bounded httptools protocol), shared with ``python -m coordinator.serve``; built first, so
    # that settings the app refuses (ConfigError) are the only line printed
    server = build_server(settings, args.host, args.port, log_level=args.log_level)
    if settings.launcher == "process":
        ctx.note("WARNING: process launcher — workers run UNISOLATED (development only)")
    ctx.note(f"sealroom coordinator on http://{args.host}:{args.port} (data in {settings.data_dir})")
    run_server(server)
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
        serve.add_argument("--public-origin", metavar="URL",
                           help="the URL parties use, scheme://host[:port], e.g. "
                           "https://coordinator.example: the audience of every login "
                           "($SEALROOM_PUBLIC_ORIGIN; required unless --dev)")
        serve.add_argument("--dev", action="store_true",
                           help="development: without --public-origin, the origin is "
                           "http://HOST:PORT of the address served (loopback use only)")
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
