"""An ASGI middleware that caps request bodies before any route sees them, and counts
responses by status class for ``/metrics``.

Every body except the streamed upload route's is read here up to ``max_bytes`` (a larger
``Content-Length`` gets 413 at once; a chunked body, as soon as it passes the cap) and replayed
to the app, so no route can be made to buffer an unbounded body. All bodies held at once share
one budget (the settings' ``max_buffered_bytes``): a request that would exceed it gets 429. The
upload route enforces its own, per-upload cap while it streams. ``Content-Type`` and strict JSON
are checked once the route is known (:func:`coordinator.routes.deps.check_body`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

STREAMED = re.compile(r"^/v1/rooms/[^/]+/uploads/[^/]+/data$")


async def _reply(send: Send, status: int, code: str, message: str,
                 extra: Iterable[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *extra]})
    await send({"type": "http.response.body", "body": body})


class _Budget:
    """Bytes of bodies held at once (one event loop: no lock needed)."""

    def __init__(self, total: int) -> None:
        self.total, self.used = total, 0

    def take(self, n: int) -> bool:
        if self.used + n > self.total:
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        self.used -= n


class BodyLimitMiddleware:
    """Cap request bodies at ``max_bytes``, and all bodies held at once at ``max_buffered``
    (default: the app's ``max_buffered_bytes``), except the streamed upload route's."""

    def __init__(self, app: ASGIApp, max_bytes: int, counters: dict[str, int],
                 max_buffered: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.counters = counters
        self._max_buffered = max_buffered
        self._budget: _Budget | None = None

    def _budget_of(self, scope: Scope) -> _Budget:
        if self._budget is None:
            total = self._max_buffered
            if total is None:
                services = getattr(getattr(scope.get("app"), "state", None), "services", None)
                total = getattr(getattr(services, "settings", None), "max_buffered_bytes",
                                16 * self.max_bytes)
            # one body of the largest size always fits
            self._budget = _Budget(max(int(total), self.max_bytes))
        return self._budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                key = f"{int(message['status']) // 100}xx"
                self.counters[key] = self.counters.get(key, 0) + 1
            await send(message)

        if scope["method"] == "PUT" and STREAMED.match(scope["path"]):
            await self.app(scope, receive, counting_send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            if not length.isdigit():
                await _reply(counting_send, 400, "E_INPUT", "invalid Content-Length")
                return
            if int(length) > self.max_bytes:
                await _reply(counting_send, 413, "E_RESOURCE",
                             f"request body larger than {self.max_bytes} bytes")
                return
        budget = self._budget_of(scope)
        reserved = 0
        try:
            if length is not None:
                if not budget.take(int(length)):
                    await self._busy(counting_send)
                    return
                reserved = int(length)
            chunks: list[bytes] = []
            total = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body = message.get("body", b"")
                total += len(body)
                if total > self.max_bytes:
                    await _reply(counting_send, 413, "E_RESOURCE",
                                 f"request body larger than {self.max_bytes} bytes")
                    return
                if total > reserved:
                    if not budget.take(total - reserved):
                        await self._busy(counting_send)
                        return
                    reserved = total
                chunks.append(body)
                if not message.get("more_body", False):
                    break
            buffered = b"".join(chunks)
            del chunks
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": buffered, "more_body": False}
                return await receive()

            await self.app(scope, replay, counting_send)
        finally:
            budget.give(reserved)

    @staticmethod
    async def _busy(send: Send) -> None:
        await _reply(send, 429, "E_RESOURCE",
                     "the coordinator is holding too many request bodies; retry shortly",
                     [(b"retry-after", b"1")])
