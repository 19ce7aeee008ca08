"""Operator commands of ``sealroom`` (registered by entry point, ADR 0006; imported only when run):

* ``coordinator serve`` — run the coordinator under uvicorn (settings from ``SEALROOM_*``
  environment variables, overridden by the options given);
* ``worker build`` — build the worker image hermetically and reproducibly
  (``coordinator.images``); prints its measurement, the tree digest of the image;
* ``worker measure IMAGE`` — print the measurement (tree digest) of a local image, e.g. a
  party's own rebuild, to compare with the one a room pins (``coordinator.imagemeasure``);
* ``worker provision`` — start a worker that generates its keys inside its isolation, verify
  its attestation against the platform key and publish it as the room's current worker; prints
  what parties put in their room file (platform key, measurement);
* ``demo`` — the narrated two-party study (``coordinator.cli.demo``).
"""

from __future__ import annotations

import argparse
import json
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
    from coordinator.imagemeasure import connect, measure_image

    client = connect(timeout=900)  # no engine: one line, before any wheel is fetched

    def log(line: str) -> None:
        ctx.note(line)

    base = args.base or os.environ.get("SEALROOM_IMAGE_BASE") or images.OFFLINE_BASE
    try:
        image_id = images.build_image(images.WORKER, base=base, tag=args.tag,
                                      relock=args.relock, nocache=args.no_cache, client=client,
                                      log=log)
    except images.ImageBuildError as exc:
        ctx.note(str(exc))
        raise ConfigError("the worker image build failed (see above)") from None
    ctx.say(f"worker image {args.tag} (docker id {image_id}, base {base})")
    ctx.say(f"measurement  {measure_image(client, image_id)}")
    return 0


def _measure(ctx: Context, args: argparse.Namespace) -> int:
    from coordinator.imagemeasure import connect, image_id_of, measure_image
    from coordinator.images import source_code_digest

    client = connect()
    image_id, _ = image_id_of(client, args.image)
    measurement = measure_image(client, image_id, use_cache=not args.no_cache)
    code = source_code_digest()
    if args.json:
        ctx.say(json.dumps({"image": args.image, "docker_image_id": image_id,
                            "measurement": measurement, "source_code_digest": code},
                           indent=2, sort_keys=True))
        return 0
    ctx.say(f"image        {args.image} (docker id {image_id})")
    ctx.say(f"measurement  {measurement}")
    ctx.say(f"code digest  {code or 'unavailable'}  (of the sources in this checkout, for "
            "reference)")
    return 0


def _provision(ctx: Context, args: argparse.Namespace) -> int:
    if args.data_dir:
        info = provision(settings_from(args))
    else:
        token = os.environ.get("SEALROOM_ADMIN_TOKEN")
        if not token:
            raise ConfigError("give --data-dir, or --coordinator URL with SEALROOM_ADMIN_TOKEN")
        info = provision_remote(ctx.coordinator_url(), token)
    image = args.worker_image or os.environ.get("SEALROOM_WORKER_IMAGE") or "IMAGE"
    for line in info.describe(image):
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
        build.add_argument("--no-cache", action="store_true", help="build every step afresh")
        build.set_defaults(run=_build)
        measure = sub.add_parser("measure", help="print the measurement (tree digest) of an "
                                 "image, e.g. your own rebuild")
        measure.add_argument("image", metavar="IMAGE", help="image tag or id")
        measure.add_argument("--json", action="store_true", help="print a JSON object")
        measure.add_argument("--no-cache", action="store_true",
                             help="measure again rather than trust the cache")
        measure.set_defaults(run=_measure)
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
