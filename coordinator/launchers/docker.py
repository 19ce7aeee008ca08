"""``DockerLauncher``: one fresh, hardened worker container per run, on the Docker SDK.

Order of a launch, and what each step promises:

1. create the container from the profile (``HardeningProfile.create_kwargs``), labelled with
   the run id and ``sealroom.owner=sealroom`` so the reaper finds it after a crash;
2. ``inspect`` it and refuse (``E_CONFIG``, container removed, nothing written) on any
   deviation from the profile; the digest of the inspected settings goes into the result;
3. attach to its stdout (before start, so nothing is lost; no size-capped log reading);
4. write the secrets into ``job_dir/secrets/`` — only now;
5. start it; wait for its exit or the wall-clock deadline (then kill: ``timed_out``);
6. read ``State.OOMKilled`` and the exit code; always remove the container and the secrets.

Stderr is neither attached nor logged (log driver ``none``): it could carry data.

With ``warm=True`` (the coordinator's default, ``SEALROOM_WARM_WORKER``), steps 1–3 and the
start happen *before* a run needs the container: after each run, one container is created,
checked, attached and started for the next run, with an empty job directory of its own and
``--wait-for-go``. Its worker loads its modules and its runner, then waits. A run that finds it
running (same arguments, same image id) moves its job files into that directory, writes the
secrets (step 4), then the go file (``sdk.protocol.jobdir.GO_FILE``); the deadline counts from
then. Anything else (no warm container, another image, the container gone) launches cold, as
above. A warm container has seen no job, key or data before its run, and serves that one run.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from coordinator.launchers.base import (
    DEFAULT_DEADLINE_S,
    DEFAULT_MAX_OUTPUT_BYTES,
    Isolation,
    Launcher,
    LaunchResult,
    prepare_job_dir,
    remove_secrets,
    settings_digest,
    write_secrets,
)
from coordinator.launchers.errors import EngineUnavailableError, OutputLimitError
from coordinator.launchers.profile import (
    DEFAULT_PROFILE,
    LABEL_INSTANCE,
    LABEL_OWNER,
    LABEL_RUN_ID,
    OWNER,
    HardeningProfile,
    check_container,
)
from sdk.errors import ConfigError, InputError
from sdk.protocol.jobdir import GO_FILE, ISOLATION_DIGEST_SECRET

CreateKwargsHook = Callable[[dict[str, Any]], None]
WAIT_FOR_GO = "--wait-for-go"
WARM_PREFIX = ".warm-"
"""Warm containers' job directories: ``<jobs dir>/.warm-<id>``, next to the runs' own."""

WARM_WAIT_S = 10.0
"""How long a run waits for the warm container being started rather than launch cold."""

log = logging.getLogger("sealroom.coordinator")


class _StdoutPump(threading.Thread):
    """Reads the attached stdout stream into memory, up to ``limit`` bytes."""

    def __init__(self, stream: Any, limit: int, on_overflow: Callable[[], None]) -> None:
        super().__init__(name="sealroom-stdout", daemon=True)
        self._stream = stream
        self._limit = limit
        self._on_overflow = on_overflow
        self.chunks: list[bytes] = []
        self.size = 0
        self.overflow = False
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for chunk in self._stream:
                if self.overflow:
                    continue  # keep draining: an unread stream stalls the engine's kill
                if self.size + len(chunk) > self._limit:
                    self.overflow = True
                    self.chunks.clear()
                    threading.Thread(target=self._on_overflow, daemon=True).start()
                    continue
                self.chunks.append(chunk)
                self.size += len(chunk)
        except Exception as exc:  # the stream dies with the container; keep what was read
            self.error = exc

    def data(self) -> bytes:
        return b"".join(self.chunks)


@dataclass
class _Warm:
    """A started container waiting for its job (see the module docstring)."""

    container_id: str
    job_path: Path
    args: tuple[str, ...]
    image_id: str
    settings: dict[str, Any]
    stream: Any
    pump: _StdoutPump
    run_id: str


class DockerLauncher(Launcher):
    """Runs the worker image in a hardened container; refuses to hand over to a weaker one.

    ``_mutate_create_kwargs`` and ``_entrypoint`` exist for tests only: the first weakens the
    create arguments so the inspection check is exercised against a real engine, the second
    runs a probe instead of ``python -m enclave``. Production code never sets them.
    """

    isolation: ClassVar[Isolation] = "container"

    def __init__(
        self,
        image: str,
        *,
        profile: HardeningProfile = DEFAULT_PROFILE,
        client: Any = None,
        instance: str = "default",
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
        warm: bool = False,
        _mutate_create_kwargs: CreateKwargsHook | None = None,
        _entrypoint: Sequence[str] | None = None,
    ) -> None:
        self.image = image
        self.warm = warm
        self._warm: _Warm | None = None
        self._warm_lock = threading.Condition()
        self._refilling = False
        self._closed = False
        self.profile = profile
        self.instance = instance
        self.max_output_bytes = max_output_bytes
        self._client = client
        self._mutate_create_kwargs = _mutate_create_kwargs
        self._entrypoint = list(_entrypoint) if _entrypoint is not None else None

    @property
    def client(self) -> Any:
        """The Docker client (connected from the environment on first use).

        Raises EngineUnavailableError when no engine answers.
        """
        if self._client is None:
            import docker

            try:
                self._client = docker.from_env(timeout=120)
                self._client.ping()
            except Exception as exc:
                self._client = None
                raise EngineUnavailableError(f"no Docker engine answers ({type(exc).__name__})")\
                    from None
        return self._client

    def image_id_and_env(self) -> tuple[str, list[str]]:
        """The worker image's Docker id and its own environment.

        The id is the engine's handle: the container is created from it and
        :func:`~coordinator.launchers.profile.check_container` compares it. It is not the
        measurement (see :meth:`measurement_id`). Raises EngineUnavailableError when the image
        is not present locally.
        """
        import docker.errors

        try:
            info = self.client.api.inspect_image(self.image)
        except docker.errors.ImageNotFound:
            raise EngineUnavailableError(f"worker image {self.image!r} is not built") from None
        return str(info["Id"]), list((info.get("Config") or {}).get("Env") or [])

    def measurement_id(self) -> str:
        """The measurement of the image tagged ``self.image`` now: its tree digest
        (:func:`coordinator.imagemeasure.measure_image`), cached by Docker image id in this
        process and on disk, so only the first call for an image exports it.

        Raises EngineUnavailableError when the image is missing or cannot be measured.
        """
        return self.measurement_of(self.image_id_and_env()[0])

    def ran_measurement(self, result: LaunchResult) -> str:
        """The tree digest of the image ``result`` ran (cached: no export for a known id)."""
        return self.measurement_of(result.image_id) if result.image_id else self.measurement_id()

    def measurement_of(self, image_id: str) -> str:
        """The tree digest of the image with Docker id ``image_id`` (see :meth:`measurement_id`)."""
        from coordinator.imagemeasure import ImageNotFoundError, measure_image

        try:
            return measure_image(self.client, image_id)
        except ImageNotFoundError:
            raise EngineUnavailableError(f"worker image {self.image!r} is not built") from None
        except (ConfigError, InputError) as exc:
            raise EngineUnavailableError(f"worker image {self.image!r} cannot be measured: "
                                         f"{exc.message}") from None

    def launch(
        self,
        job_dir: Path,
        args: Sequence[str],
        secrets: Mapping[str, bytes] | None = None,
        *,
        run_id: str | None = None,
        deadline_s: float = DEFAULT_DEADLINE_S,
    ) -> LaunchResult:
        """See :meth:`Launcher.launch`. Raises HardeningError (E_CONFIG) before any hand-over."""
        job_path = prepare_job_dir(job_dir)
        run_id = run_id or uuid.uuid4().hex
        image_id, image_env = self.image_id_and_env()
        warms = self.warm and list(args[:1]) == ["run"]
        warm = self._take_warm(tuple(args), image_id) if warms else None
        if warms:  # the next run's container starts while this one runs
            self._refill(tuple(args), job_path.parent)
        if warm is not None:
            return self._run_warm(warm, job_path, secrets or {}, run_id, deadline_s)
        return self._launch_cold(job_path, args, secrets or {}, run_id, image_id,
                                 image_env, deadline_s)

    def _launch_cold(self, job_path: Path, args: Sequence[str], secrets: Mapping[str, bytes],
                     run_id: str, image_id: str, image_env: list[str],
                     deadline_s: float) -> LaunchResult:
        container, settings, stream, pump = self._create_checked(
            job_path, list(args), run_id, image_id, image_env)
        try:
            write_secrets(job_path, {**secrets,
                                     ISOLATION_DIGEST_SECRET: settings_digest(settings).encode()})
            started = time.monotonic()
            self.client.api.start(container.id)
            return self._collect(container.id, stream, pump, settings, started, run_id=run_id,
                                 image_id=image_id, deadline_s=deadline_s)
        finally:
            self._remove(container.id)
            remove_secrets(job_path)

    def _create_checked(self, job_path: Path, command: list[str], run_id: str, image_id: str,
                        image_env: list[str]) -> tuple[Any, dict[str, Any], Any, _StdoutPump]:
        """Create, inspect (refusing any deviation from the profile) and attach a container;
        removed again when anything fails. Raises HardeningError / EngineUnavailableError."""
        kwargs = self.profile.create_kwargs(
            image_id=image_id, job_dir=job_path, command=command,
            labels={LABEL_OWNER: OWNER, LABEL_RUN_ID: run_id, LABEL_INSTANCE: self.instance})
        if self._entrypoint is not None:
            kwargs["entrypoint"] = self._entrypoint
        if self._mutate_create_kwargs is not None:
            self._mutate_create_kwargs(kwargs)
        container = self._create(kwargs)
        try:
            info = self.client.api.inspect_container(container.id)
            settings = check_container(info, self.profile, job_path, image_id=image_id,
                                       image_env=image_env)
            stream = self.client.api.attach(container.id, stdout=True, stderr=False,
                                            stream=True, logs=False)
            pump = _StdoutPump(stream, self.max_output_bytes,
                               lambda: self._kill(container.id))
            pump.start()
        except BaseException:
            self._remove(container.id)
            raise
        return container, settings, stream, pump

    def _refill(self, args: tuple[str, ...], jobs_dir: Path) -> None:
        """Start the next run's container in the background (at most one waits)."""
        with self._warm_lock:
            if self._warm is not None or self._closed or self._refilling:
                return
            self._refilling = True

        def start() -> None:
            warm: _Warm | None = None
            try:
                warm = make()
            finally:
                with self._warm_lock:
                    self._refilling = False
                    if warm is not None and self._warm is None and not self._closed:
                        self._warm, warm = warm, None
                    self._warm_lock.notify_all()
            if warm is not None:
                self._discard(warm)

        def make() -> _Warm | None:
            path = jobs_dir / f"{WARM_PREFIX}{uuid.uuid4().hex}"
            try:
                path.mkdir(mode=0o755)
                os.chmod(path, 0o755)  # noqa: S103 - the worker uid must read the job
                job_path = prepare_job_dir(path)
                image_id, image_env = self.image_id_and_env()
                run_id = f"warm-{uuid.uuid4().hex}"
                container, settings, stream, pump = self._create_checked(
                    job_path, [*args, WAIT_FOR_GO], run_id, image_id, image_env)
            except Exception as exc:
                log.warning("could not start a warm worker: %s", type(exc).__name__)
                shutil.rmtree(path, ignore_errors=True)
                return None
            warm = _Warm(container.id, job_path, args, image_id, settings, stream, pump, run_id)
            try:
                self.client.api.start(container.id)
            except Exception as exc:
                log.warning("could not start a warm worker: %s", type(exc).__name__)
                self._discard(warm)
                return None
            return warm

        threading.Thread(target=start, name="sealroom-warm", daemon=True).start()

    def _take_warm(self, args: tuple[str, ...], image_id: str) -> _Warm | None:
        """The waiting container, when it runs these arguments on this image and still runs."""
        with self._warm_lock:
            # one being started is sooner ready than a cold one (back-to-back runs)
            self._warm_lock.wait_for(lambda: not self._refilling, timeout=WARM_WAIT_S)
            warm, self._warm = self._warm, None
        if warm is None:
            return None
        if warm.args != args or warm.image_id != image_id:
            self._discard(warm)
            return None
        try:
            state = self.client.api.inspect_container(warm.container_id).get("State") or {}
        except Exception:
            state = {}
        if not state.get("Running"):
            self._discard(warm)
            return None
        return warm

    def _run_warm(self, warm: _Warm, job_path: Path, secrets: Mapping[str, bytes],
                  run_id: str, deadline_s: float) -> LaunchResult:
        """Hand the job to a waiting container: move the job's files into its directory,
        write the secrets, then the go file; collect as a cold launch does."""
        try:
            for entry in job_path.iterdir():
                if entry.name == "secrets":
                    continue
                os.replace(entry, warm.job_path / entry.name)
            write_secrets(warm.job_path, {
                **secrets, ISOLATION_DIGEST_SECRET: settings_digest(warm.settings).encode()})
            go = warm.job_path / f"{GO_FILE}.tmp"
            go.write_bytes(b"")
            os.chmod(go, 0o644)
            started = time.monotonic()
            os.replace(go, warm.job_path / GO_FILE)
            return self._collect(warm.container_id, warm.stream, warm.pump, warm.settings,
                                 started, run_id=run_id, image_id=warm.image_id,
                                 deadline_s=deadline_s)
        finally:
            self._discard(warm)

    def _discard(self, warm: _Warm) -> None:
        """Remove a warm container, its secrets and its job directory. Never raises."""
        self._remove(warm.container_id)
        _close(warm.stream)
        remove_secrets(warm.job_path)
        shutil.rmtree(warm.job_path, ignore_errors=True)

    def warm_ready(self, timeout_s: float = 60.0) -> bool:
        """Wait (up to ``timeout_s``) for a container being started for the next run; True
        when one is waiting."""
        with self._warm_lock:
            self._warm_lock.wait_for(lambda: not self._refilling, timeout=timeout_s)
            return self._warm is not None

    def close(self) -> None:
        """Remove the container waiting for a run, if any (the coordinator is stopping)."""
        with self._warm_lock:
            self._closed = True
            warm, self._warm = self._warm, None
        if warm is not None:
            self._discard(warm)

    def _create(self, kwargs: dict[str, Any]) -> Any:
        """Create the container; an engine refusal (e.g. unknown runtime) is ``E_CONFIG``."""
        import docker.errors

        try:
            return self.client.containers.create(**kwargs)
        except docker.errors.ImageNotFound:
            raise EngineUnavailableError(f"worker image {self.image!r} is not built") from None
        except docker.errors.APIError as exc:
            raise EngineUnavailableError(
                f"the engine refused to create the worker container: {exc.explanation}"
            ) from None

    def _collect(self, container_id: str, stream: Any, pump: _StdoutPump,
                 settings: dict[str, Any], started: float, *, run_id: str, image_id: str,
                 deadline_s: float) -> LaunchResult:
        """Wait for the started container (killed at the deadline) and read its result."""
        api = self.client.api
        timed_out = not self._wait(container_id, deadline_s)
        if timed_out:
            self._kill(container_id)
            self._wait(container_id, 30.0)
        duration = time.monotonic() - started
        pump.join(timeout=30.0)
        if pump.is_alive():
            _close(stream)
            pump.join(timeout=5.0)
        if pump.overflow:
            raise OutputLimitError(f"worker output exceeded {self.max_output_bytes} bytes")
        state = api.inspect_container(container_id).get("State") or {}
        return LaunchResult(
            exit_code=int(state.get("ExitCode", -1)),
            stdout=pump.data(),
            oom_killed=bool(state.get("OOMKilled")),
            timed_out=timed_out,
            isolation=self.isolation,
            settings_digest=settings_digest(settings),
            duration=duration,
            run_id=run_id,
            image_id=image_id,
            settings=settings,
        )

    def _wait(self, container_id: str, timeout_s: float) -> bool:
        """True when the container stopped within ``timeout_s`` seconds."""
        import requests.exceptions

        try:
            self.client.api.wait(container_id, timeout=max(timeout_s, 0.001))
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            state = self.client.api.inspect_container(container_id).get("State") or {}
            return not state.get("Running", False)
        return True

    def _kill(self, container_id: str) -> None:
        import docker.errors

        try:
            self.client.api.kill(container_id)
        except docker.errors.APIError:
            pass  # already stopped

    def _remove(self, container_id: str) -> None:
        import docker.errors

        try:
            self.client.api.remove_container(container_id, force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError:
            pass  # the reaper removes it by label


def _close(stream: Any) -> None:
    closer = getattr(stream, "close", None)
    if callable(closer):
        try:
            closer()
        except Exception:  # noqa: S110 - best effort on a dead stream
            pass
