"""The worker's code measurement: a digest over the source of the code that runs in it.

The measurement a manifest pins is ``(image_id, code_digest)``. The image id comes from the
launcher: the tree digest of the worker image (``sdk.protocol.treedigest``, which a rebuild
reproduces; never the Docker image id), or ``unisolated`` for the process launcher. The code
digest is computed here over every ``.py`` file the worker can run: the ``enclave`` package
and, of the ``sdk`` package, its ``__init__``, ``errors`` and the ``protocol`` core (the CLI and
the HTTP client never run in a worker). A worker whose code changed cannot unseal keys provisioned for
another code version.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

# (package, files inside it that count; None = every .py file)
_SCOPE: tuple[tuple[str, tuple[str, ...] | None], ...] = (
    ("enclave", None),
    ("sdk", ("__init__.py", "errors.py", "protocol/")),
)


def _package_root(name: str) -> Path:
    module = __import__(name)
    return Path(next(iter(module.__path__)))


@lru_cache(maxsize=1)
def code_digest() -> str:
    """Hex SHA-256 over (relative path, file digest) of every source file, sorted."""
    outer = hashlib.sha256()
    for package, only in _SCOPE:
        root = _package_root(package)
        for path in sorted(root.rglob("*.py")):
            inner = path.relative_to(root).as_posix()
            if "__pycache__" in path.parts:
                continue
            if only is not None and not any(
                inner == item or (item.endswith("/") and inner.startswith(item)) for item in only
            ):
                continue
            relative = f"{package}/{inner}"
            outer.update(relative.encode() + b"\0")
            outer.update(hashlib.sha256(path.read_bytes()).digest())
    return outer.hexdigest()
