"""The sealroom SDK: what parties and auditors install.

* ``sdk.Client`` — the coordinator's typed HTTP client (moves bytes; verifies nothing);
* ``sdk.Party`` — the party operations with every verification the CLI performs, for
  notebooks; ``sdk.verify_receipt`` — an auditor's offline receipt check.

All are imported lazily, so ``import sdk`` stays cheap. The library is :mod:`sdk.party` (it
never prints) over :mod:`sdk.protocol` (every rule parties and the worker agree on); the
``sealroom`` command, the only code that prints, is :mod:`sdk.cli`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sdk.client import Client
    from sdk.party.party import Party, Result, verify_receipt

__all__ = ["Client", "Party", "Result", "verify_receipt"]


def __getattr__(name: str) -> Any:
    if name == "Client":
        from sdk.client import Client

        return Client
    if name in ("Party", "Result", "verify_receipt"):
        import sdk.party

        return getattr(sdk.party, name)
    raise AttributeError(f"module 'sdk' has no attribute {name!r}")
