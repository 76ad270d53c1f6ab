"""Bearer-token authentication: a FastAPI dependency resolving the caller's principal."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request

from mags.core.tokens import Principal, TokenStore
from mags.errors import AuthError


def make_auth(tokens: TokenStore) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: 401 unless the request carries a valid, unrevoked token."""

    async def authenticate(request: Request) -> Principal:
        header = request.headers.get("authorization")
        if not header:
            raise AuthError("missing API token: send 'Authorization: Bearer <token>'")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError("malformed Authorization header: expected 'Bearer <token>'")
        return await tokens.authenticate(token)

    return authenticate
