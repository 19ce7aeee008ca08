"""The local review page's HTTP server: the standard library's ``ThreadingHTTPServer`` bound
to 127.0.0.1 only, a small router, and the checks of :mod:`sdk.party.ui.security` before any
view runs.

* Only GET and POST; every other method is answered 405 (with ``Allow: GET, POST``).
* A POST body is a urlencoded form of at most :data:`MAX_BODY` bytes with a
  ``Content-Length`` (413 above it, 411 without it, 415 for another content type).
* Views run one at a time (one party's session, one home folder, one HTTP client).
* Nothing is logged: request lines carry the one-time token.

:class:`UIServer` is what ``sealroom ui`` runs; tests start it on port 0.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sdk.errors import SealroomError
from sdk.party.events import step
from sdk.party.session import Session
from sdk.party.ui.render import Response, page, redirect, static
from sdk.party.ui.request import Request
from sdk.party.ui.security import LOOPBACK, SECURITY_HEADERS, TOKEN_PARAM, Guard, Refusal
from sdk.party.ui.views.approvals import bundle_page, confirm_page, decide_post, pending_page
from sdk.party.ui.views.budgets import budgets_page
from sdk.party.ui.views.metrics import metrics_page
from sdk.party.ui.views.room import room_page
from sdk.party.ui.views.runs import download_result, run_page, runs_page

MAX_BODY = 16 * 1024
MAX_DRAIN = 1024 * 1024
MAX_FIELDS = 16
METHODS = ("GET", "POST")
View = Callable[..., Response]

ROUTES: tuple[tuple[str, re.Pattern[str], View], ...] = (
    ("GET", re.compile(r"/"), room_page),
    ("GET", re.compile(r"/budgets"), budgets_page),
    ("GET", re.compile(r"/bundles"), pending_page),
    ("GET", re.compile(r"/bundles/([0-9a-f]{64})"), bundle_page),
    ("GET", re.compile(r"/bundles/([0-9a-f]{64})/(approve|revoke)"), confirm_page),
    ("POST", re.compile(r"/bundles/([0-9a-f]{64})/(approve|revoke)"), decide_post),
    ("GET", re.compile(r"/runs"), runs_page),
    ("GET", re.compile(r"/runs/([A-Za-z0-9_-]{1,64})"), run_page),
    ("GET", re.compile(r"/runs/([A-Za-z0-9_-]{1,64})/result\.(csv|parquet)"), download_result),
    ("GET", re.compile(r"/metrics"), metrics_page),
)


def _plain(status: HTTPStatus, message: str) -> Response:
    """A refusal page for someone without a session (no navigation, no CSRF token)."""
    return page("plain.html", status, status_code=int(status), title=status.phrase, message=message)


class App:
    """The routes over one party's session in one room, behind one guard."""

    def __init__(self, session: Session, room_id: str, guard: Guard) -> None:
        self.session = session
        self.room_id = room_id
        self.guard = guard
        self.lock = threading.Lock()

    def handle(self, method: str, target: str, headers: Any, body: bytes | None) -> Response:
        """Answer one request (after the guard's checks)."""
        try:
            return self._handle(method, target, headers, body)
        except Refusal as refusal:
            return _plain(refusal.status, refusal.reason)

    def _handle(self, method: str, target: str, headers: Any, body: bytes | None) -> Response:
        self.guard.check_host(headers)
        if method not in METHODS:
            return Response(
                HTTPStatus.METHOD_NOT_ALLOWED,
                b"",
                "text/plain; charset=utf-8",
                [("Allow", ", ".join(METHODS))],
            )
        self.guard.check_origin(headers)
        parts = urlsplit(target)
        path = parts.path
        query = _parse(parts.query)
        if method == "GET" and path == "/favicon.ico":
            path = "/static/favicon.svg"
        if method == "GET" and path.startswith("/static/"):
            found = static(path.removeprefix("/static/"))
            return found or _plain(HTTPStatus.NOT_FOUND, "no such file")
        if method == "GET" and path == "/" and TOKEN_PARAM in query:
            cookie = self.guard.exchange(query[TOKEN_PARAM])
            return redirect("/", headers=[("Set-Cookie", cookie)])
        visitor = self.guard.visitor(headers)
        form: dict[str, str] = {}
        if method == "POST":
            form = _form(headers, body)
            self.guard.check_csrf(visitor, form)
        for route_method, pattern, view in ROUTES:
            found_path = pattern.fullmatch(path)
            if found_path is None:
                continue
            if route_method != method:
                continue
            request = Request(self.session, self.room_id, visitor.csrf, query, form)
            with self.lock:
                return self._run(view, request, found_path.groups())
        if any(p.fullmatch(path) for _, p, _ in ROUTES):
            return Response(
                HTTPStatus.METHOD_NOT_ALLOWED,
                b"",
                "text/plain; charset=utf-8",
                [("Allow", ", ".join(sorted({m for m, p, _ in ROUTES if p.fullmatch(path)})))],
            )
        return _plain(HTTPStatus.NOT_FOUND, "no such page")

    def _run(self, view: View, request: Request, groups: tuple[str | Any, ...]) -> Response:
        try:
            return view(request, *groups)
        except SealroomError as exc:
            return request.page(
                "refused.html", "", HTTPStatus.BAD_GATEWAY, message=exc.diagnostics()
            )
        except Exception as exc:  # a page that fails says so, and the server keeps serving
            self.session.emit(step(f"sealroom ui: {type(exc).__name__} on a page"))
            return request.page(
                "refused.html",
                "",
                HTTPStatus.INTERNAL_SERVER_ERROR,
                message=f"E_INTERNAL: {type(exc).__name__}",
            )


def _parse(text: str) -> dict[str, str]:
    """A query string or form: each name once, at most :data:`MAX_FIELDS` fields."""
    try:
        pairs = parse_qs(
            text,
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=MAX_FIELDS,
            errors="strict",
        )
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refusal(HTTPStatus.BAD_REQUEST, "malformed query or form") from exc
    if any(len(values) != 1 for values in pairs.values()):
        raise Refusal(HTTPStatus.BAD_REQUEST, "a field given twice")
    return {name: values[0] for name, values in pairs.items()}


def _form(headers: Any, body: bytes | None) -> dict[str, str]:
    kind = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise Refusal(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "forms only")
    try:
        text = (body or b"").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Refusal(HTTPStatus.BAD_REQUEST, "the form is not UTF-8") from exc
    return _parse(text)


class _Handler(BaseHTTPRequestHandler):
    """Reads one request, asks the app, writes the answer with the security headers."""

    server_version = "sealroom-ui"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = 30
    app: App  # set on the subclass the server makes

    def __getattr__(self, name: str) -> Any:
        # every method but GET and POST: 405 (BaseHTTPRequestHandler looks up do_METHOD)
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        body: bytes | None = None
        try:
            body = self._body()
            response = self.app.handle(self.command, self.path, self.headers, body)
        except Refusal as refusal:
            response = _plain(refusal.status, refusal.reason)
            self.close_connection = True
        except Exception:  # the last resort: one line for the user, no traceback, no token
            response = Response(
                HTTPStatus.INTERNAL_SERVER_ERROR, b"E_INTERNAL", "text/plain; charset=utf-8"
            )
            self.close_connection = True
        self._send(response)

    def _body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding"):
            raise Refusal(HTTPStatus.LENGTH_REQUIRED, "a Content-Length is required")
        raw = self.headers.get("Content-Length")
        if raw is None:
            if self.command == "POST":
                raise Refusal(HTTPStatus.LENGTH_REQUIRED, "a Content-Length is required")
            return None
        if not raw.strip().isdigit():
            raise Refusal(HTTPStatus.BAD_REQUEST, "a malformed Content-Length")
        size = int(raw)
        if size > MAX_BODY:
            self._drain(size)
            raise Refusal(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "the request is too large")
        return self.rfile.read(size)

    def _drain(self, size: int) -> None:
        """Read and drop a refused body of moderate size, so that closing the connection
        does not reset it before the client reads the answer (larger ones are cut off)."""
        left = min(size, MAX_DRAIN)
        while left > 0:
            chunk = self.rfile.read(min(left, 64 * 1024))
            if not chunk:
                return
            left -= len(chunk)

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        for name, value in SECURITY_HEADERS:
            self.send_header(name, value)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body)

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        """Nothing is logged (request lines carry the token)."""


class UIServer:
    """``sealroom ui``'s server: bound to 127.0.0.1 on ``port`` (0: any free port)."""

    def __init__(self, session: Session, room_id: str, *, port: int = 0) -> None:
        class Handler(_Handler):
            pass

        self.httpd = ThreadingHTTPServer((LOOPBACK, port), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.guard = Guard(self.port)
        self.app = App(session, room_id, self.guard)
        Handler.app = self.app
        self._thread: threading.Thread | None = None

    @property
    def login_url(self) -> str:
        """The URL with the one-time token."""
        return self.guard.login_url

    @property
    def url(self) -> str:
        return self.guard.origin + "/"

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown` (or an interrupt)."""
        self.httpd.serve_forever(poll_interval=0.2)

    def start(self) -> UIServer:
        """Serve in a background thread (tests, notebooks)."""
        self._thread = threading.Thread(target=self.serve_forever, name="sealroom-ui", daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=5)
        self.httpd.server_close()
