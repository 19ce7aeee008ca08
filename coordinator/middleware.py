"""An ASGI middleware that caps request bodies before any route sees them, and counts
responses by status class for ``/metrics``.

Every body except the streamed upload route is read here up to ``max_bytes`` (a larger
``Content-Length`` or stream gets 413 at once) and replayed to the app, so no route can be
made to buffer an unbounded body. The upload route enforces its own, per-upload cap while it
streams.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

STREAMED = re.compile(r"^/v1/rooms/[^/]+/uploads/[^/]+/data$")


async def _reply(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Cap request bodies at ``max_bytes`` (except the streamed upload route)."""

    def __init__(self, app: ASGIApp, max_bytes: int, counters: dict[str, int]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.counters = counters

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
            chunks.append(body)
            if not message.get("more_body", False):
                break
        buffered = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": buffered, "more_body": False}
            return await receive()

        await self.app(scope, replay, counting_send)
