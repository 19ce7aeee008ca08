"""What every part of the coordinator is handed: its services and who is calling.

This module sits at the bottom of the coordinator: it imports settings, storage and the
launcher contract, and nothing that handles requests or runs. The run executor is reached
through :class:`RunWaker`, the one thing request handlers need of it, so nothing here imports
:mod:`coordinator.runs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from coordinator.launchers.base import Launcher
from coordinator.settings import Settings
from coordinator.storage import BlobStore, Database

#: responses counted per status class ("2xx", "4xx", ...), for ``/metrics``
HttpCounters = dict[str, int]


class RunWaker(Protocol):
    """What request handlers need of the run executor: to be told a run was queued."""

    def wake(self) -> None:
        """Look at the run queue now rather than at the next poll."""


@dataclass
class Services:
    """Settings, database, blob store, launcher and the run executor of one coordinator."""

    settings: Settings
    db: Database
    blobs: BlobStore
    launcher: Launcher
    jobs_dir: Path
    executor: RunWaker | None = None
    http_counters: HttpCounters = field(default_factory=dict)


@dataclass(frozen=True)
class Caller:
    """Who is calling: a party's signing key (hex), or the operator."""

    key: str | None = None
    admin: bool = False
