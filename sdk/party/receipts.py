"""The self-contained receipt file that ``result get`` writes and ``receipt verify`` checks
offline, with nothing but the room manifest.

Format (canonical JSON)::

    {
      "type": "sealroom-receipt-file",
      "version": 1,
      "room_id": "...", "run_id": "...", "manifest_digest": "<hex>",
      "receipt": <receipt envelope, signed by the worker key>,
      "attestations": [<attestation envelope>, ...],   # at least the one the receipt names
      "log_entry": <the run_finished / run_refused log entry envelope at receipt.log_index>,
      "inclusion_proof": ["<hex>", ...],                # audit path of that entry (RFC 9162)
                                                        # in the tree of receipt.checkpoint
      "checkpoint": <the worker-signed checkpoint envelope of that tree> | null,
      "outputs": {"<recipient>": "<base64 sealed output>", ...}   # what the writer fetched
    }

Verification order: the manifest (every party signed) → each attestation against the manifest
→ the receipt's signature by the attested worker it names, its room and manifest → each sealed
output against the receipt's ciphertext digests → the log entry (same worker, same run, same
``receipt_core``) and its inclusion at ``log_index`` under the checkpoint root → the checkpoint
envelope (same worker, same tree as the receipt names).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sdk.errors import InputError, LogError
from sdk.protocol.dsse import Envelope
from sdk.protocol.fields import check_hex64, check_keys, expect_mapping
from sdk.protocol.models import Manifest
from sdk.protocol.records import Receipt, log_origin
from sdk.protocol.verify import VerifiedReceipt, verify_checkpoint, verify_receipt

FILE_TYPE = "sealroom-receipt-file"
MAX_OUTPUT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ReceiptFile:
    """A parsed receipt file (nothing verified yet)."""

    room_id: str
    run_id: str
    manifest_digest: str
    receipt: Envelope
    attestations: tuple[Envelope, ...]
    log_entry: Envelope
    inclusion_proof: tuple[bytes, ...]
    checkpoint: Envelope | None
    outputs: Mapping[str, bytes]

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": FILE_TYPE,
            "version": 1,
            "room_id": self.room_id,
            "run_id": self.run_id,
            "manifest_digest": self.manifest_digest,
            "receipt": self.receipt.to_dict(),
            "attestations": [a.to_dict() for a in self.attestations],
            "log_entry": self.log_entry.to_dict(),
            "inclusion_proof": [p.hex() for p in self.inclusion_proof],
            "checkpoint": None if self.checkpoint is None else self.checkpoint.to_dict(),
            "outputs": {k: base64.b64encode(v).decode("ascii") for k, v in self.outputs.items()},
        }

    @classmethod
    def from_dict(cls, data: object) -> ReceiptFile:
        """Parse the structure. Raises ``InputError``."""
        where = "receipt file"
        d = expect_mapping(data, where)
        check_keys(
            d,
            where,
            ["type", "version", "room_id", "run_id", "manifest_digest", "receipt",
             "attestations", "log_entry", "inclusion_proof", "checkpoint", "outputs"],
        )
        if d["type"] != FILE_TYPE or d["version"] != 1:
            raise InputError(f"{where}: not a {FILE_TYPE} (version 1)")
        atts = d["attestations"]
        proof = d["inclusion_proof"]
        outputs = expect_mapping(d["outputs"], f"{where}.outputs")
        if not isinstance(atts, list) or not isinstance(proof, list) or len(proof) > 64:
            raise InputError(f"{where}: attestations and inclusion_proof must be lists")
        decoded: dict[str, bytes] = {}
        for name, value in outputs.items():
            if not isinstance(value, str) or len(value) > MAX_OUTPUT_BYTES * 4 // 3 + 4:
                raise InputError(f"{where}.outputs: base64 strings only")
            try:
                decoded[str(name)] = base64.b64decode(value, validate=True)
            except ValueError as exc:
                raise InputError(f"{where}.outputs: invalid base64") from exc
        for s in proof:
            check_hex64(s, f"{where}.inclusion_proof[]")
        return cls(
            room_id=str(d["room_id"]),
            run_id=str(d["run_id"]),
            manifest_digest=check_hex64(d["manifest_digest"], f"{where}.manifest_digest"),
            receipt=Envelope.from_dict(d["receipt"]),
            attestations=tuple(Envelope.from_dict(a) for a in atts),
            log_entry=Envelope.from_dict(d["log_entry"]),
            inclusion_proof=tuple(bytes.fromhex(s) for s in proof),
            checkpoint=None if d["checkpoint"] is None else Envelope.from_dict(d["checkpoint"]),
            outputs=decoded,
        )


def verify_receipt_file(
    receipt_file: ReceiptFile,
    manifest: Manifest,
    manifest_digest: str,
    *,
    extra_outputs: Sequence[bytes] = (),
) -> VerifiedReceipt:
    """Verify a receipt file against a verified manifest (see the module docstring).

    ``extra_outputs`` are files the auditor holds (a sealed output or the decrypted result
    document): each must match a ciphertext or plaintext digest the receipt signs.

    Raises:
        AttestationError, SignatureError, InputError, LogError.
    """
    if receipt_file.manifest_digest != manifest_digest:
        raise InputError("receipt file: made for another manifest")
    verified = verify_receipt(
        receipt_file.receipt,
        manifest,
        receipt_file.attestations,
        log_entry=receipt_file.log_entry,
        inclusion=receipt_file.inclusion_proof,
        outputs=dict(receipt_file.outputs),
        manifest_digest=manifest_digest,
    )
    receipt = verified.receipt
    if receipt.run_id != receipt_file.run_id or receipt.room_id != receipt_file.room_id:
        raise InputError("receipt file: names another run or room than its receipt")
    if receipt_file.checkpoint is not None:
        worker = {receipt.attestation_digest: verified.attestation.worker_signing_key}
        checkpoint = verify_checkpoint(receipt_file.checkpoint, worker, log_origin(receipt.room_id))
        if checkpoint.to_dict() != receipt.checkpoint.to_dict():
            raise LogError("receipt file: the checkpoint differs from the one the receipt names")
    for data in extra_outputs:
        match_output(receipt, data)
    return verified


def match_output(receipt: Receipt, data: bytes) -> str:
    """The recipient whose sealed output or plaintext result ``data`` is. Raises ``InputError``
    when it matches no digest the receipt signs."""
    digest = hashlib.sha256(data).hexdigest()
    for record in receipt.outputs:
        if digest in (record.ciphertext_digest, record.plaintext_digest):
            return record.recipient
    raise InputError("output file: matches none of the outputs this receipt signs")


def receipt_lines(receipt: Receipt) -> list[str]:
    """What a receipt says a run read and measured, in words: each input's version, signed row
    count and upload statement, then each input's measured match rate (``result get`` and
    ``receipt verify`` print these)."""
    lines = []
    for item in receipt.inputs:
        follows = ", the newest upload (the bundle follows it)" if item.follow_latest else ""
        lines.append(f"input {item.dataset}: version {item.version}, {item.row_count} rows "
                     f"(upload {item.upload[:12]}{follows})")
    for m in receipt.match:
        rate = "withheld (below the minimum group size)" if m.rate is None else m.rate
        lines.append(f"match rate of {m.dataset} ({m.party}): {rate}")
    return lines
