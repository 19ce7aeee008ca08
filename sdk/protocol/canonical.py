"""Canonical JSON (RFC 8785, JCS) and a strict JSON parser.

``canonical_json`` gives the one byte string that every signature and digest is computed over.
``parse_json`` is the only way untrusted JSON enters sealroom: it caps the size before parsing
and rejects what JCS cannot represent or what could be read two ways (duplicate keys, NaN,
integers beyond 2**53, lone surrogates, a BOM, trailing data).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from sdk.errors import InputError

MAX_SAFE_INTEGER = 2**53
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 64

_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def _encode_string(value: str) -> str:
    out = ['"']
    for ch in value:
        code = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif code < 0x20:
            out.append(f"\\u{code:04x}")
        elif 0xD800 <= code <= 0xDFFF:
            raise InputError("canonical JSON: lone surrogate in string")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _encode_float(value: float) -> str:
    """ECMAScript Number.prototype.toString for a finite double (RFC 8785 §3.2.2.3)."""
    if not math.isfinite(value):
        raise InputError("canonical JSON: NaN and Infinity are not allowed")
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    text = repr(abs(value))  # shortest round-trip digits
    mantissa, _, exp_text = text.partition("e")
    exponent = int(exp_text) if exp_text else 0
    int_part, _, frac_part = mantissa.partition(".")
    digits = (int_part + frac_part).lstrip("0")
    # position of the decimal point relative to the start of ``digits``
    point = (
        len(int_part.lstrip("0")) + exponent
        if int_part.strip("0")
        else exponent - (len(frac_part) - len(frac_part.lstrip("0")))
    )
    digits = digits.rstrip("0") or "0"
    k = len(digits)
    n = point
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * (-n) + digits
    exp = n - 1
    exp_str = f"e+{exp}" if exp >= 0 else f"e-{-exp}"
    if k == 1:
        return sign + digits + exp_str
    return sign + digits[0] + "." + digits[1:] + exp_str


def _encode(value: Any, depth: int, out: list[str]) -> None:
    if depth > MAX_DEPTH:
        raise InputError("canonical JSON: nested too deeply")
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise InputError("canonical JSON: integer beyond 2**53; encode it as a string")
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_encode_float(value))
    elif isinstance(value, str):
        out.append(_encode_string(value))
    elif isinstance(value, Mapping):
        keys = list(value.keys())
        if not all(isinstance(k, str) for k in keys):
            raise InputError("canonical JSON: object keys must be strings")
        out.append("{")
        for i, key in enumerate(sorted(keys, key=lambda k: k.encode("utf-16-be", "surrogatepass"))):
            if i:
                out.append(",")
            out.append(_encode_string(key))
            out.append(":")
            _encode(value[key], depth + 1, out)
        out.append("}")
    elif isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, depth + 1, out)
        out.append("]")
    else:
        raise InputError(f"canonical JSON: cannot encode a {type(value).__name__}")


def canonical_json(value: object) -> bytes:
    """Serialize ``value`` as RFC 8785 canonical JSON (UTF-8 bytes).

    Raises:
        InputError: for values JCS cannot represent (NaN, integers beyond 2**53, lone
            surrogates, non-string keys, unsupported types).
    """
    out: list[str] = []
    _encode(value, 0, out)
    return "".join(out).encode("utf-8")


def _reject_constant(name: str) -> Any:
    raise InputError(f"JSON: {name} is not allowed")


def _parse_int(text: str) -> int:
    if len(text) > 17:
        raise InputError("JSON: integer beyond 2**53")
    value = int(text)
    if abs(value) > MAX_SAFE_INTEGER:
        raise InputError("JSON: integer beyond 2**53")
    return value


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InputError("JSON: number out of range")
    return value


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InputError("JSON: duplicate key")
        result[key] = value
    return result


def _check_strings(value: Any, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise InputError("JSON: nested too deeply")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InputError("JSON: lone surrogate in string") from exc
    elif isinstance(value, dict):
        if depth >= MAX_DEPTH:
            raise InputError("JSON: nested too deeply")
        for key, item in value.items():
            _check_strings(key, depth + 1)
            _check_strings(item, depth + 1)
    elif isinstance(value, list):
        if depth >= MAX_DEPTH:
            raise InputError("JSON: nested too deeply")
        for item in value:
            _check_strings(item, depth + 1)


def parse_json(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> object:
    """Parse untrusted JSON strictly.

    The size is checked before anything is parsed. Rejects a BOM, invalid UTF-8, duplicate
    keys, NaN/Infinity, integers beyond 2**53, lone surrogates, nesting deeper than 64 and
    trailing data.

    Raises:
        InputError: for any of the above, or any malformed JSON.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InputError("JSON: expected bytes")
    if len(data) > max_bytes:
        raise InputError(f"JSON: input larger than {max_bytes} bytes")
    raw = bytes(data)
    if raw.startswith(b"\xef\xbb\xbf"):
        raise InputError("JSON: byte order mark not allowed")
    try:
        text = raw.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise InputError("JSON: invalid UTF-8") from exc
    # Nesting: the C parser guards its recursion (RecursionError below); the depth policy is
    # enforced on the parsed value by _check_strings, so no per-character Python loop here.
    try:
        value = json.loads(
            text,
            object_pairs_hook=_pairs,
            parse_constant=_reject_constant,
            parse_int=_parse_int,
            parse_float=_parse_float,
        )
    except InputError:
        raise
    except (ValueError, RecursionError) as exc:
        raise InputError("JSON: malformed document") from exc
    # the walk is only needed when a surrogate escape or enough nesting could be present
    if b"\\u" in raw or raw.count(b"[") + raw.count(b"{") > MAX_DEPTH:
        _check_strings(value)
    return value
