"""Small validators shared by the payload models.

Every ``from_dict`` goes through these so that a malformed payload always ends in
``InputError`` naming the field, never in a ``KeyError`` or ``TypeError``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from sdk.errors import InputError

T = TypeVar("T")

# \Z, not $: "$" also matches before a trailing newline ("alice\n" is not a name)
_DECIMAL_RE = re.compile(r"^-?(0|[1-9][0-9]{0,17})(\.[0-9]{1,18})?\Z")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}\Z")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}\Z")
MAX_STR = 1 << 20


def expect_mapping(value: object, where: str) -> Mapping[str, Any]:
    """Return ``value`` as a mapping or raise ``InputError``."""
    if not isinstance(value, Mapping):
        raise InputError(f"{where}: expected an object")
    return value


def check_keys(
    data: Mapping[str, Any], where: str, required: Sequence[str], optional: Sequence[str] = ()
) -> None:
    """Reject unknown fields and report missing required ones."""
    unknown = set(data) - set(required) - set(optional)
    if unknown:
        # the names come from untrusted input: quote a few, each shortened
        names = [repr(str(k)[:40]) for k in sorted(unknown, key=str)[:5]]
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise InputError(f"{where}: unknown field(s) [{', '.join(names)}]{more}")
    missing = [k for k in required if k not in data]
    if missing:
        raise InputError(f"{where}: missing field(s) {missing}")


def get_str(data: Mapping[str, Any], key: str, where: str, *, max_len: int = MAX_STR) -> str:
    """A string field, length-capped."""
    value = data.get(key)
    if not isinstance(value, str):
        raise InputError(f"{where}.{key}: expected a string")
    if len(value) > max_len:
        raise InputError(f"{where}.{key}: longer than {max_len} characters")
    return value


def get_opt_str(data: Mapping[str, Any], key: str, where: str) -> str | None:
    """An optional string field (absent or null gives None)."""
    if data.get(key) is None:
        return None
    return get_str(data, key, where)


def get_int(
    data: Mapping[str, Any], key: str, where: str, *, minimum: int = 0, maximum: int = 2**53
) -> int:
    """An integer field in [minimum, maximum] (booleans are not integers)."""
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{where}.{key}: expected an integer")
    if not minimum <= value <= maximum:
        raise InputError(f"{where}.{key}: out of range [{minimum}, {maximum}]")
    return value


def get_opt_int(
    data: Mapping[str, Any], key: str, where: str, *, minimum: int = 0, maximum: int = 2**53
) -> int | None:
    """An optional integer field."""
    if data.get(key) is None:
        return None
    return get_int(data, key, where, minimum=minimum, maximum=maximum)


def get_bool(data: Mapping[str, Any], key: str, where: str) -> bool:
    """A boolean field."""
    value = data.get(key)
    if not isinstance(value, bool):
        raise InputError(f"{where}.{key}: expected true or false")
    return value


def get_list(
    data: Mapping[str, Any], key: str, where: str, *, max_items: int = 10_000
) -> list[Any]:
    """A list field, capped in length."""
    value = data.get(key)
    if not isinstance(value, list):
        raise InputError(f"{where}.{key}: expected a list")
    if len(value) > max_items:
        raise InputError(f"{where}.{key}: more than {max_items} items")
    return value


def get_str_list(
    data: Mapping[str, Any], key: str, where: str, *, max_items: int = 10_000
) -> tuple[str, ...]:
    """A list of strings."""
    items = get_list(data, key, where, max_items=max_items)
    if not all(isinstance(i, str) for i in items):
        raise InputError(f"{where}.{key}: expected a list of strings")
    return tuple(items)


def check_decimal(value: object, where: str, *, non_negative: bool = False) -> str:
    """A decimal number written as a string (no floats in signed payloads)."""
    if not isinstance(value, str) or not _DECIMAL_RE.match(value):
        raise InputError(f'{where}: expected a decimal string such as "1.5"')
    try:
        number = Decimal(value)
    except InvalidOperation as exc:  # pragma: no cover - the regex already guards
        raise InputError(f"{where}: not a decimal") from exc
    if non_negative and number < 0:
        raise InputError(f"{where}: must not be negative")
    return value


def get_decimal(
    data: Mapping[str, Any], key: str, where: str, *, non_negative: bool = False
) -> str:
    """A decimal-string field."""
    return check_decimal(data.get(key), f"{where}.{key}", non_negative=non_negative)


def check_name(value: object, where: str) -> str:
    """An identifier-like name: letters, digits, ``_`` and ``-``, at most 64 characters."""
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise InputError(f"{where}: expected a name of letters, digits, '_' or '-'")
    return value


def get_name(data: Mapping[str, Any], key: str, where: str) -> str:
    """A name field."""
    return check_name(data.get(key), f"{where}.{key}")


def check_hex64(value: object, where: str) -> str:
    """A lowercase hex SHA-256 digest."""
    if not isinstance(value, str) or not _HEX64_RE.match(value):
        raise InputError(f"{where}: expected a lowercase hex SHA-256 digest")
    return value


def get_hex64(data: Mapping[str, Any], key: str, where: str) -> str:
    """A digest field."""
    return check_hex64(data.get(key), f"{where}.{key}")


def get_choice(data: Mapping[str, Any], key: str, where: str, choices: Sequence[str]) -> str:
    """A string field that must be one of ``choices``."""
    value = data.get(key)
    if value not in choices:
        raise InputError(f"{where}.{key}: expected one of {list(choices)}")
    assert isinstance(value, str)
    return value
