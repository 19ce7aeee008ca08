"""The app factory: ``create_app(settings) -> FastAPI``.

Builds the services (database, blob store, launcher, run executor), mounts the routes under
``/v1`` (plus ``/metrics`` and ``/healthz``), installs the one error mapping and the body cap.
Start-up removes stale temp blobs, reconciles runs a crash left ``running`` and starts the
executor; shutdown stops it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from starlette.concurrency import run_in_threadpool

from coordinator.context import Services
from coordinator.errors import install_error_handlers
from coordinator.launchers.base import Launcher
from coordinator.middleware import BodyLimitMiddleware
from coordinator.routes import admin, auth, bundles, log, previews, rooms, runs, status, uploads
from coordinator.runs import RunExecutor
from coordinator.settings import NO_ORIGIN, Settings
from coordinator.storage import BlobStore, Database
from coordinator.worker import current_worker, ensure_platform_key, provision_worker
from sdk.errors import ConfigError, ConflictError

logger = logging.getLogger("sealroom.coordinator")


def make_launcher(settings: Settings) -> Launcher:
    """The launcher the settings ask for (Docker by default; the process launcher is
    unisolated and for development only)."""
    from coordinator.launchers import DockerLauncher, ProcessLauncher
    from coordinator.launchers.profile import DEFAULT_PROFILE, TSM_MOUNT

    if settings.launcher == "process":
        logger.warning("process launcher: workers run UNISOLATED (development only)")
        return ProcessLauncher()
    if settings.attestation_provider in ("amd-sev-snp", "intel-tdx"):
        profile = dataclasses.replace(DEFAULT_PROFILE, tsm_reports=TSM_MOUNT)
        return DockerLauncher(settings.worker_image, instance=settings.instance, profile=profile,
                              warm=settings.warm_worker)
    return DockerLauncher(settings.worker_image, instance=settings.instance,
                          warm=settings.warm_worker)


def build_services(settings: Settings, launcher: Launcher | None = None) -> Services:
    """Create the data directory, database schema and blob store."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    jobs = settings.data_dir / "jobs"
    jobs.mkdir(mode=0o755, exist_ok=True)
    db = Database(settings.db_url)
    db.create_all()
    return Services(settings=settings, db=db, blobs=BlobStore(settings.data_dir / "blobs"),
                    launcher=launcher or make_launcher(settings), jobs_dir=jobs)


def _startup(services: Services, run_executor: bool) -> RunExecutor | None:
    """Clean stale temp blobs, make sure the platform key exists, provision a worker when
    asked to and none is, then start the run executor (returned, or None when not wanted)."""
    services.blobs.clean_temp()
    ensure_platform_key(services.settings.platform_key_file)
    if services.settings.provision_on_start:
        try:
            current_worker(services.db)
        except ConflictError:
            provision_worker(services.settings, services.launcher, services.db)
    if not run_executor:
        return None
    executor = RunExecutor(services)
    services.executor = executor
    executor.start()
    return executor


def create_app(settings: Settings, launcher: Launcher | None = None, *,
               run_executor: bool = True) -> FastAPI:
    """The coordinator's ASGI app. ``launcher`` overrides the one the settings name (tests);
    ``run_executor=False`` leaves queued runs alone (tests drive them).

    Raises ``ConfigError`` without a public origin (the audience of every login) unless the
    settings say ``dev``.
    """
    if settings.origin is None:
        raise ConfigError(NO_ORIGIN)
    services = build_services(settings, launcher)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        executor = await run_in_threadpool(_startup, services, run_executor)
        try:
            yield
        finally:
            if executor is not None:
                await run_in_threadpool(executor.stop)
            await run_in_threadpool(services.launcher.close)
            services.db.dispose()

    app = FastAPI(
        title="sealroom coordinator",
        version="1",
        description="Untrusted coordinator of a confidential data clean room: stores ciphertext "
        "and signed statements, schedules hardened workers, serves receipts and the room log.",
        lifespan=lifespan,
    )
    app.state.services = services
    install_error_handlers(app)
    v1 = APIRouter(prefix="/v1")
    for module in (auth, rooms, uploads, bundles, runs, log, status, admin, previews):
        v1.include_router(module.router)
    app.include_router(v1)
    app.include_router(status.root)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_json_bytes,
                       counters=services.http_counters)
    return app
