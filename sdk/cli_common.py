"""Shared plumbing of the ``sealroom`` command: the invocation context (home directory,
coordinator URL, party key), plain-text tables, a progress bar on stderr and JSON file I/O.

Nothing here prints on its own except through :class:`Context`'s writers, so the commands stay
testable in-process.
"""

from __future__ import annotations

import getpass
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from sdk.cli_home import Home
from sdk.errors import ConfigError, InputError, NotFoundError
from sdk.protocol.canonical import canonical_json, parse_json
from sdk.protocol.dsse import Envelope
from sdk.protocol.keys import KEY_FILE_MAX_BYTES, PartyKey

if TYPE_CHECKING:
    from sdk.client import Client

MAX_JSON_FILE = 64 * 1024 * 1024
ENV_HOME = "SEALROOM_HOME"
ENV_COORDINATOR = "SEALROOM_COORDINATOR"
ENV_KEY = "SEALROOM_KEY"
ENV_PASSPHRASE = "SEALROOM_PASSPHRASE"  # noqa: S105 - the name of a variable, not a secret
ENV_ROOM = "SEALROOM_ROOM"
ENV_ADMIN_TOKEN = "SEALROOM_ADMIN_TOKEN"  # noqa: S105


@dataclass
class Context:
    """Everything a command needs from the invocation: where state lives, whom to talk to,
    which key to use, and where to write."""

    home: Home
    coordinator: str | None = None
    key_path: str | None = None
    party: str | None = None
    room: str | None = None
    debug: bool = False
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    _key: PartyKey | None = None
    _clients: dict[str, Client] = field(default_factory=dict)

    # -- output ---------------------------------------------------------------------------

    def say(self, text: str = "") -> None:
        """A line on stdout (the command's result)."""
        print(text, file=self.out, flush=True)

    def note(self, text: str) -> None:
        """A line on stderr (progress and warnings, never results)."""
        print(text, file=self.err, flush=True)

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Print a plain-text table on stdout."""
        self.say(render_table(headers, rows))

    # -- key --------------------------------------------------------------------------------

    def key_file(self) -> Path:
        """The party key file to use: ``--key``, ``--as NAME``, ``SEALROOM_KEY``, or the only
        key in the home directory."""
        if self.key_path:
            return Path(self.key_path).expanduser()
        if self.party:
            return self.home.key_path(self.party)
        env = os.environ.get(ENV_KEY)
        if env:
            return Path(env).expanduser()
        keys = self.home.key_names()
        if len(keys) == 1:
            return self.home.key_path(keys[0])
        if not keys:
            raise ConfigError("no party key: run `sealroom keys new NAME` or pass --key FILE")
        raise ConfigError(f"several keys in {self.home.root}: choose one with --as NAME")

    def key(self) -> PartyKey:
        """The party's private key (passphrase from SEALROOM_PASSPHRASE or a prompt)."""
        if self._key is None:
            path = self.key_file()
            if not path.is_file():
                raise NotFoundError(f"key file {path} does not exist")
            data = path.read_bytes()[: KEY_FILE_MAX_BYTES + 1]
            passphrase: bytes | None = None
            if b'"encrypted":true' in data:
                env = os.environ.get(ENV_PASSPHRASE)
                if env is not None:
                    passphrase = env.encode()
                elif sys.stdin.isatty():
                    passphrase = getpass.getpass(f"passphrase for {path.name}: ").encode()
                else:
                    raise ConfigError(f"{path.name} is encrypted: set {ENV_PASSPHRASE}")
            self._key = PartyKey.from_file_bytes(data, passphrase)
        return self._key

    # -- coordinator ----------------------------------------------------------------------------

    def coordinator_url(self) -> str:
        """The coordinator's base URL (``--coordinator`` or ``SEALROOM_COORDINATOR``)."""
        url = self.coordinator or os.environ.get(ENV_COORDINATOR)
        if not url:
            raise ConfigError(f"no coordinator: pass --coordinator URL or set {ENV_COORDINATOR}")
        return url.rstrip("/")

    def client(self, *, as_party: bool = True) -> Client:
        """An HTTP client of the coordinator, authenticated as the party when ``as_party``."""
        from sdk.client import Client

        slot = "party" if as_party else "anonymous"
        if slot not in self._clients:
            key = self.key() if as_party else None
            admin = os.environ.get(ENV_ADMIN_TOKEN) if not as_party else None
            self._clients[slot] = Client(self.coordinator_url(), key=key, admin_token=admin)
        return self._clients[slot]

    def room_id(self, explicit: str | None = None) -> str:
        """The room: ``--room``, ``SEALROOM_ROOM``, or the only room pinned in the home."""
        room = explicit or self.room or os.environ.get(ENV_ROOM)
        if room:
            return room
        rooms = self.home.room_ids()
        if len(rooms) == 1:
            return rooms[0]
        raise ConfigError("which room? pass --room ROOM")

    def close(self) -> None:
        """Close open HTTP clients."""
        for client in self._clients.values():
            closer = getattr(client, "close", None)
            if callable(closer):
                closer()
        self._clients.clear()


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table: left-aligned text, right-aligned numbers."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], len(value))
    numeric = [
        all(_is_number(row[i]) for row in rows if row[i] is not None) and bool(rows)
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(widths[i]) if numeric[i] else v.ljust(widths[i]) for i, v in enumerate(values)
        ]
        return "  ".join(parts).rstrip()

    out = [line(list(headers)), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in cells]
    return "\n".join(out)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return False
        return True
    return False


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, str) and _is_number(value) and any(c in value for c in ".eE"):
        return _number(float(value))
    return str(value)


def _number(value: float) -> str:
    """Four significant digits, without exponents for everyday magnitudes."""
    if abs(value) >= 1000:
        return f"{value:.0f}"
    return f"{value:.4g}" if abs(value) >= 1e-4 or value == 0 else f"{value:.2e}"


class ProgressBar:
    """A one-line progress bar on stderr, redrawn at most ten times a second; when stderr is
    not a terminal only the final line is written."""

    def __init__(self, label: str, stream: TextIO, *, width: int = 30) -> None:
        self.label = label
        self.stream = stream
        self.width = width
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.started = time.monotonic()
        self._last = 0.0
        self._done = 0
        self._total = 0

    def update(self, done: int, total: int) -> None:
        """Record progress (bytes done of total)."""
        self._done, self._total = done, total
        now = time.monotonic()
        if self.tty and (now - self._last > 0.1 or done >= total):
            self._last = now
            self.stream.write("\r" + self._line())
            self.stream.flush()

    def finish(self) -> None:
        """Write the final line."""
        self._done = max(self._done, self._total)
        line = self._line()
        self.stream.write(("\r" + line + "\n") if self.tty else (line + "\n"))
        self.stream.flush()

    def _line(self) -> str:
        total = max(self._total, 1)
        frac = min(1.0, self._done / total)
        filled = int(frac * self.width)
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self._done / elapsed / 1e6
        return (
            f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {frac * 100:5.1f}% "
            f"{self._done / 1e6:8.1f} MB {rate:7.1f} MB/s"
        )


def read_json_file(path: str | Path, what: str) -> Any:
    """Read strict JSON from a file (size-capped). Raises ``NotFoundError``/``InputError``."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise NotFoundError(f"{what}: {p} does not exist")
    with open(p, "rb") as handle:
        data = handle.read(MAX_JSON_FILE + 1)
    if len(data) > MAX_JSON_FILE:
        raise InputError(f"{what}: {p.name} is too large")
    return parse_json(data, max_bytes=MAX_JSON_FILE)


def read_envelope_file(path: str | Path, what: str) -> Envelope:
    """Read a DSSE envelope from a JSON file."""
    return Envelope.from_dict(read_json_file(path, what))


def write_json_file(path: str | Path, value: Any) -> Path:
    """Write canonical JSON atomically (temp file, then rename)."""
    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_bytes(canonical_json(value) + b"\n")
    os.replace(tmp, p)
    return p


def short(digest: str) -> str:
    """The first 12 hex characters of a digest, for display."""
    return digest[:12]


Handler = Callable[[Context, Any], int]
