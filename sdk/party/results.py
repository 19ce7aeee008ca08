"""Runs and their results from a party's side: start a run and wait for it, then fetch its
receipt, verify it (signature, log inclusion, consistency with the last checkpoint seen), open
this party's sealed output and decode it."""

from __future__ import annotations

import csv
import hashlib
import time
import uuid
from pathlib import Path
from typing import Any

from sdk.errors import DecryptionError, InputError, LogError, NotFoundError, error_for_code
from sdk.party.files import write_json_file
from sdk.party.receipts import ReceiptFile, verify_receipt_file
from sdk.party.session import Session
from sdk.party.trust import PinnedRoom, VerifiedLog, fetch_log, fetch_workers
from sdk.protocol import merkle
from sdk.protocol.canonical import parse_json
from sdk.protocol.dsse import Envelope
from sdk.protocol.records import Receipt
from sdk.protocol.sealing import open_bytes, output_binding
from sdk.protocol.verify import VerifiedReceipt

TERMINAL = ("succeeded", "refused", "failed")
RESULT_FORMAT = "sealroom-result-v1"


def run_state(run: dict[str, Any]) -> str:
    """A run's state as the coordinator reports it (``state``, or ``status``)."""
    return str(run.get("state") or run.get("status") or "unknown")


def receipt_file_for(
    session: Session | None, room: PinnedRoom, log: VerifiedLog, receipt_envelope: Envelope,
    workers: list[Envelope], run_id: str, outputs: dict[str, bytes],
) -> ReceiptFile:
    """Assemble the self-contained receipt file of a run from a verified log: the entry at the
    receipt's index, its inclusion proof in the receipt's tree, and that tree's checkpoint
    (fetched from the coordinator when ``ctx`` is given and it is not the newest one)."""
    receipt = Receipt.from_dict(parse_json(receipt_envelope.payload))  # verified just after
    size, index = receipt.checkpoint.tree_size, receipt.log_index
    if log.checkpoint is None or size > log.checkpoint.tree_size or not 0 <= index < size:
        raise LogError(f"receipt of {run_id}: its log entry is not in the verified log")
    if log.root_at(size) != receipt.checkpoint.root_hash:
        raise LogError(f"receipt of {run_id}: its checkpoint is not a prefix of the verified log")
    checkpoint = log.checkpoint_envelope if size == log.checkpoint.tree_size else None
    if checkpoint is None and session is not None:  # offline, the receipt's own copy suffices
        checkpoint = session.client().checkpoint(room.room_id, tree_size=size)
    return ReceiptFile(
        room_id=room.room_id,
        run_id=run_id,
        manifest_digest=room.digest,
        receipt=receipt_envelope,
        attestations=tuple(workers),
        log_entry=log.envelopes[index],
        inclusion_proof=tuple(merkle.inclusion_proof(log.leaves[:size], index)),
        checkpoint=checkpoint,
        outputs=outputs,
    )


def fetch_verified_receipt(
    session: Session, room: PinnedRoom, run_id: str, *, with_output: bool
) -> tuple[ReceiptFile, VerifiedReceipt]:
    """Fetch, assemble and verify a run's receipt (and this party's output when asked)."""
    workers, _ = fetch_workers(session, room)
    log = fetch_log(session, room, workers)
    client = session.client()
    receipt_envelope = client.receipt(room.room_id, run_id)
    outputs: dict[str, bytes] = {}
    if with_output:
        outputs[session.key().name] = client.output(room.room_id, run_id)
    rfile = receipt_file_for(
        session, room, log, receipt_envelope, [w.envelope for w in workers], run_id, outputs
    )
    verified = verify_receipt_file(rfile, room.manifest, room.digest)
    session.home.receipt_path(room.room_id, run_id).parent.mkdir(parents=True, exist_ok=True)
    write_json_file(session.home.receipt_path(room.room_id, run_id), rfile.to_dict())
    return rfile, verified


def decrypt_output(session: Session, room: PinnedRoom, rfile: ReceiptFile, receipt: Receipt) -> bytes:
    """Open this party's sealed output of a verified receipt: bound to this room, run and
    recipient, and equal to the plaintext digest the receipt signs."""
    me = session.key().name
    record = next((o for o in receipt.outputs if o.recipient == me), None)
    if record is None or me not in rfile.outputs:
        raise NotFoundError(f"run {receipt.run_id} has no output for {me}")
    plaintext = open_bytes(
        rfile.outputs[me], session.key().encryption_private,
        expected_binding=output_binding(room.room_id, receipt.run_id, me),
    )
    if hashlib.sha256(plaintext).hexdigest() != record.plaintext_digest:
        raise DecryptionError()
    return plaintext


def decode_result(plaintext: bytes) -> tuple[list[str], list[list[Any]], dict[str, Any]]:
    """(columns, rows, meta) of a decrypted result document."""
    doc = parse_json(plaintext, max_bytes=len(plaintext) + 1)
    if not isinstance(doc, dict) or doc.get("format") != RESULT_FORMAT:
        raise InputError("result: not a sealroom result document")
    columns, rows, meta = doc.get("columns"), doc.get("rows"), doc.get("meta", {})
    if not isinstance(columns, list) or not isinstance(rows, list) or not isinstance(meta, dict):
        raise InputError("result: malformed document")
    return [str(c) for c in columns], [list(r) for r in rows], meta


def write_result(path: Path, columns: list[str], rows: list[list[Any]]) -> None:
    """Write the result as CSV, or as Parquet for a ``.parquet`` path (needs pyarrow)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        data = {c: [_typed(r[i]) for r in rows] for i, c in enumerate(columns)}
        pq.write_table(pa.table(data), path)
        return
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows([["" if v is None else v for v in row] for row in rows])


def _typed(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value) if any(ch in value for ch in ".eE") else int(value)
        except ValueError:
            return value
    return value




def start_run(session: Session, room: PinnedRoom, bundle: Envelope, *,
              idempotency_key: str | None = None) -> dict[str, Any]:
    """Ask the coordinator to run ``bundle``; returns the queued run (``run_id``, state)."""
    return dict(session.client().create_run(room.room_id, bundle.digest(),
                                            idempotency_key=idempotency_key or uuid.uuid4().hex))


FIRST_POLL_S = 0.05


def wait_for_run(session: Session, room: PinnedRoom, run: dict[str, Any], *,
                 timeout: float, poll: float = 0.25) -> dict[str, Any]:
    """Poll a run until it is terminal, first every 50 ms, then less often, up to every
    ``poll`` seconds (a small run ends within a second); returns its last state (check it with
    :func:`raise_for_run`).

    Raises ``NotFoundError`` when it has not finished after ``timeout`` seconds.
    """
    run_id = str(run["run_id"])
    deadline = time.monotonic() + timeout
    pause = min(FIRST_POLL_S, poll)
    while run_state(run) not in TERMINAL:
        if time.monotonic() > deadline:
            raise NotFoundError(
                f"run {run_id} not finished after {timeout}s (still {run_state(run)})")
        time.sleep(pause)
        pause = min(poll, pause * 1.5)
        run = dict(session.client().run(room.room_id, run_id))
    return run


def raise_for_run(run: dict[str, Any]) -> None:
    """Raise the error of a refused or failed run's code (nothing for other states)."""
    status = run_state(run)
    run_id = str(run.get("run_id"))
    if status in ("refused", "failed"):
        code = str(run.get("error_code") or "E_INTERNAL")
        message = str(run.get("message") or run.get("error") or f"run {status}")
        raise error_for_code(code, f"run {run_id} {status}: {message}")
