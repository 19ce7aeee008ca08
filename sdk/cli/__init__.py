"""The ``sealroom`` command: one entry point for parties, auditors and operators.

Parties: ``keys``, ``room``, ``data``, ``bundle``, ``run``, ``result``, ``feedback``.
Auditors: ``receipt verify`` (offline), ``log verify``.
Operators: ``coordinator serve``, ``worker build``, ``worker provision``, ``demo`` — provided by
the coordinator package through the ``sealroom.commands`` entry point (:mod:`sdk.cli.plugins`,
ADR 0006), so the SDK never imports it; without the coordinator extra they fail with one
``E_CONFIG`` line.

This package is the only code that prints; the operations are :mod:`sdk.party`.

Promises: exit code 0 on success, otherwise the ``exit_code`` of the error's class
(``sdk.errors``); an error is reported as one line from ``diagnostics()`` on stderr; a
traceback only with ``--debug``. Results go to stdout, progress and warnings to stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import TextIO

from sdk.cli import plugins
from sdk.cli.context import Context
from sdk.errors import InputError, SealroomError
from sdk.party.home import Home
from sdk.party.session import ENV_COORDINATOR, ENV_HOME

INTERRUPTED = 130


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Options accepted before or after the command (after it, they override)."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument("--home", default=default(None), help=f"state folder (${ENV_HOME}, ~/.sealroom)")
    parser.add_argument("--coordinator", default=default(None), help=f"coordinator URL (${ENV_COORDINATOR})")
    parser.add_argument("--key", default=default(None), help="party key file ($SEALROOM_KEY)")
    parser.add_argument("--as", dest="party", default=default(None), help="use HOME/keys/NAME.key")
    parser.add_argument("--room", default=default(None), help="room id ($SEALROOM_ROOM)")
    parser.add_argument("--debug", action="store_true", default=default(False), help="tracebacks")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sealroom")
    except PackageNotFoundError:
        return "unknown"


def build_parser(
    found: dict[str, EntryPoint] | None = None,
) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The argument parser of every command, and the parent parser of shared options.

    ``found`` are the plugin commands to list (default: discover them all).
    """
    from sdk.cli import attestation, audit, bundle, data, keys, match, room, run, ui

    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, suppress=True)
    parser = argparse.ArgumentParser(
        prog="sealroom",
        description="sealroom: a confidential data clean room with verifiable receipts.",
    )
    _global_options(parser, suppress=False)
    parser.add_argument("--version", action="version", version=f"sealroom {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (keys, room, data, match, bundle, run, audit, attestation, ui):
        module.register(sub, common)
    for name, entry in sorted((plugins.discover() if found is None else found).items()):
        if name not in sub.choices:  # a plugin never shadows a party command
            sub.add_parser(name, help=plugins.help_of(entry), add_help=False)
    _describe(parser)
    return parser, common


def _describe(parser: argparse.ArgumentParser) -> None:
    """Give every command's --help the promise its handler's docstring states."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                handler = child.get_default("handler")
                if handler is not None and child.description is None and handler.__doc__:
                    child.description = " ".join(handler.__doc__.split())
                _describe(child)


PARTY_COMMANDS = {
    "keys", "room", "data", "bundle", "run", "result", "feedback", "receipt", "log", "attestation",
    "ui", "match",
}
_VALUED = {"--home", "--coordinator", "--key", "--as", "--room"}


def _command_index(argv: list[str]) -> int | None:
    """The index of the command's name in ``argv`` (after the global options), if any."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in _VALUED:
            i += 2
        elif arg.startswith("-"):
            i += 1
        else:
            return i
    return None


def make_context(
    args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None
) -> Context:
    """The context of one invocation from parsed arguments and the environment."""
    home = args.home or os.environ.get(ENV_HOME) or str(Path.home() / ".sealroom")
    return Context(
        home=Home(Path(home)),
        coordinator=args.coordinator,
        key_path=args.key,
        party=args.party,
        room=args.room,
        debug=bool(args.debug),
        out=out or sys.stdout,
        err=err or sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``sealroom`` command; returns its exit code."""
    return run_command(list(sys.argv[1:] if argv is None else argv))


def run_command(argv: Sequence[str], *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run one command with its output sent to ``out``/``err`` (the demo runs commands
    in-process this way); same promises as :func:`main`."""
    argv = list(argv)
    at = _command_index(argv)
    # a party command needs no plugin discovery (it reads every installed distribution)
    found = {} if at is not None and argv[at] in PARTY_COMMANDS else plugins.discover()
    split = at if at is not None and argv[at] in found else None
    if split is not None:
        glob = argparse.ArgumentParser(prog="sealroom", add_help=False)
        _global_options(glob, suppress=False)
        args = glob.parse_args(argv[:split])
        args.command, args.rest = argv[split], argv[split + 1 :]
    else:
        args = build_parser(found if at is not None else None)[0].parse_args(argv)
    ctx = make_context(args, out, err)
    try:
        if split is not None:
            return plugins.load(found[args.command]).run(list(args.rest), ctx)
        code: int = args.handler(ctx, args)
        return code
    except SealroomError as exc:
        if ctx.debug:
            traceback.print_exc(file=ctx.err)
        ctx.note(f"error: {exc.diagnostics()}")
        return exc.exit_code
    except OSError as exc:  # a file the user named cannot be read or written
        if ctx.debug:
            traceback.print_exc(file=ctx.err)
        where = f": {exc.filename}" if exc.filename else ""
        error = InputError(f"{exc.strerror or type(exc).__name__}{where}")
        ctx.note(f"error: {error.diagnostics()}")
        return error.exit_code
    except KeyboardInterrupt:
        ctx.note("interrupted")
        return INTERRUPTED
    except Exception as exc:  # an unexpected failure still ends in one line
        if ctx.debug:
            traceback.print_exc(file=ctx.err)
        name = type(exc).__name__
        detail = str(exc).splitlines()[0][:200] if str(exc) else ""
        ctx.note(f"error: E_INTERNAL: {name}{': ' + detail if detail else ''} (rerun with --debug)")
        return 1
    finally:
        ctx.close()


if __name__ == "__main__":
    raise SystemExit(main())
