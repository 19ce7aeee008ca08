"""What library operations report while they work, instead of printing.

An operation calls ``session.emit(Event(...))``; the CLI turns events into lines and progress
bars on stderr, a notebook may pass its own callback or none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

EventKind = Literal["step", "progress", "done"]


@dataclass(frozen=True)
class Event:
    """One report: a finished ``step`` (``text`` says what happened), or ``progress`` of a
    long transfer named ``label`` (``done`` of ``total`` bytes), then ``done`` for that label."""

    kind: EventKind
    text: str = ""
    label: str = ""
    done: int = 0
    total: int = 0


OnEvent = Callable[[Event], None]


def ignore(event: Event) -> None:
    """The default listener: drop every event."""


def step(text: str) -> Event:
    """A finished step worth telling the user."""
    return Event("step", text=text)


def progress(label: str, done: int, total: int) -> Event:
    """Progress of the transfer ``label``."""
    return Event("progress", label=label, done=done, total=total)


def finished(label: str) -> Event:
    """The transfer ``label`` has ended."""
    return Event("done", label=label)
