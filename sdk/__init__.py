"""The sealroom SDK: what parties and auditors install.

``sdk.Client`` (the coordinator's HTTP client) is imported lazily, so ``import sdk`` stays
cheap and works without the HTTP stack; the ``sealroom`` command lives in :mod:`sdk.cli`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sdk.client import Client

__all__ = ["Client"]


def __getattr__(name: str) -> Any:
    if name == "Client":
        from sdk.client import Client

        return Client
    raise AttributeError(f"module 'sdk' has no attribute {name!r}")
