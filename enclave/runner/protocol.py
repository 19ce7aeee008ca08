"""Wire format between the supervisor side (:mod:`enclave.runner.client`) and the runner child.

stdin of the child: ``frame(request)`` then the Parquet bytes of every table, in the order and
with the lengths the request lists. stdout of the child: ``frame(status)`` then, when the status
is ``ok``, exactly ``body_bytes`` bytes of an Arrow IPC stream.

A frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON. The request is
``{"v": 1, "kind", "code", "params", "tables": [{"name", "bytes"}]}``; limits travel on the
command line so the child can apply them before it reads anything. The status is either
``{"v": 1, "ok": true, "rows", "body_bytes"}`` or ``{"v": 1, "ok": false, "code", "message"}``.

This module imports nothing heavy: both sides use it.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any, Final

VERSION: Final = 1
#: Query source cap, checked by the parent before spawning and again by the child.
MAX_SOURCE_BYTES: Final = 256 * 1024
#: Cap on the encoded params.
MAX_PARAMS_BYTES: Final = 256 * 1024
#: Cap on a request frame (source + params + table list).
MAX_REQUEST_BYTES: Final = 1024 * 1024
#: Cap on a status frame.
MAX_STATUS_BYTES: Final = 64 * 1024

_LEN = struct.Struct(">I")


class ProtocolError(Exception):
    """The peer sent a malformed or oversized frame."""


def encode_frame(obj: Any) -> bytes:
    """Serialise ``obj`` as one frame (JSON, no NaN/Infinity)."""
    payload = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return _LEN.pack(len(payload)) + payload


def read_exact_into(fd: int, view: memoryview) -> int:
    """Fill ``view`` from ``fd``; return the bytes read (short only at end of file)."""
    total = 0
    size = len(view)
    while total < size:
        n = os.readv(fd, [view[total:]])
        if n == 0:
            break
        total += n
    return total


def read_exact(fd: int, size: int) -> bytes:
    """Read exactly ``size`` bytes from ``fd``; raise :class:`ProtocolError` on end of file."""
    buf = bytearray(size)
    if read_exact_into(fd, memoryview(buf)) != size:
        raise ProtocolError("unexpected end of stream")
    return bytes(buf)


def read_frame(fd: int, max_bytes: int) -> dict[str, Any]:
    """Read one frame holding a JSON object of at most ``max_bytes`` bytes."""
    (size,) = _LEN.unpack(read_exact(fd, _LEN.size))
    if size > max_bytes:
        raise ProtocolError("frame too large")
    try:
        obj = json.loads(read_exact(fd, size).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError("frame is not JSON") from exc
    if not isinstance(obj, dict) or obj.get("v") != VERSION:
        raise ProtocolError("frame is not a version-1 object")
    return obj


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write all of ``data`` to ``fd`` (looping over partial writes)."""
    view = memoryview(data).cast("B")
    while view:
        n = os.write(fd, view)
        view = view[n:]
