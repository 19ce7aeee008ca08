"""The one clock, and timestamps in signed payloads: RFC 3339 UTC with second precision
(``2026-01-02T03:04:05Z``).

Functions that judge time (expiry, "issued in the future") take ``now`` as a parameter; only
callers at the edge (a command, a request handler, the worker's entry point) read the clock,
through :func:`utcnow`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from sdk.errors import InputError

# ASCII digits only (\d also matches other scripts' digits) and \Z (no trailing newline)
_TIME_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z\Z")


def format_time(moment: datetime) -> str:
    """Format an aware datetime as RFC 3339 UTC, seconds precision."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utcnow() -> datetime:
    """The current time (aware, UTC): the only place the project reads the wall clock."""
    return datetime.now(UTC)


def now() -> str:
    """The current time, formatted."""
    return format_time(utcnow())


def parse_time(text: object, where: str) -> datetime:
    """Parse a formatted timestamp. Raises ``InputError``."""
    if not isinstance(text, str) or not _TIME_RE.match(text):
        raise InputError(f"{where}: expected a UTC time like 2026-01-02T03:04:05Z")
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise InputError(f"{where}: invalid time") from exc


def check_time(text: object, where: str) -> str:
    """Validate a timestamp field and return it unchanged."""
    parse_time(text, where)
    assert isinstance(text, str)
    return text
