"""Shared plumbing of the ``sealroom`` commands: the invocation context (a library session
that also writes), plain-text tables and a progress bar on stderr.

Nothing here prints on its own except through :class:`Context`'s writers, so the commands stay
testable in-process.
"""

from __future__ import annotations

import getpass
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from sdk.errors import ConfigError, InputError
from sdk.party.events import Event
from sdk.party.session import ENV_PASSPHRASE, Session


@dataclass
class Context(Session):
    """A :class:`~sdk.party.session.Session` that also writes: results on ``out``, progress
    and warnings on ``err``. Library events become lines and progress bars on ``err``."""

    debug: bool = False
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    inp: TextIO | None = field(default_factory=lambda: sys.stdin)
    _bars: dict[str, ProgressBar] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.on_event = self._render
        if self.passphrase_prompt is None:
            self.passphrase_prompt = _prompt_passphrase

    # -- output ---------------------------------------------------------------------------

    def say(self, text: str = "") -> None:
        """A line on stdout (the command's result)."""
        print(text, file=self.out, flush=True)

    def note(self, text: str) -> None:
        """A line on stderr (progress and warnings, never results)."""
        print(text, file=self.err, flush=True)

    def can_confirm(self) -> bool:
        """Whether a question can be asked: stdin is a terminal."""
        isatty = getattr(self.inp, "isatty", None)
        return bool(isatty and isatty())

    def confirm(self, question: str) -> bool:
        """Ask ``question [y/N]`` on the terminal; True only for y or yes.

        Raises ``InputError`` without a terminal: a question nobody can answer must not hang.
        """
        if self.inp is None or not self.can_confirm():
            raise InputError("pass --yes to confirm without a terminal")
        self.err.write(f"{question} [y/N] ")
        self.err.flush()
        return self.inp.readline().strip().lower() in ("y", "yes")

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Print a plain-text table on stdout."""
        self.say(render_table(headers, rows))

    def _render(self, event: Event) -> None:
        if event.kind == "step":
            self.note(event.text)
        elif event.kind == "progress":
            bar = self._bars.get(event.label)
            if bar is None:
                bar = self._bars[event.label] = ProgressBar(event.label, self.err)
            bar.update(event.done, event.total)
        elif event.kind == "done":
            done = self._bars.pop(event.label, None)
            if done is not None:
                done.finish()


def _prompt_passphrase(path: Path) -> bytes:
    """Ask on the terminal; without one, the key cannot be opened."""
    if not sys.stdin.isatty():
        raise ConfigError(f"{path.name} is encrypted: set {ENV_PASSPHRASE}")
    return getpass.getpass(f"passphrase for {path.name}: ").encode()


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


def short(digest: str) -> str:
    """The first 12 hex characters of a digest, for display."""
    return digest[:12]


Handler = Callable[[Context, Any], int]
