"""The defences of the local review page: who may talk to it, and what every answer carries.

A page that signs approvals with the party's key is a target for any web page the same browser
opens, so every request passes :meth:`Guard.check` before a view sees it:

1. **Host** must be the loopback address (or ``localhost``) and the port the server bound: a
   DNS-rebinding page (``evil.example`` resolving to 127.0.0.1) sends its own name and is
   refused (400).
2. **Origin** and **Sec-Fetch-Site**: a request another origin made (``Origin`` of another
   scheme, host or port, or ``null``; ``Sec-Fetch-Site`` ``cross-site`` or ``same-site``, which
   is another port of the same host) is refused (403). ``none`` (the user typed or opened the
   link) and ``same-origin`` pass. ``Origin: null`` passes only with ``Sec-Fetch-Site:
   same-origin``: under ``Referrer-Policy: no-referrer`` the browser sends ``null`` as the
   origin of this page's own form posts, and ``Sec-Fetch-*`` is a header no page can set.
3. **The token**: the URL the command prints carries a one-time token (``/?token=...``,
   compared in constant time). Exchanged once, it becomes a session held in an ``HttpOnly``,
   ``SameSite=Strict`` cookie, and the answer redirects to the clean URL so the token stays
   neither in the address bar nor in the history. Without that cookie every page is refused
   (403); the token cannot be used a second time.
4. **CSRF**: every POST carries the session's CSRF token in its form (constant-time compare);
   without it, or with another, nothing is done (403).

:data:`SECURITY_HEADERS` go on every answer, refusals included: a strict Content-Security-
Policy (``default-src 'none'``: no script at all, styles and images only from this server, no
framing, forms only to this server), ``nosniff``, no referrer, no caching.
"""

from __future__ import annotations

import hmac
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from urllib.parse import urlsplit

LOOPBACK = "127.0.0.1"
TOKEN_PARAM = "token"  # noqa: S105 - the name of a query parameter
CSRF_FIELD = "csrf"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "style-src 'self'",
        "img-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'self'",
        "base-uri 'none'",
    )
)
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)
ALLOWED_FETCH_SITES = ("none", "same-origin")


class Refusal(Exception):
    """A request the guard refuses: its HTTP status and a short reason (shown to the user)."""

    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Visitor:
    """A request that passed the guard: its session's CSRF token (for the forms it renders)."""

    csrf: str


class Guard:
    """The token, the session and the checks of one server (one party, one port)."""

    def __init__(self, port: int, *, token: str | None = None) -> None:
        self.port = port
        self.token = token or secrets.token_urlsafe(32)
        self.cookie_name = f"sealroom_ui_{port}"
        self._lock = threading.Lock()
        self._token_used = False
        self._session: str | None = None
        self._csrf: str | None = None

    # -- what the command prints ---------------------------------------------------------------

    @property
    def origin(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def login_url(self) -> str:
        """The URL with the one-time token (what the command prints and opens)."""
        return f"{self.origin}/?{TOKEN_PARAM}={self.token}"

    # -- checks ------------------------------------------------------------------------------

    def allowed_hosts(self) -> tuple[str, ...]:
        return (f"{LOOPBACK}:{self.port}", f"localhost:{self.port}")

    def check_host(self, headers: Mapping[str, str]) -> None:
        """Refuse (400) a Host that is not this server's loopback address and port."""
        host = (headers.get("Host") or "").strip().lower()
        if host not in self.allowed_hosts():
            raise Refusal(HTTPStatus.BAD_REQUEST, "this page answers only on its loopback address")

    def check_origin(self, headers: Mapping[str, str]) -> None:
        """Refuse (403) a request another origin (or another site) made."""
        site = headers.get("Sec-Fetch-Site")
        if site is not None and site.strip().lower() not in ALLOWED_FETCH_SITES:
            raise Refusal(HTTPStatus.FORBIDDEN, "requests from other sites are refused")
        origin = headers.get("Origin")
        if origin is None:
            return
        if origin.strip() == "null" and (site or "").strip().lower() == "same-origin":
            return  # our own form: no-referrer makes the browser send "null" on a POST
        parts = urlsplit(origin.strip().lower())
        if parts.scheme != "http" or parts.netloc not in self.allowed_hosts() or parts.path:
            raise Refusal(HTTPStatus.FORBIDDEN, "requests from other origins are refused")

    def exchange(self, token: str) -> str:
        """Trade the one-time token for a session; returns the ``Set-Cookie`` value.

        Raises ``Refusal`` (403) for a wrong token or one already used.
        """
        with self._lock:
            good = hmac.compare_digest(token.encode(), self.token.encode())
            if not good or self._token_used:
                raise Refusal(
                    HTTPStatus.FORBIDDEN,
                    "this link is not valid (or was used "
                    "already): restart `sealroom ui` for a new one",
                )
            self._token_used = True
            self._session = secrets.token_urlsafe(32)
            self._csrf = secrets.token_urlsafe(32)
            session = self._session
        return f"{self.cookie_name}={session}; HttpOnly; SameSite=Strict; Path=/"

    def visitor(self, headers: Mapping[str, str]) -> Visitor:
        """The request's session, from its cookie. Raises ``Refusal`` (403) without one."""
        raw = headers.get("Cookie") or ""
        cookie: SimpleCookie = SimpleCookie()
        try:
            cookie.load(raw)
        except CookieError:
            cookie = SimpleCookie()
        morsel = cookie.get(self.cookie_name)
        with self._lock:
            session, csrf = self._session, self._csrf
        if (
            morsel is None
            or session is None
            or csrf is None
            or not hmac.compare_digest(morsel.value.encode(), session.encode())
        ):
            raise Refusal(
                HTTPStatus.FORBIDDEN, "open the link `sealroom ui` printed (with its token) first"
            )
        return Visitor(csrf)

    @staticmethod
    def check_csrf(visitor: Visitor, form: Mapping[str, str]) -> None:
        """Refuse (403) a form without this session's CSRF token."""
        given = form.get(CSRF_FIELD, "")
        if not given or not hmac.compare_digest(given.encode(), visitor.csrf.encode()):
            raise Refusal(
                HTTPStatus.FORBIDDEN,
                "this form is not from this page (CSRF token missing or wrong): nothing was done",
            )
