"""Fixtures for tests that need a real Docker engine and the built worker image.

Without an engine (or without the image) these tests skip locally, but FAIL when ``CI=true``:
CI must never go green by skipping the isolation tests.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from coordinator.launchers import DockerLauncher, HardeningProfile, ProcessLauncher
from coordinator.launchers.profile import DEFAULT_PROFILE, LABEL_OWNER, OWNER

PROBE = Path(__file__).with_name("probe.py")
PROBE_ENTRYPOINT = ["/opt/venv/bin/python", "-I", "/job/probe.py"]
WORKER_IMAGE = os.environ.get("SEALROOM_WORKER_IMAGE", "sealroom-worker:latest")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_client() -> Any:
    """A connected Docker client; skip (fail under CI=true) when no engine answers."""
    try:
        import docker

        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:
        _unavailable(f"no Docker engine answers ({type(exc).__name__}: {exc})")
    return client


@pytest.fixture(scope="session")
def worker_image(docker_client: Any) -> str:
    """The worker image tag; skip (fail under CI=true) when it is not built."""
    import docker.errors

    try:
        docker_client.api.inspect_image(WORKER_IMAGE)
    except docker.errors.ImageNotFound:
        _unavailable(f"worker image {WORKER_IMAGE} is not built "
                     "(python -m coordinator.images build)")
    return WORKER_IMAGE


@pytest.fixture(scope="session")
def probe_entrypoint() -> list[str]:
    """The entrypoint that runs the probe script from the job directory."""
    return list(PROBE_ENTRYPOINT)


def make_job_dir(path: Path) -> Path:
    """Create ``path`` as a job directory the worker user can read, holding the probe."""
    path.mkdir(parents=True)
    path.chmod(0o755)
    shutil.copy(PROBE, path / "probe.py")
    (path / "probe.py").chmod(0o644)
    return path


@pytest.fixture(scope="session")
def new_job_dir() -> Callable[[Path], Path]:
    """The job directory factory, for tests that need more than one."""
    return make_job_dir


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    """A job directory the worker user can read, holding the probe script."""
    return make_job_dir(tmp_path / "job")


@pytest.fixture
def probe_launcher(docker_client: Any, worker_image: str
                   ) -> Iterator[Callable[..., DockerLauncher]]:
    """Factory of DockerLaunchers that run the probe instead of ``python -m enclave``.

    After the test, asserts that no sealroom container is left behind.
    """

    def make(profile: HardeningProfile = DEFAULT_PROFILE, **kwargs: Any) -> DockerLauncher:
        return DockerLauncher(worker_image, profile=profile, client=docker_client,
                              instance="pytest", _entrypoint=PROBE_ENTRYPOINT, **kwargs)

    yield make
    left = docker_client.api.containers(
        all=True, filters={"label": [f"{LABEL_OWNER}={OWNER}", "sealroom.instance=pytest"]})
    assert left == [], "launcher left containers behind"


@pytest.fixture(scope="session")
def worker_launcher(docker_client: Any, worker_image: str) -> DockerLauncher:
    """The production DockerLauncher: default profile, ``python -m enclave``, no test hooks."""
    return DockerLauncher(worker_image, client=docker_client, instance="pytest")


@pytest.fixture(scope="session")
def process_launcher() -> ProcessLauncher:
    """The unisolated ProcessLauncher, running this checkout's ``python -m enclave``."""
    return ProcessLauncher()
