"""Tokens and identity: ``/tokens`` (create, list, revoke) and ``/whoami``."""

# No `from __future__ import annotations`: FastAPI must see the local `Me` alias as an object.

import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import JSONResponse

from mags.api.params import read_json_object, reject_unknown
from mags.core.ids import iso
from mags.core.tokens import Principal, TokenStore
from mags.errors import NotFound, PermissionDenied, ValidationError

USER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")
TOKEN_FIELDS = frozenset({"name", "user", "admin"})


def token_json(row: Any) -> dict[str, Any]:
    m = row._mapping
    return {
        "id": m["id"],
        "name": m["name"],
        "user": m["user"],
        "created_at": iso(m["created_at"]),
        "last_used_at": iso(m["last_used_at"]),
        "revoked": m["revoked_at"] is not None,
    }


def tokens_router(tokens: TokenStore, auth: Callable[[Request], Awaitable[Principal]]) -> APIRouter:
    router = APIRouter()
    Me = Annotated[Principal, Depends(auth)]

    @router.get("/whoami")
    async def whoami(me: Me) -> JSONResponse:
        return JSONResponse({"user": me.user, "admin": me.admin, "token_name": me.token_name})

    @router.post("/tokens")
    async def create_token(request: Request, me: Me) -> JSONResponse:
        body = await read_json_object(request, 64 * 1024, allow_empty=True)
        reject_unknown(body, TOKEN_FIELDS)
        name = body.get("name") or "api"
        if not isinstance(name, str) or len(name) > 100 or "\x00" in name:
            raise ValidationError("name must be a string of at most 100 characters")
        user = body.get("user") or me.user
        if not isinstance(user, str) or not USER_RE.fullmatch(user):
            raise ValidationError(
                "user must be 1-128 characters of letters, digits, '.', '_', '@', '+' or '-'"
            )
        admin = body.get("admin", False)
        if admin is None:
            admin = False
        if not isinstance(admin, bool):
            raise ValidationError("admin must be true or false")
        if (user != me.user or admin) and not me.admin:
            raise PermissionDenied("only an admin can create tokens for other users or admin tokens")
        if user == me.user and not admin:
            user_id = me.user_id
        else:
            user_id = (await tokens.ensure_user(user, admin=admin))._mapping["id"]
        row, secret = await tokens.create_token(user_id, name)
        out = token_json(row)
        out["token"] = secret
        return JSONResponse(out)

    @router.get("/tokens")
    async def list_tokens(me: Me) -> JSONResponse:
        rows = await tokens.list_tokens(None if me.admin else me.user_id)
        return JSONResponse({"tokens": [token_json(r) for r in rows]})

    @router.delete("/tokens/{token_id}")
    async def revoke_token(token_id: str, me: Me) -> JSONResponse:
        if not token_id.isdigit():
            raise NotFound(f"token {token_id} not found")
        row = await tokens.revoke(int(token_id), None if me.admin else me.user_id)
        return JSONResponse(token_json(row))

    return router
