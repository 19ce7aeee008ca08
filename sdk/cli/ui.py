"""``sealroom ui``: the review page for the people who approve, served by this process.

``sealroom ui [--port N] [--no-browser]`` serves :mod:`sdk.party.ui` on 127.0.0.1 only (port
``N``, default any free port) with this party's key file and home, like every other command.
It prints the URL with a one-time token (as Jupyter does) and opens the browser unless
``--no-browser``; the token is exchanged for a session cookie on first use. Ctrl-C stops it.

The key is opened (and an encrypted key's passphrase asked) before serving; the room must be
pinned on this machine and this key must be the party's key in its manifest.
"""

from __future__ import annotations

import argparse
from typing import Any

from sdk.cli.context import Context
from sdk.errors import ConfigError
from sdk.party.trust import load_room


def cmd_ui(ctx: Context, args: argparse.Namespace) -> int:
    """Serve the review page on 127.0.0.1 and print its one-time URL."""
    from sdk.party.ui.server import UIServer

    room = load_room(ctx, args.room)
    key = ctx.key()
    if room.manifest.party(key.name).identity.signing_key != key.signer.public_key:
        raise ConfigError(f"this key is not the key the manifest lists for {key.name}")
    ctx.room = room.room_id
    server = UIServer(ctx, room.room_id, port=args.port)
    try:
        ctx.say(f"sealroom ui: {key.name} in room {room.room_id}, on 127.0.0.1 only")
        ctx.say(f"open {server.login_url}")
        ctx.note("the link works once (it becomes a session cookie); Ctrl-C stops the server")
        if not args.no_browser:
            import webbrowser

            if not webbrowser.open(server.login_url):
                ctx.note("no browser could be opened: open the link above yourself")
        server.serve_forever()
    except KeyboardInterrupt:
        ctx.note("stopped")
    finally:
        server.shutdown()
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``ui``."""
    ui = sub.add_parser(
        "ui", parents=[common], help="the local review page (approve, runs, budgets)"
    )
    ui.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    ui.add_argument("--no-browser", action="store_true", help="print the link, open no browser")
    ui.set_defaults(handler=cmd_ui)
