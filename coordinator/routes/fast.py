"""Read routes under load: answers rendered once and served from memory until the next write.

A read route that many clients poll (the room, its status, the log head, a run, a receipt)
checks the caller's membership first, every time (:func:`coordinator.rooms.room_party_async`:
no database access once the room is verified and kept), then serves the JSON it rendered for
the same question, if no write went through the database since
(:class:`coordinator.storage.db.StateCache`, at most ``state_cache_max_age_s`` old). Otherwise
it computes the answer in the thread pool, renders it and keeps it; requests asking the same
question meanwhile wait for that one computation rather than start their own (unless a write
landed since it started). What such an answer says is never the caller's: membership is
decided before, and answers that name the caller are keyed by it.

:data:`FastCallerDep` is :data:`~coordinator.routes.deps.CallerDep` for these GET routes: the
same :func:`coordinator.auth.caller_of_token` decides, and its answer for a party token is
reused, until its expiry, while nothing was written (so ``POST /v1/auth/logout``, a write,
ends it at once in this process, and within ``state_cache_max_age_s`` anywhere).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import weakref
from collections.abc import Callable, Hashable
from datetime import datetime
from threading import Lock
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from coordinator.auth import caller_of_token
from coordinator.context import Caller, Services
from coordinator.routes.deps import ServicesDep, bearer_token
from coordinator.storage.db import Database, StateCache, utcnow
from coordinator.storage.models import Token

log = logging.getLogger("sealroom.coordinator")
V = TypeVar("V")
JSON_MEDIA = "application/json"
MAX_RENDERED = 4096
#: bytes of rendered answers kept per coordinator (an answer over a sixteenth is not kept)
MAX_RENDERED_BYTES = 64 * 1024 * 1024

_CACHES: weakref.WeakKeyDictionary[Database, StateCache[bytes]] = weakref.WeakKeyDictionary()
_LOCK = Lock()


def rendered(services: Services) -> StateCache[bytes]:
    """The rendered answers of one coordinator."""
    with _LOCK:
        cache = _CACHES.get(services.db)
        if cache is None:
            cache = _CACHES[services.db] = StateCache(
                services.db, services.settings.state_cache_max_age_s, MAX_RENDERED,
                weigh=len, max_weight=MAX_RENDERED_BYTES)
        return cache


_TOKENS: weakref.WeakKeyDictionary[Database, StateCache[tuple[Caller, datetime]]] = \
    weakref.WeakKeyDictionary()


def _tokens(services: Services) -> StateCache[tuple[Caller, datetime]]:
    with _LOCK:
        cache = _TOKENS.get(services.db)
        if cache is None:
            cache = _TOKENS[services.db] = StateCache(
                services.db, services.settings.state_cache_max_age_s, MAX_RENDERED)
        return cache


def _lookup(services: Services, token: str) -> tuple[Caller, datetime]:
    """The caller of ``token`` (:func:`caller_of_token` decides) and until when that holds
    (its expiry; the operator's token has none)."""
    caller = caller_of_token(services, token)
    if caller.admin:
        return caller, datetime.max
    with services.db.read() as s:
        row = s.get(Token, hashlib.sha256(token.encode("utf-8")).hexdigest())
    return caller, datetime.min if row is None else row.expires_at


async def fast_caller(request: Request, services: ServicesDep) -> Caller:
    """The authenticated caller of a GET route (see the module's docstring). Raises
    ``Unauthenticated`` (401) as :func:`coordinator.routes.deps.get_caller` does."""
    token = bearer_token(request)
    cache = _tokens(services)
    key = hashlib.sha256(token.encode("utf-8")).digest()
    caller, expires = await shared(cache, key, lambda: _lookup(services, token))
    if utcnow() > expires:  # kept past its expiry: ask again (which refuses it)
        cache.forget(key)
        caller, _ = await run_in_threadpool(_lookup, services, token)
    return caller


FastCallerDep = Annotated[Caller, Depends(fast_caller)]


def json_bytes(model: BaseModel) -> bytes:
    """A response model as FastAPI renders it (by alias, compact)."""
    return model.model_dump_json(by_alias=True).encode("utf-8")


#: computations in progress, per cache: key -> (generation it started under, its result)
_FLIGHTS: weakref.WeakKeyDictionary[StateCache[Any], dict[Hashable, tuple[int, Any]]] = \
    weakref.WeakKeyDictionary()


async def cached_json(services: Services, key: Hashable,
                      compute: Callable[[], BaseModel]) -> Response:
    """The JSON of ``compute()`` (run in the thread pool), or the copy kept since the last
    write. ``compute``'s errors propagate and nothing is kept."""
    body = await shared(rendered(services), key, lambda: json_bytes(compute()))
    return Response(content=body, media_type=JSON_MEDIA)


async def shared(cache: StateCache[V], key: Hashable, compute: Callable[[], V]) -> V:
    """The fresh value of ``key`` in ``cache``; else ``compute()`` in the thread pool, once
    for all the requests that ask meanwhile (unless a write lands: later ones compute again).
    ``compute``'s errors propagate and nothing is kept."""
    value = cache.peek(key)
    if value is not None:
        return value
    loop = asyncio.get_running_loop()
    with _LOCK:
        flights = _FLIGHTS.setdefault(cache, {})
    flight = flights.get(key)
    if flight is not None and flight[0] == cache.db.generation \
            and flight[1].get_loop() is loop:
        running: asyncio.Future[V] = flight[1]
        try:
            return await asyncio.shield(running)
        except asyncio.CancelledError:
            if not running.cancelled():
                raise  # this request was cancelled, not the computation
        except Exception:
            log.debug("a shared computation failed; computing again")
    generation, stamp = cache.mark()
    future: asyncio.Future[V] = loop.create_future()
    flights[key] = (generation, future)
    try:
        value = await run_in_threadpool(compute)
    except BaseException as exc:
        if isinstance(exc, asyncio.CancelledError):
            future.cancel()
        else:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
        raise
    finally:
        if flights.get(key, (0, None))[1] is future:
            del flights[key]
    future.set_result(value)
    cache.put(key, value, generation, stamp)
    return value
