"""The library parties and auditors call: sessions, the home folder and its trusted state,
sealing and uploading data, bundles, review, runs, results and receipts.

Nothing here prints; long work reports progress through ``Session.on_event``. The ``sealroom``
command (:mod:`sdk.cli`) is a thin layer on top of it.
"""

from __future__ import annotations

from sdk.party.party import Party, Result, verify_receipt
from sdk.party.session import Session

__all__ = ["Party", "Result", "Session", "verify_receipt"]
