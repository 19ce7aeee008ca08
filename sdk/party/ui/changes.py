"""What changed from the bundle a new one replaces.

The protocol has no "replaces" field; the page's convention, stated wherever it is shown: a
bundle **replaces** the verified bundle of the same author and the same title with the highest
lower sequence number. Both bundles are verified against the pinned manifest before they are
compared; the comparison is of their signed payloads, field by field, and of their code, line by
line.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sdk.protocol.models import Bundle

_SKIP = ("sequence",)  # always differs; shown in the heading


@dataclass(frozen=True)
class Change:
    """One signed field that differs: its dotted path, the earlier and the new value."""

    field: str
    before: str
    after: str


@dataclass(frozen=True)
class Changes:
    """The difference from an earlier bundle (``code`` is a unified diff, one line each)."""

    earlier_digest: str
    earlier_sequence: int
    fields: list[Change]
    code: list[str]


def predecessor(
    bundle: Bundle, digest: str, others: Sequence[tuple[str, Bundle]]
) -> tuple[str, Bundle] | None:
    """The verified bundle ``bundle`` replaces among ``others`` (digest, bundle), if any."""
    earlier = [
        (d, b)
        for d, b in others
        if d != digest
        and b.author == bundle.author
        and b.title == bundle.title
        and b.sequence < bundle.sequence
    ]
    return max(earlier, key=lambda item: item[1].sequence, default=None)


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict) and value:
        for key in sorted(value):
            _flatten(f"{prefix}.{key}" if prefix else str(key), value[key], out)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, item in enumerate(value):
            _flatten(f"{prefix}[{i}]", item, out)
    else:
        out[prefix] = (
            "-"
            if value is None
            else (value if isinstance(value, str) else json.dumps(value, sort_keys=True))
        )


def changes(earlier_digest: str, earlier: Bundle, bundle: Bundle) -> Changes:
    """Every signed field of ``bundle`` that differs from ``earlier``, and the code's diff."""
    before: dict[str, str] = {}
    after: dict[str, str] = {}
    old, new = earlier.to_dict(), bundle.to_dict()
    old_code, new_code = str(old.pop("code")), str(new.pop("code"))
    _flatten("", old, before)
    _flatten("", new, after)
    fields = [
        Change(name, before.get(name, "(absent)"), after.get(name, "(absent)"))
        for name in sorted(set(before) | set(after))
        if name not in _SKIP and before.get(name) != after.get(name)
    ]
    code = list(
        difflib.unified_diff(
            old_code.splitlines(), new_code.splitlines(), "earlier", "this bundle", lineterm="", n=2
        )
    )
    return Changes(earlier_digest, earlier.sequence, fields, code)
