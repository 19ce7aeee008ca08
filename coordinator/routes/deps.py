"""The FastAPI dependencies of the routes: the app's services, the authenticated caller, and a
request body read as a DSSE envelope.

This is the only place that reads credentials or bodies off a request; everything below the
routes takes a :class:`~coordinator.context.Services` and a
:class:`~coordinator.context.Caller`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from coordinator.auth import caller_of_token
from coordinator.context import Caller, Services
from coordinator.errors import Forbidden, Unauthenticated
from sdk.protocol.canonical import parse_json
from sdk.protocol.dsse import Envelope


def get_services(request: Request) -> Services:
    """The app's services (built once by :func:`coordinator.app.create_app`)."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def bearer_token(request: Request) -> str:
    """The request's bearer token. Raises ``Unauthenticated`` (401) when there is none."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("a bearer token is required")
    return token.strip()


def get_caller(request: Request, services: ServicesDep) -> Caller:
    """The authenticated caller. Raises ``Unauthenticated`` (401)."""
    return caller_of_token(services, bearer_token(request))


CallerDep = Annotated[Caller, Depends(get_caller)]


def require_admin(caller: CallerDep) -> Caller:
    """The operator only. Raises ``Forbidden`` (403) for parties."""
    if not caller.admin:
        raise Forbidden("operator route: the admin token is required")
    return caller


AdminDep = Annotated[Caller, Depends(require_admin)]


async def envelope_body(request: Request, services: ServicesDep) -> Envelope:
    """The request body as a DSSE envelope, parsed by the strict parser (size-capped).

    Raises ``InputError`` (400) for a body that is not a well-formed envelope.
    """
    body = await request.body()
    return Envelope.from_dict(parse_json(body, max_bytes=services.settings.max_json_bytes))


EnvelopeBody = Annotated[Envelope, Depends(envelope_body)]
