"""The room log as the worker sees it: verified entries, the budget derived from them, and
the appending of this run's entries with a new signed checkpoint (DESIGN §7)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sdk.errors import InputError, LogError
from sdk.protocol import budget, merkle
from sdk.protocol.clock import now
from sdk.protocol.dsse import Envelope, sign_envelope
from sdk.protocol.keys import Signer
from sdk.protocol.records import Checkpoint, LogEntry, MatchRecord, log_origin
from sdk.protocol.verify import (
    log_leaf_hashes,
    verify_checkpoint,
    verify_log_against_checkpoint,
    verify_log_entries,
)

MATCH_INPUTS = "match_inputs"
"""The ``run_finished`` detail naming the upload statements a released match rate describes."""
ONE_ROW_CHECKED = "one_row_checked"
"""The ``run_finished`` detail naming the upload statements whose ``one_row_per_person`` the
run checked (and found true) before its plan ran."""


@dataclass
class RoomLog:
    """Verified log entries plus what this run appends."""

    room_id: str
    envelopes: list[Envelope]
    entries: list[LogEntry]
    base_size: int
    appended: list[Envelope] = field(default_factory=list)

    @classmethod
    def verify(
        cls,
        room_id: str,
        entries: Sequence[Envelope],
        checkpoint: Envelope | None,
        trusted_workers: Mapping[str, bytes],
    ) -> RoomLog:
        """Verify every entry and that the entries are exactly the last checkpoint's tree.

        Raises:
            LogError: an entry not signed by an attested worker, of another room, or a log that
                does not match its checkpoint (tampered, truncated, rolled back or forked).
        """
        parsed = verify_log_entries(entries, trusted_workers, room_id)
        if checkpoint is None:
            if entries:
                raise LogError("log: entries without a checkpoint")
        else:
            cp = verify_checkpoint(checkpoint, trusted_workers, log_origin(room_id))
            verify_log_against_checkpoint(entries, cp)
        return cls(room_id, list(entries), parsed, len(entries))

    def of_kind(self, kind: str) -> list[LogEntry]:
        return [e for e in self.entries if e.kind == kind]

    def spent(self, dataset: str) -> tuple[Decimal, Decimal]:
        """(epsilon, delta) charged so far to ``dataset``, summed from ``budget_charged``
        (:func:`sdk.protocol.budget.spent_of`).

        Raises ``PrivacyError`` for a charge that is not a finite, non-negative decimal.
        """
        total = budget.spent_of(self.entries, dataset)
        return total.epsilon, total.delta

    def runs_of(self, bundle_digest: str) -> int:
        """How many runs of this bundle have started (:func:`sdk.protocol.budget.runs_of`)."""
        return budget.runs_of(self.entries, bundle_digest)

    def measured_match(self, inputs: Sequence[str]) -> dict[str, MatchRecord] | None:
        """The match rates (by dataset) an earlier run over exactly these upload statements
        (digests, in any order) released, from its ``run_finished`` entry; None when no run
        did. Reusing them releases nothing new: with DP, the noise is drawn once per set of
        uploads, so repeated runs (whatever their query or input order) cannot average it.

        Raises ``LogError`` for a malformed record in a worker-signed entry.
        """
        wanted = sorted(inputs)
        for entry in reversed(self.entries):
            recorded = entry.details.get(MATCH_INPUTS)
            if entry.kind == "run_finished" and isinstance(recorded, list) \
                    and sorted(map(str, recorded)) == wanted:
                try:
                    records = [MatchRecord.from_dict(m) for m in entry.details.get("match", [])]
                except (InputError, AttributeError, TypeError) as exc:
                    raise LogError("log: a malformed match record") from exc
                return {m.dataset: m for m in records}
        return None

    def checked_one_row(self) -> set[str]:
        """The upload statements (digests) an earlier run found to hold one row per person, as
        their owners signed (``run_finished`` entries, :data:`ONE_ROW_CHECKED`). A coordinator
        that hides such an entry only makes a run check again."""
        out: set[str] = set()
        for entry in self.entries:
            recorded = entry.details.get(ONE_ROW_CHECKED)
            if entry.kind == "run_finished" and isinstance(recorded, list):
                out.update(str(d) for d in recorded)
        return out

    def has(self, kind: str, subject: str) -> bool:
        return any(e.kind == kind and e.subject == subject for e in self.entries)

    def append(
        self,
        signer: Signer,
        kind: str,
        run_id: str,
        subject: str = "",
        details: Mapping[str, Any] | None = None,
    ) -> int:
        """Sign and append an entry; returns its index."""
        entry = LogEntry(
            room_id=self.room_id,
            kind=kind,
            run_id=run_id,
            subject=subject,
            details=dict(details or {}),
            time=now(),
        )
        envelope = sign_envelope(LogEntry.KIND, entry.to_dict(), [signer])
        self.envelopes.append(envelope)
        self.entries.append(entry)
        self.appended.append(envelope)
        return len(self.envelopes) - 1

    def checkpoint(self, signer: Signer) -> tuple[Checkpoint, Envelope]:
        """Sign a checkpoint over every entry, appended ones included."""
        cp = Checkpoint(
            origin=log_origin(self.room_id),
            tree_size=len(self.envelopes),
            root_hash=merkle.root(log_leaf_hashes(self.envelopes)).hex(),
            issued_at=now(),
        )
        return cp, sign_envelope(Checkpoint.KIND, cp.to_dict(), [signer])
