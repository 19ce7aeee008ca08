"""The services a request handler needs, built once per app and reached through the request."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Request

from coordinator.launchers.base import Launcher
from coordinator.settings import Settings
from coordinator.storage import BlobStore, Database

if TYPE_CHECKING:
    from coordinator.runs import RunExecutor


@dataclass
class Services:
    """Settings, database, blob store, launcher and the run executor of one coordinator."""

    settings: Settings
    db: Database
    blobs: BlobStore
    launcher: Launcher
    jobs_dir: Path
    executor: RunExecutor | None = None
    counters: dict[str, Any] = field(default_factory=dict)


def get_services(request: Request) -> Services:
    """FastAPI dependency: the app's services."""
    services: Services = request.app.state.services
    return services
