"""Reading and writing the JSON files a party or auditor handles (manifests, bundles, receipt
files, statements): size-capped strict reads and atomic writes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sdk.errors import InputError, NotFoundError
from sdk.protocol.canonical import canonical_json, parse_json
from sdk.protocol.dsse import Envelope

MAX_JSON_FILE = 64 * 1024 * 1024


def read_json_file(path: str | Path, what: str) -> Any:
    """Read strict JSON from a file (size-capped before parsing).

    Raises ``NotFoundError`` (no such file) or ``InputError`` (too large, not strict JSON).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise NotFoundError(f"{what}: {p} does not exist")
    with open(p, "rb") as handle:
        data = handle.read(MAX_JSON_FILE + 1)
    if len(data) > MAX_JSON_FILE:
        raise InputError(f"{what}: {p.name} is too large")
    return parse_json(data, max_bytes=MAX_JSON_FILE)


def read_envelope_file(path: str | Path, what: str) -> Envelope:
    """Read a DSSE envelope from a JSON file (not yet verified). Raises as
    :func:`read_json_file`, and ``InputError`` for a malformed envelope."""
    return Envelope.from_dict(read_json_file(path, what))


def write_json_file(path: str | Path, value: Any) -> Path:
    """Write canonical JSON atomically (temp file, then rename); returns the path."""
    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_bytes(canonical_json(value) + b"\n")
    os.replace(tmp, p)
    return p
