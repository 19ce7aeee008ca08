"""Run the coordinator under uvicorn, with every request bounded.

``sealroom coordinator serve`` and ``python -m coordinator.serve`` both build their server with
:func:`build_server`, whose configuration comes from :func:`server_config`, the one place
that turns the settings' limits into uvicorn's options and into :class:`BoundedHttpProtocol`,
the HTTP protocol production runs (uvicorn's httptools protocol plus the limits neither
httptools nor uvicorn enforces):

* the request line and headers: at most ``max_header_bytes`` and ``max_header_count`` (431),
  and all of them within ``header_timeout_s`` of the connection or of their first byte (408,
  or the connection is dropped): a client that trickles its headers is cut off;
* a body still arriving must bring ``min_body_rate`` bytes per second, checked every
  ``body_timeout_s`` while the coordinator is reading it (else the connection is dropped), and
  a client must not leave a response unread (write buffer full) for ``body_timeout_s``;
* at most ``max_connections`` connections (and as many requests in flight): a connection
  beyond is closed before anything is read; ``backlog`` bounds the kernel's accept queue;
* ``idle_timeout_s`` between two requests of a kept-alive connection.

Body sizes, ``Content-Type`` and duplicate JSON keys are checked by
:class:`coordinator.middleware.BodyLimitMiddleware`, which never buffers more than the caps.
Other settings come from ``SEALROOM_*`` environment variables; keyword arguments override them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from asyncio import AbstractEventLoop, TimerHandle, Transport
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from coordinator.launchers.base import Launcher
from coordinator.settings import Settings

log = logging.getLogger("sealroom.coordinator")

#: slack over ``max_header_bytes`` for the framing of a head (``": "``, CRLFs, the method and
#: the HTTP version) when an unfinished head is measured by the bytes received
HEAD_FRAMING = 1024
#: exit status when the server did not start (uvicorn's)
STARTUP_FAILURE = 3


@dataclass(frozen=True)
class RequestLimits:
    """The per-connection limits :class:`BoundedHttpProtocol` enforces (from the settings)."""

    max_header_bytes: int = 64 * 1024
    max_header_count: int = 100
    max_connections: int = 512
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    min_body_rate: int = 1024

    @classmethod
    def of(cls, settings: Settings) -> RequestLimits:
        """The limits the settings give."""
        return cls(max_header_bytes=settings.max_header_bytes,
                   max_header_count=settings.max_header_count,
                   max_connections=settings.max_connections,
                   header_timeout_s=settings.header_timeout_s,
                   body_timeout_s=settings.body_timeout_s,
                   min_body_rate=settings.min_body_rate)


class LimitedConfig(uvicorn.Config):
    """A uvicorn ``Config`` that carries the :class:`RequestLimits` of its protocol."""

    def __init__(self, app: Any, *, limits: RequestLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.request_limits = limits


class _Refused(Exception):
    """Raised in a parser callback to stop parsing a request that breaks a limit."""


_last_note: dict[str, float] = {}


def _note(kind: str, message: str, *args: object) -> None:
    """Log a refusal, at most once per kind every 10 seconds (an attack must not flood logs)."""
    now = time.monotonic()
    if now - _last_note.get(kind, -1e9) >= 10.0:
        _last_note[kind] = now
        log.warning(message, *args)


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits httptools and uvicorn do not enforce.

    httptools buffers an unfinished header line of any length and calls back only once it is
    complete, and uvicorn has no limit on header size or count, no header or body timeout and
    no cap on connections (``limit_concurrency`` answers 503 only once a request's headers are
    in). Here: completed header lines are counted and sized in the parser callbacks (exact);
    an unfinished head is sized by the bytes received, checked after each read (so it never
    holds more than the cap plus one read); one timer per connection bounds the time to send a
    head, the rate of a body while it is being read, and how long a response may wait for a
    client that does not read it.
    """

    def __init__(self, config: uvicorn.Config, server_state: ServerState,
                 app_state: dict[str, Any], _loop: AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = getattr(config, "request_limits", None)
        self.limits = limits if isinstance(limits, RequestLimits) else RequestLimits()
        self._in_head = True        # waiting for (the rest of) a request line and headers
        self._head_started = False  # a byte of the current head has arrived
        self._head_bytes = 0        # bytes received of the unfinished head (from reads)
        self._head_size = 0         # exact size of its completed URL and header lines
        self._header_count = 0
        self._heads_done = 0
        self._window_bytes = 0      # body bytes received in the current rate window
        self._timer: TimerHandle | None = None
        self._write_timer: TimerHandle | None = None
        self._refusal: tuple[int, str, str] | None = None

    # -- timers -----------------------------------------------------------------------------

    def _arm(self, delay: float, callback: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timeout(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        _note("head-timeout", "dropped a connection: request headers not received within %ss",
              self.limits.header_timeout_s)
        if self._head_started:
            self._refuse(408, "E_INPUT", "request headers not received in time")
        else:
            self.transport.close()

    def _body_check(self) -> None:
        self._timer = None
        if self.transport.is_closing() or self._in_head:
            return
        # while reading is paused, or the client waits for "100 Continue", the app is behind
        least = self.limits.min_body_rate * self.limits.body_timeout_s
        waiting = self.cycle is not None and self.cycle.waiting_for_100_continue
        if not self.flow.read_paused and not waiting and self._window_bytes < least:
            _note("body-rate", "dropped a connection: request body slower than %d bytes/s",
                  self.limits.min_body_rate)
            self.transport.close()
            return
        self._window_bytes = 0
        self._arm(self.limits.body_timeout_s, self._body_check)

    def _write_stalled(self) -> None:
        self._write_timer = None
        _note("write-stall", "dropped a connection: its client read nothing for %ss",
              self.limits.body_timeout_s)
        self.transport.abort()  # close() would wait for the buffer the client never reads

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.limits.body_timeout_s,
                                                     self._write_stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    # -- refusals ---------------------------------------------------------------------------

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer ``status`` with a JSON error (unless a response is under way on this
        connection) and close the connection."""
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            body = json.dumps({"error": {"code": code, "message": message}}).encode()
            content = [STATUS_LINE[status]]
            for name, value in self.server_state.default_headers:
                content.extend([name, b": ", value, b"\r\n"])
            content.extend([b"content-type: application/json\r\n",
                            b"content-length: " + str(len(body)).encode() + b"\r\n",
                            b"connection: close\r\n\r\n", body])
            self.transport.write(b"".join(content))
        self.transport.close()

    def _too_large(self, what: str) -> None:
        self._refusal = (431, "E_RESOURCE", f"request {what}")
        _note("head-size", "refused a request: %s", what)
        raise _Refused(what)

    def send_400_response(self, msg: str) -> None:
        # the parser stopped: on a refusal raised in a callback, or on malformed HTTP
        refusal, self._refusal = self._refusal, None
        self._refuse(*(refusal or (400, "E_INPUT", "invalid HTTP request")))

    # -- the connection ---------------------------------------------------------------------

    def connection_made(self, transport: Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        cap = self.limits.max_connections
        if len(self.connections) > cap or len(self.tasks) >= cap:
            _note("connections", "dropped a connection: %d open, %d in flight (cap %d)",
                  len(self.connections) - 1, len(self.tasks), cap)
            self.transport.close()
            return
        self._arm(self.limits.header_timeout_s, self._head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        was_in_head, heads_done = self._in_head, self._heads_done
        if was_in_head:
            self._head_started = True
            if self._timer is None:  # the first byte of a request on a kept-alive connection
                self._arm(self.limits.header_timeout_s, self._head_timeout)
        super().data_received(data)
        if self.transport.is_closing():
            return
        if not self._in_head:
            self._window_bytes += len(data)
        elif was_in_head and self._heads_done == heads_done:
            # the whole read belongs to the unfinished head (a head that starts inside a
            # read is counted from the next one: at most one read less)
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes + HEAD_FRAMING:
                _note("head-size", "refused a request: headers over %d bytes",
                      self.limits.max_header_bytes)
                self._refuse(431, "E_RESOURCE",
                             f"request headers larger than {self.limits.max_header_bytes} bytes")

    # -- parser callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_size = self._header_count = 0
        if self._timer is None:  # a head that starts inside a read
            self._arm(self.limits.header_timeout_s, self._head_timeout)

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        if self._head_size > self.limits.max_header_bytes:
            self._too_large(f"line and headers larger than {self.limits.max_header_bytes} bytes")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._head_size += len(name) + len(value) + 4
        if self._header_count > self.limits.max_header_count:
            self._too_large(f"has more than {self.limits.max_header_count} headers")
        if self._head_size > self.limits.max_header_bytes:
            self._too_large(f"line and headers larger than {self.limits.max_header_bytes} bytes")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head, self._head_started = False, False
        self._heads_done += 1
        self._head_bytes = self._window_bytes = 0
        self._arm(self.limits.body_timeout_s, self._body_check)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._disarm()
        cycle = self.cycle
        if (cycle is not None and cycle.response_complete and not self.pipeline
                and self.timeout_keep_alive_task is None and not self.transport.is_closing()):
            # the response went out before the body was in (which uvicorn then discards): the
            # keep-alive timer it armed was cancelled by the reads since, so arm it again
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler)


def server_config(app: Any, settings: Settings, host: str, port: int, *,
                  log_level: str = "info") -> LimitedConfig:
    """The uvicorn configuration of the coordinator: the one place the settings' limits
    become server options (both ``serve`` commands use it)."""
    return LimitedConfig(
        app, limits=RequestLimits.of(settings), host=host, port=port, log_level=log_level,
        access_log=False, http=BoundedHttpProtocol, ws="none", backlog=settings.backlog,
        timeout_keep_alive=settings.idle_timeout_s,
    )


def build_server(settings: Settings, host: str = "127.0.0.1", port: int = 8600, *,
                 worker_launcher: Launcher | None = None,
                 log_level: str = "info") -> uvicorn.Server:
    """The coordinator's app for ``settings`` under a uvicorn server of :func:`server_config`
    (``worker_launcher`` replaces the launcher they name: tests).

    Raises ``ConfigError`` for settings the app refuses (e.g. no public origin).
    """
    from coordinator.app import create_app

    app = create_app(settings, worker_launcher)
    return uvicorn.Server(server_config(app, settings, host, port, log_level=log_level))


def run_server(server: uvicorn.Server) -> None:
    """Serve until interrupted; exits with status 3 when the server could not start."""
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def serve_settings(settings: Settings, host: str = "127.0.0.1", port: int = 8600, *,
                   worker_launcher: Launcher | None = None, log_level: str = "info") -> None:
    """:func:`build_server` then :func:`run_server`."""
    run_server(build_server(settings, host, port, worker_launcher=worker_launcher,
                            log_level=log_level))


def serve(data_dir: Path | str, host: str = "127.0.0.1", port: int = 8600, *,
          worker_launcher: Launcher | None = None, log_level: str = "info",
          **overrides: Any) -> None:
    """Serve the coordinator until interrupted. ``overrides`` are settings fields (e.g.
    ``launcher="process"``); ``worker_launcher`` replaces the launcher they name (tests).

    Raises ``pydantic.ValidationError`` for invalid settings.
    """
    settings = Settings(data_dir=Path(data_dir), **overrides)
    serve_settings(settings, host, port, worker_launcher=worker_launcher, log_level=log_level)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m coordinator.serve --data-dir DIR [--host H] [--port P]
    (--public-origin URL | --dev)``. Refuses to start (one ``error: E_CONFIG`` line, exit 11)
    without a public origin (``--public-origin`` or ``SEALROOM_PUBLIC_ORIGIN``) unless
    ``--dev``, whose origin is then ``http://HOST:PORT``."""
    from sdk.errors import ConfigError

    parser = argparse.ArgumentParser(prog="python -m coordinator.serve")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8600)
    parser.add_argument("--launcher", choices=("docker", "process"))
    parser.add_argument("--public-origin", metavar="URL",
                        help="the URL parties use, scheme://host[:port] (the login audience)")
    parser.add_argument("--dev", action="store_true",
                        help="development: the origin defaults to http://HOST:PORT")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {"launcher": args.launcher} if args.launcher else {}
    if args.public_origin is not None:
        overrides["public_origin"] = args.public_origin
    if args.dev:
        from coordinator.settings import dev_origin, origin_in_environment

        overrides["dev"] = True
        if args.public_origin is None and not origin_in_environment():
            overrides["public_origin"] = dev_origin(args.host, args.port)
    try:
        serve(args.data_dir, args.host, args.port, log_level=args.log_level, **overrides)
    except ConfigError as exc:
        print(f"error: {exc.diagnostics()}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
