"""Users and API tokens: creation, lookup by hash on every request, revocation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, bindparam, insert, select, update
from sqlalchemy.engine import Row

from mags.core.db import Database
from mags.core.ids import hash_token, new_token
from mags.core.schema import tokens, users
from mags.errors import AuthError, NotFound

# Writing last_used_at on every request would turn every read into a write; once a minute
# per token is plenty for "when was this token last used".
LAST_USED_RESOLUTION_S = 60.0


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's user."""

    user_id: int
    user: str
    admin: bool
    token_id: int
    token_name: str


_AUTH = (
    select(
        tokens.c.id,
        tokens.c.name,
        tokens.c.revoked_at,
        users.c.id.label("user_id"),
        users.c.name.label("user"),
        users.c.admin,
    )
    .join(users, users.c.id == tokens.c.user_id)
    .where(tokens.c.token_hash == bindparam("token_hash"))
)

_TOKEN_SELECT = select(
    tokens.c.id,
    tokens.c.name,
    tokens.c.created_at,
    tokens.c.last_used_at,
    tokens.c.revoked_at,
    users.c.name.label("user"),
).join(users, users.c.id == tokens.c.user_id)


def _lookup(conn: Connection, token_hash: str) -> Row[Any] | None:
    return conn.execute(_AUTH, {"token_hash": token_hash}).first()


def _touch(conn: Connection, token_id: int, now: float) -> None:
    conn.execute(update(tokens).where(tokens.c.id == token_id).values(last_used_at=now))


def _user(conn: Connection, name: str) -> Row[Any] | None:
    return conn.execute(select(users).where(users.c.name == name)).first()


def _first_admin(conn: Connection) -> Row[Any] | None:
    return conn.execute(select(users).where(users.c.admin.is_(True)).order_by(users.c.id).limit(1)).first()


def _ensure_user(conn: Connection, name: str, admin: bool, now: float) -> Row[Any]:
    row = _user(conn, name)
    if row is None:
        conn.execute(insert(users).values(name=name, admin=admin, created_at=now))
    elif admin and not row._mapping["admin"]:
        conn.execute(update(users).where(users.c.id == row._mapping["id"]).values(admin=True))
    result = _user(conn, name)
    assert result is not None
    return result


def _create_token(conn: Connection, user_id: int, name: str, token_hash: str, now: float) -> Row[Any]:
    token_id = conn.execute(
        insert(tokens)
        .values(user_id=user_id, name=name, token_hash=token_hash, created_at=now)
        .returning(tokens.c.id)
    ).scalar_one()
    return conn.execute(_TOKEN_SELECT.where(tokens.c.id == token_id)).one()


def _list_tokens(conn: Connection, user_id: int | None) -> list[Row[Any]]:
    stmt = _TOKEN_SELECT.order_by(tokens.c.id)
    if user_id is not None:
        stmt = stmt.where(tokens.c.user_id == user_id)
    return list(conn.execute(stmt).all())


def _revoke(conn: Connection, token_id: int, user_id: int | None, now: float) -> Row[Any]:
    cond = tokens.c.id == token_id
    if user_id is not None:
        cond = and_(cond, tokens.c.user_id == user_id)
    row = conn.execute(select(tokens.c.revoked_at).where(cond)).first()
    if row is None:
        raise NotFound(f"token {token_id} not found")
    if row._mapping["revoked_at"] is None:
        conn.execute(update(tokens).where(cond).values(revoked_at=now))
    return conn.execute(_TOKEN_SELECT.where(tokens.c.id == token_id)).one()


class TokenStore:
    """Data access for users and tokens."""

    def __init__(self, db: Database, clock: Callable[[], float]) -> None:
        self.db = db
        self.clock = clock
        self._last_used: dict[int, float] = {}

    async def authenticate(self, token: str) -> Principal:
        """The principal behind ``token``; AuthError if unknown or revoked (checked every call)."""
        row = await self.db.read(_lookup, hash_token(token))
        if row is None:
            raise AuthError("invalid API token")
        m = row._mapping
        if m["revoked_at"] is not None:
            raise AuthError("API token has been revoked")
        now = self.clock()
        if now - self._last_used.get(m["id"], 0.0) >= LAST_USED_RESOLUTION_S:
            self._last_used[m["id"]] = now
            await self.db.write(_touch, m["id"], now)
        return Principal(m["user_id"], m["user"], bool(m["admin"]), m["id"], m["name"])

    async def get_user(self, name: str) -> Row[Any] | None:
        return await self.db.read(_user, name)

    async def first_admin(self) -> Row[Any] | None:
        return await self.db.read(_first_admin)

    async def ensure_user(self, name: str, admin: bool = False) -> Row[Any]:
        """The user called ``name``, created if missing; ``admin=True`` promotes (never demotes)."""
        return await self.db.write(_ensure_user, name, admin, self.clock())

    async def create_token(self, user_id: int, name: str) -> tuple[Row[Any], str]:
        """A new token for ``user_id``: the stored row and the secret (returned only here)."""
        secret = new_token()
        row = await self.db.write(_create_token, user_id, name, hash_token(secret), self.clock())
        return row, secret

    async def list_tokens(self, user_id: int | None) -> list[Row[Any]]:
        """Tokens of one user, or of everyone when ``user_id`` is None."""
        return await self.db.read(_list_tokens, user_id)

    async def revoke(self, token_id: int, user_id: int | None) -> Row[Any]:
        """Revoke a token (of ``user_id`` only, unless None = admin); NotFound otherwise."""
        return await self.db.write(_revoke, token_id, user_id, self.clock())
