"""Turning a released table into the plaintext a recipient gets, and sealing it to them."""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sdk.protocol.canonical import canonical_json
from sdk.protocol.records import OutputRecord
from sdk.protocol.sealing import output_binding, seal_bytes

OUTPUT_FORMAT = "sealroom-result-v1"


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return format(Decimal(repr(value)).normalize(), "f") if value else "0"
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return str(value)


def _meta(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _meta(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_meta(v) for v in value]
    return _cell(value)


def result_document(columns: list[str], rows: list[list[Any]], extra: Mapping[str, Any]) -> bytes:
    """Canonical JSON of a result: columns, rows (floats as decimal strings), metadata."""
    return canonical_json(
        {
            "format": OUTPUT_FORMAT,
            "columns": columns,
            "rows": [[_cell(v) for v in row] for row in rows],
            "meta": _meta(extra),
        }
    )


def seal_output(
    plaintext: bytes,
    recipient: str,
    recipient_key: bytes,
    room_id: str,
    run_id: str,
    rows: int,
) -> tuple[str, OutputRecord]:
    """Seal ``plaintext`` to one recipient; returns base64 sealed bytes and its record."""
    sealed, _ = seal_bytes(plaintext, recipient_key, output_binding(room_id, run_id, recipient))
    record = OutputRecord(
        recipient=recipient,
        plaintext_digest=hashlib.sha256(plaintext).hexdigest(),
        ciphertext_digest=hashlib.sha256(sealed).hexdigest(),
        rows=rows,
    )
    return base64.b64encode(sealed).decode("ascii"), record
