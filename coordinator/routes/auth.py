"""``/v1/auth``: challenge–response authentication of a party's signing key."""

from __future__ import annotations

import base64
import binascii

from fastapi import APIRouter, Request

from coordinator.auth import audience_of, iso, issue_challenge, issue_token
from coordinator.errors import Unauthenticated
from coordinator.routes.deps import ServicesDep
from coordinator.schemas import (
    ERRORS,
    ChallengeRequest,
    ChallengeResponse,
    TokenRequest,
    TokenResponse,
)

router = APIRouter(prefix="/auth", tags=["auth"], responses=ERRORS)


@router.post("/challenge", response_model=ChallengeResponse)
def challenge(body: ChallengeRequest, request: Request,
              services: ServicesDep) -> ChallengeResponse:
    """A single-use nonce for this signing key; sign it with the audience to get a token."""
    audience = audience_of(services, str(request.base_url))
    nonce, expires = issue_challenge(services, body.signing_key, audience)
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
