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
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
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
from sdk.protocol.jobdir import ISOLATION_DIGEST_SECRET

CreateKwargsHook = Callable[[dict[str, Any]], None]


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
        _mutate_create_kwargs: CreateKwargsHook | None = None,
        _entrypoint: Sequence[str] | None = None,
    ) -> None:
        self.image = image
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
        kwargs = self.profile.create_kwargs(
            image_id=image_id, job_dir=job_path, command=list(args),
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
            return self._run(container.id, job_path, secrets or {}, settings, run_id=run_id,
                             image_id=image_id, deadline_s=deadline_s)
        finally:
            self._remove(container.id)
            remove_secrets(job_path)

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

    def _run(self, container_id: str, job_path: Path, secrets: Mapping[str, bytes],
             settings: dict[str, Any], *, run_id: str, image_id: str,
             deadline_s: float) -> LaunchResult:
        api = self.client.api
        stream = api.attach(container_id, stdout=True, stderr=False, stream=True, logs=False)
        pump = _StdoutPump(stream, self.max_output_bytes, lambda: self._kill(container_id))
        pump.start()
        # the digest of the inspected settings travels with the secrets, so the worker records
        # it in the run's log entry
        write_secrets(job_path, {**secrets, ISOLATION_DIGEST_SECRET: settings_digest(settings).encode()})
        started = time.monotonic()
        api.start(container_id)
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
