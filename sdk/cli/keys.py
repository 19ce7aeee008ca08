"""``sealroom keys``: a party's key file (Ed25519 signing + X25519 encryption, one file).

* ``keys new NAME`` writes ``NAME.key`` (mode 0600, optionally passphrase-encrypted) and
  ``NAME.pub`` (the public identity other parties put in the room file) into the home
  directory's ``keys/`` (or ``--out DIR``). It never overwrites an existing key.
* ``keys show`` prints the public identity of a key file (or ``.pub`` file): name, keyid,
  signing and encryption keys.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import Any

from sdk.cli.context import Context
from sdk.errors import ConflictError, InputError
from sdk.party.identities import load_identity, public_file_bytes
from sdk.party.session import ENV_PASSPHRASE
from sdk.protocol.keys import PartyKey


def cmd_new(ctx: Context, args: argparse.Namespace) -> int:
    """Create a new party key; refuses to overwrite an existing one."""
    folder = Path(args.out).expanduser() if args.out else ctx.home.root / "keys"
    folder.mkdir(parents=True, exist_ok=True)
    key_path = folder / f"{args.name}.key"
    pub_path = folder / f"{args.name}.pub"
    if key_path.exists():
        raise ConflictError(f"{key_path} already exists")
    passphrase: bytes | None = None
    if args.passphrase:
        env = os.environ.get(ENV_PASSPHRASE)
        if env is not None:
            passphrase = env.encode()
        elif sys.stdin.isatty():
            first = getpass.getpass("passphrase: ")
            if first != getpass.getpass("again: "):
                raise InputError("the passphrases differ")
            passphrase = first.encode()
        else:
            raise InputError(f"--passphrase needs a terminal or {ENV_PASSPHRASE}")
    key = PartyKey.generate(args.name)
    key.save(key_path, passphrase)
    pub_path.write_bytes(public_file_bytes(key.identity))
    ctx.say(f"key     {key_path}{' (encrypted)' if passphrase else ''}")
    ctx.say(f"public  {pub_path}  (give this file to the other parties)")
    ctx.say(f"keyid   {key.identity.keyid}")
    return 0


def cmd_show(ctx: Context, args: argparse.Namespace) -> int:
    """Show the public identity of a key (never the private part)."""
    if args.file:
        path = Path(args.file).expanduser()
    elif args.name:
        path = ctx.home.key_path(args.name)
    else:
        path = ctx.key_file()
    identity = load_identity(path)
    rows: list[tuple[str, Any]] = [
        ("name", identity.name),
        ("file", str(path)),
        ("keyid", identity.keyid),
        ("signing key", identity.signing_key.hex()),
        ("encryption key", identity.encryption_key.hex()),
    ]
    for label, value in rows:
        ctx.say(f"{label:<15} {value}")
    if args.public_out:
        out = Path(args.public_out).expanduser()
        out.write_bytes(public_file_bytes(identity))
        ctx.say(f"{'wrote':<15} {out}")
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``keys new`` and ``keys show``."""
    keys = sub.add_parser("keys", help="a party's signing and encryption keys")
    ksub = keys.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    new = ksub.add_parser("new", parents=[common], help="create a key file and its public identity")
    new.add_argument("name", help="the party's name as the room file will list it")
    new.add_argument("--out", help="folder for NAME.key and NAME.pub (default: HOME/keys)")
    new.add_argument(
        "--passphrase", action="store_true", help=f"encrypt the key ({ENV_PASSPHRASE} or prompt)"
    )
    new.set_defaults(handler=cmd_new)
    show = ksub.add_parser("show", parents=[common], help="print the public identity of a key")
    show.add_argument("name", nargs="?", help="a key in the home directory (default: --key/--as)")
    show.add_argument("--file", help="a .key or .pub file")
    show.add_argument("--public-out", help="also write the public identity to this .pub file")
    show.set_defaults(handler=cmd_show)
