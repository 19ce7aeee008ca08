"""Measuring a worker image: the tree digest (:mod:`sdk.protocol.treedigest`) of what a
container of it runs, which a party recomputes from its own rebuild.

What this module promises:

* :func:`measure_image` creates a container of the image (never started, no network, an
  entrypoint that does not exist), streams ``docker export`` of it through
  :func:`sdk.protocol.treedigest.tree_digest` with the image's ``Config``, and removes the
  container whatever happens;
* results are cached by Docker image id, in this process and on disk
  (``$XDG_CACHE_HOME/sealroom/measurements.json``, default ``~/.cache``). An image id is the
  digest of the image config, which names every layer by the digest of its content
  (``rootfs.diff_ids``): one id always has one tree, so the mapping never goes stale. The file
  is replaced atomically; a corrupt or foreign one is ignored (and rewritten); a cache that
  cannot be written is skipped. Entries are tied to the listing format (``FORMAT``);
* errors are one line each: ``ImageNotFoundError`` (an ``InputError``) for an image that does
  not exist, ``InputError`` for a tree the digest refuses (:mod:`sdk.protocol.treedigest`),
  ``ConfigError`` when no engine answers or it refuses.

The Docker SDK is imported lazily: this module imports without it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final

from sdk.errors import ConfigError, InputError
from sdk.protocol.treedigest import FORMAT, tree_digest

CACHE_ENV: Final = "XDG_CACHE_HOME"
MAX_CACHED: Final = 256
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_EXPORT_CHUNK: Final = 2 << 20
# a path that exists in no image: the container is never started, and could not be
_NEVER_RUN: Final = ["/.sealroom-measure-never-started"]

_memory: dict[str, str] = {}
_lock = threading.Lock()  # guards _memory
_exporting: dict[str, threading.Lock] = {}  # by image id: one export of an image at a time
_disk = threading.Lock()  # one read-modify-write of the cache file at a time in this process


class ImageNotFoundError(InputError):
    """The engine has no image by that name or id."""


def cache_file() -> Path:
    """Where measurements are cached: ``$XDG_CACHE_HOME/sealroom/measurements.json``."""
    base = os.environ.get(CACHE_ENV) or str(Path("~/.cache").expanduser())
    return Path(base) / "sealroom" / "measurements.json"


def connect(timeout: int = 120) -> Any:
    """A Docker client connected from the environment. Raises ``ConfigError`` without one."""
    try:
        import docker
    except ImportError:
        raise ConfigError("the docker package is not installed "
                          "(pip install 'sealroom[coordinator]')") from None
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except Exception as exc:
        raise ConfigError(f"no Docker engine answers ({type(exc).__name__})") from None
    return client


def image_id_of(client: Any, image_ref: str) -> tuple[str, dict[str, Any]]:
    """The Docker image id of ``image_ref`` (a tag or an id) and its ``Config``.

    Raises ``InputError`` for an image that does not exist, ``ConfigError`` when the engine
    does not answer.
    """
    import docker.errors

    try:
        info = client.api.inspect_image(image_ref)
    except docker.errors.ImageNotFound:
        raise ImageNotFoundError(f"image {image_ref!r} not found (build it with `sealroom "
                                 "worker build`)") from None
    except docker.errors.APIError as exc:
        raise ConfigError(f"the engine cannot inspect image {image_ref!r}: "
                          f"{exc.explanation}") from None
    except Exception as exc:  # the engine went away (requests' connection errors)
        raise ConfigError(f"no Docker engine answers ({type(exc).__name__})") from None
    return str(info["Id"]), dict(info.get("Config") or {})


def measure_image(client: Any, image_ref: str, *, use_cache: bool = True,
                  cache_path: Path | None = None) -> str:
    """The measurement (``sha256:<hex>`` tree digest) of ``image_ref``; see the module doc.

    ``use_cache=False`` recomputes it (and refreshes the caches). An image is exported once at
    a time in a process: concurrent callers for one image wait for its result. Raises
    ``InputError`` (no such image, or a tree the digest refuses) or ``ConfigError`` (engine).
    """
    if use_cache:
        with _lock:
            known = _memory.get(image_ref)  # an image id measured before: no engine call
        if known is not None:
            return known
    image_id, config = image_id_of(client, image_ref)
    path = cache_path or cache_file()
    with _lock:
        exporting = _exporting.setdefault(image_id, threading.Lock())
    with exporting:
        if use_cache:
            with _lock:
                known = _memory.get(image_id)
            if known is None:
                known = _read_cache(path).get(image_id)
            if known is not None:
                with _lock:
                    _memory[image_id] = known
                return known
        digest = _measure(client, image_id, config)
        with _lock:
            _memory[image_id] = digest
        _remember(path, image_id, digest)
        return digest


def _measure(client: Any, image_id: str, config: dict[str, Any]) -> str:
    import docker.errors

    try:
        created = client.api.create_container(
            image_id, entrypoint=_NEVER_RUN, command=[], network_disabled=True,
            labels={"sealroom.measure": "1"})
    except docker.errors.ImageNotFound:
        raise ImageNotFoundError(f"image {image_id!r} not found") from None
    except docker.errors.APIError as exc:
        raise ConfigError(f"the engine refused to create a container to measure: "
                          f"{exc.explanation}") from None
    container = str(created["Id"])
    try:
        try:
            chunks = client.api.export(container, chunk_size=_EXPORT_CHUNK)
            with io.BufferedReader(_ChunkReader(chunks), buffer_size=_EXPORT_CHUNK) as stream:
                return tree_digest(stream, config=config)
        except docker.errors.APIError as exc:
            raise ConfigError(f"the engine cannot export the image: {exc.explanation}") \
                from None
    finally:
        with contextlib.suppress(Exception):
            client.api.remove_container(container, force=True, v=True)


class _ChunkReader(io.RawIOBase):
    """A read-once file over an iterator of byte chunks (the engine's export stream)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        view = memoryview(buffer).cast("B")
        size = min(len(view), len(self._pending))
        view[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size

    def close(self) -> None:
        closer = getattr(self._chunks, "close", None)
        if callable(closer):
            with contextlib.suppress(Exception):
                closer()
        super().close()


def _read_cache(path: Path) -> dict[str, str]:
    """The cached measurements by image id; ``{}`` for a missing, corrupt or foreign file."""
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        return {}
    found = doc.get("measurements")
    if not isinstance(found, dict):
        return {}
    return {k: v for k, v in found.items()
            if isinstance(k, str) and isinstance(v, str) and _DIGEST.match(v)}


def _remember(path: Path, image_id: str, digest: str) -> None:
    """Add one measurement to the disk cache (atomic replace; best effort)."""
    with _disk:
        _write_cache(path, image_id, digest)


def _write_cache(path: Path, image_id: str, digest: str) -> None:
    known = _read_cache(path)
    known.pop(image_id, None)
    known[image_id] = digest  # newest last; the oldest go first
    kept = dict(list(known.items())[-MAX_CACHED:])
    doc = {"format": FORMAT, "measurements": kept}
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".measurements.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(doc, handle, indent=1, sort_keys=True)
                handle.write("\n")
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError:
        pass  # a read-only home: measure again next time


def forget() -> None:
    """Empty the in-process cache (tests; the disk cache is left alone)."""
    with _lock:
        _memory.clear()
