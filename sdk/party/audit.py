"""An auditor's checks of a whole room log: every entry signed by an attested worker, the
entries exactly the newest checkpoint's tree, consistency with the last checkpoint this machine
stored, and every receipt of the room present, verified and included.

The log can come from the coordinator (:func:`fetch_audited_log`) or from a
``sealroom-log-export`` file (:func:`audit_export`, offline). :func:`export_document` writes
that file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sdk.errors import InputError, LogError
from sdk.party.receipts import verify_receipt_file
from sdk.party.results import receipt_file_for
from sdk.party.session import Session
from sdk.party.trust import (
    PinnedRoom,
    VerifiedLog,
    VerifiedWorker,
    fetch_log,
    fetch_workers,
    verify_room_log,
    verify_workers,
)
from sdk.protocol.dsse import Envelope
from sdk.protocol.fields import check_keys, expect_mapping, get_list

EXPORT_TYPE = "sealroom-log-export"
EXPORT_VERSION = 1
RESULT_KINDS = ("run_finished", "run_refused")


@dataclass(frozen=True)
class AuditedLog:
    """A verified room log with its attested workers and every receipt verified and included."""

    log: VerifiedLog
    workers: list[VerifiedWorker]
    rejected: list[str]
    receipts: dict[str, Envelope]
    verified_receipts: int

    @property
    def results(self) -> int:
        """How many runs the log says ended (each has a verified receipt)."""
        return sum(1 for e in self.log.entries if e.kind in RESULT_KINDS)


def _check_receipts(session: Session | None, room: PinnedRoom, log: VerifiedLog,
                    workers: list[VerifiedWorker], receipts: dict[str, Envelope]) -> int:
    """Every run_finished / run_refused entry must have its receipt, verified and included.
    Raises ``LogError`` naming the first run without one."""
    attestations = [w.envelope for w in workers]
    count = 0
    for entry in log.entries:
        if entry.kind not in RESULT_KINDS:
            continue
        envelope = receipts.get(entry.run_id)
        if envelope is None:
            raise LogError(f"log: no receipt for run {entry.run_id}")
        rfile = receipt_file_for(session, room, log, envelope, attestations, entry.run_id, {})
        verify_receipt_file(rfile, room.manifest, room.digest)
        count += 1
    return count


def fetch_audited_log(session: Session, room: PinnedRoom) -> AuditedLog:
    """Fetch the room log, its attestations and every receipt from the coordinator and audit
    them; the newest checkpoint is stored on this machine.

    Raises ``LogError`` for an unsigned or foreign entry, a rollback or fork, a missing or
    invalid receipt, or a run the coordinator lists with a receipt but no log entry.
    """
    workers, rejected = fetch_workers(session, room)
    log = fetch_log(session, room, workers)
    client = session.client()
    receipts = {e.run_id: client.receipt(room.room_id, e.run_id) for e in log.entries
                if e.kind in RESULT_KINDS}
    listed = {str(r.get("run_id")) for r in client.runs(room.room_id)
              if isinstance(r, dict) and r.get("log_index") is not None}
    missing = sorted(listed - set(receipts))
    if missing:
        raise LogError(f"log: runs {', '.join(missing[:5])} have receipts but no log entry")
    count = _check_receipts(session, room, log, workers, receipts)
    return AuditedLog(log, workers, rejected, receipts, count)


def audit_export(session: Session, room: PinnedRoom, document: Any) -> AuditedLog:
    """Audit a ``sealroom-log-export`` document offline against ``room`` (the auditor's own
    copy of the manifest), with the same consistency check against the checkpoint stored on
    this machine.

    Raises ``InputError`` for a malformed export or one of another room or manifest, and
    ``LogError`` as :func:`fetch_audited_log`.
    """
    data = expect_mapping(document, "log export")
    check_keys(data, "log export", ["type", "version", "room_id", "manifest_digest",
                                    "attestations", "entries", "checkpoint", "receipts"])
    if data["type"] != EXPORT_TYPE or data["version"] != EXPORT_VERSION:
        raise InputError(f"log export: not a {EXPORT_TYPE} (version {EXPORT_VERSION})")
    if data["room_id"] != room.room_id or data["manifest_digest"] != room.digest:
        raise InputError("log export: of another room or manifest")
    workers, rejected = verify_workers(room, [Envelope.from_dict(a) for a in
                                              get_list(data, "attestations", "log export")])
    entries = [Envelope.from_dict(e)
               for e in get_list(data, "entries", "log export", max_items=10**7)]
    checkpoint = None if data["checkpoint"] is None else Envelope.from_dict(data["checkpoint"])
    log = verify_room_log(session.home, room, workers, entries, checkpoint)
    receipts = {str(k): Envelope.from_dict(v) for k, v in
                expect_mapping(data["receipts"], "log export.receipts").items()}
    count = _check_receipts(None, room, log, workers, receipts)
    return AuditedLog(log, workers, rejected, receipts, count)


def export_document(room: PinnedRoom, audited: AuditedLog) -> dict[str, Any]:
    """The ``sealroom-log-export`` document of an audited log."""
    log = audited.log
    return {
        "type": EXPORT_TYPE, "version": EXPORT_VERSION, "room_id": room.room_id,
        "manifest_digest": room.digest,
        "attestations": [w.envelope.to_dict() for w in audited.workers],
        "entries": [e.to_dict() for e in log.envelopes],
        "checkpoint": None if log.checkpoint_envelope is None
        else log.checkpoint_envelope.to_dict(),
        "receipts": {k: v.to_dict() for k, v in audited.receipts.items()},
    }
