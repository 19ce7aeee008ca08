"""The login message, defined once: what a party signs to trade a coordinator's challenge for
a bearer token, and what the coordinator verifies; and the rule that names the audience.

``b"sealroom-auth-v1\\n" + nonce + b"\\n" + audience``, where the audience is the coordinator's
*public origin*: ``scheme://host[:port]`` as :func:`public_origin` normalises it. The
coordinator is configured with its origin (never derived from request headers) and the SDK
signs only when the audience a challenge names equals the origin of the URL it was told to use,
so a login signature made for one coordinator cannot be replayed at another.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from sdk.errors import InputError

AUTH_PREFIX = b"sealroom-auth-v1\n"
#: the longest origin accepted (the coordinator stores it with every challenge)
MAX_ORIGIN_CHARS = 400
_DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def auth_message(nonce: bytes, audience: str) -> bytes:
    """The bytes a party signs to authenticate to ``audience`` with ``nonce``."""
    return AUTH_PREFIX + nonce + b"\n" + audience.encode("utf-8")


def public_origin(url: object, where: str = "public origin") -> str:
    """The normalised origin of ``url``: lowercase ``http``/``https`` scheme, lowercase host
    (a DNS name, IPv4 or bracketed IPv6 address), the port unless it is the scheme's default,
    no trailing slash. A single trailing ``/`` is accepted; anything else after the authority
    (path, query, fragment) and user info are refused.

    Raises ``InputError`` for anything that is not such an origin or is over
    :data:`MAX_ORIGIN_CHARS` characters.
    """
    if not isinstance(url, str) or not url:
        raise InputError(f"{where}: expected a URL such as https://coordinator.example")
    if len(url) > MAX_ORIGIN_CHARS:
        raise InputError(f"{where}: longer than {MAX_ORIGIN_CHARS} characters")
    if not url.isascii() or not url.isprintable() or any(c.isspace() for c in url):
        raise InputError(f"{where}: only printable ASCII without spaces (use punycode)")
    if "?" in url or "#" in url:
        raise InputError(f"{where}: no query or fragment (scheme://host[:port] only)")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise InputError(f"{where}: the scheme must be http or https")
    if "@" in parts.netloc or not parts.netloc:
        raise InputError(f"{where}: expected scheme://host[:port] (no user info)")
    if parts.path not in ("", "/"):
        raise InputError(f"{where}: no path (scheme://host[:port] only)")
    try:
        port = parts.port
    except ValueError as exc:
        raise InputError(f"{where}: invalid port") from exc
    if port == 0 or parts.netloc.endswith(":"):
        raise InputError(f"{where}: invalid port")
    host = _host(parts.hostname or "", parts.netloc, where)
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def _host(hostname: str, netloc: str, where: str) -> str:
    if netloc.startswith("["):
        try:
            return f"[{ipaddress.IPv6Address(hostname).compressed}]"
        except ValueError as exc:
            raise InputError(f"{where}: invalid IPv6 address") from exc
    name = hostname.lower()
    if not name or len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        raise InputError(f"{where}: invalid host name")
    return name
