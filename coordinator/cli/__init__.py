"""The operator commands of ``sealroom``: ``coordinator serve``, ``worker build``, ``worker
provision`` and ``demo``.

They register through the ``sealroom.commands`` entry point (``pyproject.toml``), so the SDK
never imports this package by name (ADR 0006). Importing this module is cheap; the service
dependencies (FastAPI, Docker, DuckDB...) load only when a command runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sdk.errors import ConfigError

if TYPE_CHECKING:
    from sdk.cli.context import Context


@dataclass(frozen=True)
class OperatorCommand:
    """One top-level operator command (a :class:`sdk.cli.plugins.PluginCommand`)."""

    name: str
    help: str

    def run(self, argv: list[str], ctx: Context) -> int:
        """Parse ``argv`` and run; a missing operator dependency is one ``E_CONFIG`` error."""
        try:
            from coordinator.cli import ops

            return ops.main(self.name, argv, ctx)
        except ImportError as exc:
            if _ours(exc.name):
                raise  # a bug in this project, not a missing extra
            raise ConfigError(
                f"`sealroom {self.name}` needs the coordinator extra: pip install "
                f"'.[coordinator,enclave]' from a clone ({exc.name or 'a module'} is missing)"
            ) from exc


COORDINATOR = OperatorCommand("coordinator", "run the coordinator service (operators)")
WORKER = OperatorCommand("worker", "build the worker image, provision worker keys (operators)")
DEMO = OperatorCommand("demo", "a complete two-party study on this machine")


def _ours(module: str | None) -> bool:
    """Whether a module that failed to import belongs to this project."""
    return (module or "").split(".")[0] in ("coordinator", "enclave", "sdk")
