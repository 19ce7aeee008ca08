"""The FastAPI dependencies of the routes: the app's services, the authenticated caller, and a
request body read as a DSSE envelope.

This is the only place that reads credentials or bodies off a request; everything below the
routes takes a :class:`~coordinator.context.Services` and a
:class:`~coordinator.context.Caller`.

Every route depends on :data:`ServicesDep`, and through it on :func:`check_body`, which holds
each body route to the body it declares before anything else reads it: the ``Content-Type`` of
its OpenAPI request body (``application/json`` for JSON and envelope routes,
``application/octet-stream`` for the streamed upload; 415 otherwise), and, for JSON, the
protocol's strict parser (duplicate keys, NaN, integers beyond 2**53: 400), so that pydantic,
which lets a duplicate key win, only validates what the strict parser accepted.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

from fastapi import Depends, Request

from coordinator.auth import caller_of_token
from coordinator.context import Caller, Services
from coordinator.errors import Forbidden, Unauthenticated
from sdk.errors import InputError
from sdk.protocol.canonical import parse_json
from sdk.protocol.dsse import Envelope

JSON = "application/json"
BINARY = "application/octet-stream"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: the scope key of a JSON body as the strict parser read it
JSON_BODY_KEY = "sealroom.json_body"
_UNPARSED = object()


class UnsupportedMediaType(InputError):
    """The body is not of the media type the route takes (HTTP 415)."""

    status = 415


def route_media_type(route: object) -> str | None:
    """The media type of the body a route takes (its OpenAPI request body), or None."""
    extra = getattr(route, "openapi_extra", None)
    if isinstance(extra, dict):
        request_body = extra.get("requestBody")
        content = request_body.get("content") if isinstance(request_body, dict) else None
        if isinstance(content, dict) and content:
            return str(next(iter(content)))
    if getattr(route, "body_field", None) is not None:
        return JSON
    return None


def media_type_ok(headers: Iterable[tuple[bytes, bytes]], expected: str) -> bool:
    """Whether there is exactly one ``Content-Type``, ``expected`` (JSON may say
    ``charset=utf-8``, the only charset JSON has)."""
    values = [v for k, v in headers if k == b"content-type"]
    if len(values) != 1:
        return False
    mime, _, params = values[0].decode("latin-1").partition(";")
    if mime.strip().lower() != expected:
        return False
    params = params.replace(" ", "").lower()
    return not params or (expected == JSON and params in ("charset=utf-8", 'charset="utf-8"'))


async def check_body(request: Request, max_json_bytes: int) -> None:
    """Hold the request to the body its route declares (see the module's docstring).

    Raises ``UnsupportedMediaType`` (415) for another ``Content-Type``, ``InputError`` (400)
    for a JSON body the strict parser refuses. A JSON body it accepts is left, parsed, in the
    scope (:data:`JSON_BODY_KEY`).
    """
    if request.method not in BODY_METHODS:
        return
    media = route_media_type(request.scope.get("route"))
    if media is None:
        return
    if not media_type_ok(request.scope.get("headers") or [], media):
        raise UnsupportedMediaType(f"this route takes a body of Content-Type {media}")
    if media == JSON and JSON_BODY_KEY not in request.scope:
        request.scope[JSON_BODY_KEY] = parse_json(await request.body(), max_bytes=max_json_bytes)


def _depends_on(dependant: object, call: object, depth: int = 0) -> bool:
    for sub in getattr(dependant, "dependencies", ()):
        if sub.call is call or (depth < 8 and _depends_on(sub, call, depth + 1)):
            return True
    return False


async def get_services(request: Request) -> Services:
    """The app's services (built once by :func:`coordinator.app.create_app`). Every route
    depends on this: on a route without a caller it also runs :func:`check_body` (routes
    with one run it once the caller is authenticated, :func:`get_caller`)."""
    services: Services = request.app.state.services
    if request.method in BODY_METHODS and not _depends_on(
            getattr(request.scope.get("route"), "dependant", None), _authenticated):
        await check_body(request, services.settings.max_json_bytes)
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def bearer_token(request: Request) -> str:
    """The request's bearer token. Raises ``Unauthenticated`` (401) when there is none."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("a bearer token is required")
    return token.strip()


def _authenticated(request: Request, services: ServicesDep) -> Caller:
    return caller_of_token(services, bearer_token(request))


async def get_caller(request: Request, services: ServicesDep,
                     caller: Annotated[Caller, Depends(_authenticated)]) -> Caller:
    """The authenticated caller, once the request's body has passed :func:`check_body` (in
    this order: a caller without credentials learns nothing about the body it sent).

    Raises ``Unauthenticated`` (401), then ``UnsupportedMediaType`` (415) or ``InputError``.
    """
    await check_body(request, services.settings.max_json_bytes)
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]


def require_admin(caller: CallerDep) -> Caller:
    """The operator only. Raises ``Forbidden`` (403) for parties."""
    if not caller.admin:
        raise Forbidden("operator route: the admin token is required")
    return caller


AdminDep = Annotated[Caller, Depends(require_admin)]


async def envelope_body(request: Request, services: ServicesDep) -> Envelope:
    """The request body as a DSSE envelope, parsed by the strict parser (size-capped).

    :func:`check_body` has already checked its ``Content-Type`` and parsed it strictly (as
    every JSON body); that parse is used.

    Raises ``InputError`` (400) for a body that is not a well-formed envelope.
    """
    parsed = request.scope.get(JSON_BODY_KEY, _UNPARSED)
    if parsed is _UNPARSED:
        parsed = parse_json(await request.body(), max_bytes=services.settings.max_json_bytes)
    return Envelope.from_dict(parsed)


EnvelopeBody = Annotated[Envelope, Depends(envelope_body)]
