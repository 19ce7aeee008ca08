"""``/v1/auth``: challenge–response authentication of a party's signing key, and logout."""

from __future__ import annotations

import base64
import binascii
import threading

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from coordinator.auth import (
    ChallengeLimiter,
    RateLimited,
    iso,
    issue_challenge,
    issue_token,
    revoke_token,
)
from coordinator.errors import Unauthenticated, error_response
from coordinator.routes.deps import CallerDep, ServicesDep, bearer_token
from coordinator.schemas import (
    ERRORS,
    ChallengeRequest,
    ChallengeResponse,
    ErrorBody,
    TokenRequest,
    TokenResponse,
)
from sdk.errors import InputError

router = APIRouter(prefix="/auth", tags=["auth"], responses=ERRORS)
_LIMITER_LOCK = threading.Lock()


def _limiter(request: Request) -> ChallengeLimiter:
    """The app's challenge rate limiter (one per app, made on first use)."""
    state = request.app.state
    with _LIMITER_LOCK:
        limiter: ChallengeLimiter | None = getattr(state, "challenge_limiter", None)
        if limiter is None:
            limiter = ChallengeLimiter(state.services.settings)
            state.challenge_limiter = limiter
    return limiter


def _too_many(exc: RateLimited) -> JSONResponse:
    response = error_response(exc.code, exc.message, exc.status)
    response.headers["Retry-After"] = str(exc.retry_after)
    return response


@router.post("/challenge", response_model=ChallengeResponse,
             responses={429: {"model": ErrorBody, "description": "rate limited (Retry-After)"}})
def challenge(body: ChallengeRequest, request: Request,
              services: ServicesDep) -> ChallengeResponse | JSONResponse:
    """A single-use nonce for this signing key; sign it with the audience (the coordinator's
    configured public origin) to get a token. Rate-limited per client address and per key
    (429 with ``Retry-After``); a small-order or non-canonical key is refused (400)."""
    try:
        _limiter(request).check(request.client.host if request.client else None,
                                body.signing_key)
        nonce, audience, expires = issue_challenge(services, body.signing_key)
    except RateLimited as exc:
        return _too_many(exc)
    return ChallengeResponse(nonce=nonce, audience=audience, expires_at=iso(expires))


@router.post("/token", response_model=TokenResponse)
def token(body: TokenRequest, services: ServicesDep) -> TokenResponse:
    """Trade a signed challenge for a short-lived bearer token."""
    try:
        signature = base64.b64decode(body.signature.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise Unauthenticated("signature must be base64") from exc
    value, expires = issue_token(services, body.signing_key, body.nonce, signature)
    return TokenResponse(token=value, expires_at=iso(expires))


@router.post("/logout", status_code=204, response_class=Response)
def logout(request: Request, caller: CallerDep, services: ServicesDep) -> Response:
    """Revoke the bearer token of this request: any later use of it gets 401."""
    if caller.admin:
        raise InputError("the admin token is configured, not issued: it cannot be revoked")
    revoke_token(services, bearer_token(request))
    return Response(status_code=204)
