"""Commands other distributions add to ``sealroom`` (the operator commands of
``coordinator.cli``), found through the ``sealroom.commands`` entry-point group.

The SDK names no such package: an entry point's name is the command, its object a
:class:`PluginCommand`. Loading one must stay cheap (no service dependencies imported until
the command runs), because ``sealroom --help`` loads them all to list them.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Protocol

from sdk.errors import ConfigError

if TYPE_CHECKING:
    from sdk.cli.context import Context

GROUP = "sealroom.commands"


class PluginCommand(Protocol):
    """A top-level ``sealroom`` command provided by another package."""

    help: str
    """One line for ``sealroom --help``."""

    def run(self, argv: list[str], ctx: Context) -> int:
        """Parse ``argv`` (everything after the command's name) and run; returns the exit
        code. Raises ``SealroomError`` subclasses like any command."""
        ...


def discover() -> dict[str, EntryPoint]:
    """Command name → entry point, for every installed plugin command."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def load(entry: EntryPoint) -> PluginCommand:
    """The command object of an entry point.

    Raises ``ConfigError`` naming what to install when the providing package cannot be
    imported.
    """
    try:
        command: PluginCommand = entry.load()
    except ImportError as exc:
        if (exc.name or "").split(".")[0] == entry.value.split(".")[0]:
            raise  # the plugin's own package is broken, not missing a dependency
        raise ConfigError(
            f"`sealroom {entry.name}` needs the coordinator extra: "
            f"pip install '.[coordinator,enclave]' from a clone ({exc.name or 'a module'} is missing)"
        ) from exc
    return command


def help_of(entry: EntryPoint) -> str:
    """The one-line help of a plugin command, or why it is unavailable."""
    try:
        return load(entry).help
    except ConfigError:
        return "(needs the coordinator extra)"
