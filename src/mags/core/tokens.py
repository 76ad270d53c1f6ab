"""Users and API tokens: creation, lookup by hash on every request, revocation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, insert, select, update
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


class TokenStore:
    """Data access for users and tokens."""

    def __init__(self, db: Database, clock: Callable[[], float]) -> None:
        self.db = db
        self.clock = clock
        self._last_used: dict[int, float] = {}

    async def authenticate(self, token: str) -> Principal:
        """The principal behind ``token``; AuthError if unknown or revoked (checked every call)."""
        stmt = (
            select(
                tokens.c.id,
                tokens.c.name,
                tokens.c.revoked_at,
                users.c.id.label("user_id"),
                users.c.name.label("user"),
                users.c.admin,
            )
            .join(users, users.c.id == tokens.c.user_id)
            .where(tokens.c.token_hash == hash_token(token))
        )
        async with self.db.read() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            raise AuthError("invalid API token")
        m = row._mapping
        if m["revoked_at"] is not None:
            raise AuthError("API token has been revoked")
        now = self.clock()
        if now - self._last_used.get(m["id"], 0.0) >= LAST_USED_RESOLUTION_S:
            self._last_used[m["id"]] = now
            async with self.db.write() as conn:
                await conn.execute(update(tokens).where(tokens.c.id == m["id"]).values(last_used_at=now))
        return Principal(m["user_id"], m["user"], bool(m["admin"]), m["id"], m["name"])

    async def get_user(self, name: str) -> Row[Any] | None:
        async with self.db.read() as conn:
            return (await conn.execute(select(users).where(users.c.name == name))).first()

    async def first_admin(self) -> Row[Any] | None:
        async with self.db.read() as conn:
            stmt = select(users).where(users.c.admin.is_(True)).order_by(users.c.id).limit(1)
            return (await conn.execute(stmt)).first()

    async def ensure_user(self, name: str, admin: bool = False) -> Row[Any]:
        """The user called ``name``, created if missing; ``admin=True`` promotes (never demotes)."""
        async with self.db.write() as conn:
            row = (await conn.execute(select(users).where(users.c.name == name))).first()
            if row is None:
                await conn.execute(insert(users).values(name=name, admin=admin, created_at=self.clock()))
            elif admin and not row._mapping["admin"]:
                await conn.execute(update(users).where(users.c.id == row._mapping["id"]).values(admin=True))
            return (await conn.execute(select(users).where(users.c.name == name))).one()

    async def create_token(self, user_id: int, name: str) -> tuple[Row[Any], str]:
        """A new token for ``user_id``: the stored row and the secret (returned only here)."""
        secret = new_token()
        async with self.db.write() as conn:
            result = await conn.execute(
                insert(tokens)
                .values(user_id=user_id, name=name, token_hash=hash_token(secret), created_at=self.clock())
                .returning(tokens.c.id)
            )
            token_id = result.scalar_one()
            row = (await conn.execute(_token_select().where(tokens.c.id == token_id))).one()
        return row, secret

    async def list_tokens(self, user_id: int | None) -> list[Row[Any]]:
        """Tokens of one user, or of everyone when ``user_id`` is None."""
        stmt = _token_select().order_by(tokens.c.id)
        if user_id is not None:
            stmt = stmt.where(tokens.c.user_id == user_id)
        async with self.db.read() as conn:
            return list((await conn.execute(stmt)).all())

    async def revoke(self, token_id: int, user_id: int | None) -> Row[Any]:
        """Revoke a token (of ``user_id`` only, unless None = admin); NotFound otherwise."""
        cond = tokens.c.id == token_id
        if user_id is not None:
            cond = and_(cond, tokens.c.user_id == user_id)
        async with self.db.write() as conn:
            row = (await conn.execute(select(tokens.c.revoked_at).where(cond))).first()
            if row is None:
                raise NotFound(f"token {token_id} not found")
            if row._mapping["revoked_at"] is None:
                await conn.execute(update(tokens).where(cond).values(revoked_at=self.clock()))
            return (await conn.execute(_token_select().where(tokens.c.id == token_id))).one()


def _token_select() -> Any:
    return select(
        tokens.c.id,
        tokens.c.name,
        tokens.c.created_at,
        tokens.c.last_used_at,
        tokens.c.revoked_at,
        users.c.name.label("user"),
    ).join(users, users.c.id == tokens.c.user_id)
