"""Errors the worker launchers raise, placed in sealroom's one error tree (``sdk.errors``).

Codes are the stable public ones: a refused hardening profile or an unusable engine is
``E_CONFIG``; a run stopped by a limit (deadline, memory, output size) is ``E_RESOURCE``.
Messages name settings and limits, never job contents.
"""

from __future__ import annotations

from collections.abc import Sequence

from sdk.errors import ConfigError, ResourceError


class HardeningError(ConfigError):
    """The created worker container deviates from the hardening profile; nothing was handed over."""

    def __init__(self, deviations: Sequence[str]) -> None:
        self.deviations: tuple[str, ...] = tuple(deviations)
        super().__init__("worker container refused: " + "; ".join(self.deviations))


class EngineUnavailableError(ConfigError):
    """The container engine cannot be reached, refuses to create the worker, or lacks its image."""


class JobDirError(ConfigError):
    """The job directory is missing, or holds secrets before the launch handed them over."""


class OutputLimitError(ResourceError):
    """The worker wrote more to stdout than the launcher accepts."""


__all__ = [
    "ConfigError",
    "EngineUnavailableError",
    "HardeningError",
    "JobDirError",
    "OutputLimitError",
    "ResourceError",
]
