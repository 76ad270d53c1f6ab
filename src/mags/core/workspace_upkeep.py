"""Workspace upkeep: deletes, expiry of local workspaces, and what snapshot GC needs to know.

Query functions over a Core ``Connection`` and :class:`WorkspaceUpkeep`, the
:class:`~mags.core.workspaces.WorkspaceStore` that also runs them (used by the workspace
admin and the janitor).  A delete is: mark the row ``deleting_at`` (refused while a job or a
fork needs it), remove the data elsewhere, delete the row.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, and_, case, delete, func, or_, select, update
from sqlalchemy.engine import Row

from mags.core.schema import jobs, workspaces
from mags.core.workspaces import LIVE_JOB_COLUMNS, LIVE_VM_STATUSES, WorkspaceStore, get_row, live_jobs
from mags.errors import Conflict, NotFound

STALE_DELETE_S = 300.0  # a delete marked this long ago was interrupted: the janitor finishes it


def _users_of_base(conn: Connection, user_id: int, name: str) -> list[Row[Any]]:
    """Live jobs running on top of workspace ``name`` without a workspace of their own."""
    stmt = select(*LIVE_JOB_COLUMNS).where(
        and_(
            jobs.c.user_id == user_id,
            jobs.c.base_workspace_id == name,
            jobs.c.workspace_id.is_(None),
            jobs.c.vm_status.in_(LIVE_VM_STATUSES),
        )
    )
    return list(conn.execute(stmt).all())


def _holders(conn: Connection, user_id: int, name: str) -> list[Row[Any]]:
    """Every live job that holds workspace ``name``: its own, and ephemeral ones on top of it."""
    return live_jobs(conn, user_id, name) + _users_of_base(conn, user_id, name)


def _deletable(conn: Connection, user_id: int, name: str) -> Row[Any]:
    """The workspace row, unless it is missing, being deleted or a base of forks."""
    row = get_row(conn, user_id, name)
    if row is None:
        raise NotFound(f"workspace {name} not found")
    m = row._mapping
    if m["deleting_at"] is not None:
        raise Conflict(f'workspace "{name}" is already being deleted')
    forks = conn.execute(
        select(workspaces.c.name).where(workspaces.c.base_id == m["id"]).order_by(workspaces.c.name)
    ).all()
    if forks:
        names = ", ".join(f[0] for f in forks)
        raise Conflict(f'workspace "{name}" is the base of {names} — delete the forks first')
    return row


def _begin_delete(conn: Connection, user_id: int, name: str, now: float) -> Row[Any]:
    """Mark a workspace as being deleted, unless a job or a fork still needs it."""
    row = _deletable(conn, user_id, name)
    busy = _holders(conn, user_id, name)
    if busy:
        # the workspace admin frees it first; a job that took it meanwhile (another server) lands here
        raise Conflict(
            f'workspace "{name}" is in use by job {busy[0]._mapping["request_id"]} (stop it first)',
            code="workspace_in_use",
        )
    conn.execute(update(workspaces).where(workspaces.c.id == row._mapping["id"]).values(deleting_at=now))
    return row


def _end_delete(conn: Connection, ws_id: int, base_id: int | None, now: float) -> None:
    conn.execute(delete(workspaces).where(workspaces.c.id == ws_id))
    if base_id is not None:
        # the fork's layers no longer keep the base's old snapshots alive
        conn.execute(update(workspaces).where(workspaces.c.id == base_id).values(gc_due_at=now))


def _abort_delete(conn: Connection, ws_id: int) -> None:
    conn.execute(update(workspaces).where(workspaces.c.id == ws_id).values(deleting_at=None))


def _expired_locals(conn: Connection, now: float, retention_s: float, limit: int) -> list[Row[Any]]:
    """Local workspaces no job uses whose retention window is over (or a delete left half done)."""
    live = (
        select(jobs.c.request_id)
        .where(
            and_(
                jobs.c.user_id == workspaces.c.user_id,
                jobs.c.workspace_id == workspaces.c.name,
                jobs.c.vm_status.in_(LIVE_VM_STATUSES),
            )
        )
        .exists()
    )
    until = func.coalesce(
        workspaces.c.expires_at,
        workspaces.c.last_used_at + retention_s,
        workspaces.c.created_at + retention_s,
    )
    stmt = (
        select(workspaces)
        .where(
            or_(
                and_(workspaces.c.mode == "local", workspaces.c.deleting_at.is_(None), until <= now, ~live),
                # a delete interrupted by a crash or a failing agent: finish it
                workspaces.c.deleting_at < now - STALE_DELETE_S,
            )
        )
        .limit(limit)
    )
    # a local workspace is never a base (a base needs a synced head, and modes never go back
    # from persistent to local), so expiring one cannot pull a layer from under a fork
    return list(conn.execute(stmt).all())


def _gc_candidates(conn: Connection, now: float, full_every_s: float, limit: int) -> list[Row[Any]]:
    stmt = (
        select(workspaces.c.id, workspaces.c.key, workspaces.c.head_snapshot_id, workspaces.c.gc_due_at)
        .where(
            and_(
                workspaces.c.mode == "persistent",
                workspaces.c.deleting_at.is_(None),
                or_(
                    workspaces.c.gc_due_at <= now,
                    workspaces.c.last_gc_at.is_(None),
                    workspaces.c.last_gc_at < now - full_every_s,
                ),
            )
        )
        .order_by(workspaces.c.gc_due_at)
        .limit(limit)
    )
    return list(conn.execute(stmt).all())


def _layer_refs(conn: Connection) -> dict[str, set[str]]:
    """Every snapshot some fork mounts as a base layer, by the base's key."""
    refs: dict[str, set[str]] = {}
    for (layers,) in conn.execute(select(workspaces.c.layers).where(workspaces.c.base_id.is_not(None))).all():
        for layer in layers or []:
            refs.setdefault(layer["workspace_id"], set()).add(layer["snapshot_id"])
    return refs


def _gc_done(conn: Connection, ws_id: int, now: float, grace_s: float) -> None:
    # snapshots superseded since (grace_s) ago are still protected: look again once they are not
    pending = workspaces.c.last_synced_at + grace_s
    conn.execute(
        update(workspaces)
        .where(workspaces.c.id == ws_id)
        .values(last_gc_at=now, gc_due_at=case((pending > now, pending), else_=None))
    )


def _mark_expired(conn: Connection, ws_id: int, now: float, retention_s: float) -> bool:
    row = conn.execute(select(workspaces).where(workspaces.c.id == ws_id)).first()
    if row is None:
        return False
    m = row._mapping
    if m["deleting_at"] is not None:
        return True  # finishing an interrupted delete
    # checked again inside the write: a submit may have renewed it since the janitor looked
    until = m["expires_at"]
    if until is None:
        until = (m["last_used_at"] or m["created_at"]) + retention_s
    if m["mode"] != "local" or until > now or live_jobs(conn, m["user_id"], m["name"]):
        return False
    conn.execute(update(workspaces).where(workspaces.c.id == ws_id).values(deleting_at=now))
    return True


class WorkspaceUpkeep(WorkspaceStore):
    """Workspace rows for deleting, expiring and garbage-collecting."""

    async def deletable(self, user_id: int, name: str) -> Row[Any]:
        """The workspace if it may be deleted once nothing holds it (404 / 409 otherwise)."""
        return await self.db.read(_deletable, user_id, name)

    async def holders(self, user_id: int, name: str) -> list[Row[Any]]:
        """Live jobs holding the workspace (its own, and ephemeral ones using it as a base)."""
        return await self.db.read(_holders, user_id, name)

    async def begin_delete(self, user_id: int, name: str) -> Row[Any]:
        return await self.db.write(_begin_delete, user_id, name, self.clock())

    async def end_delete(self, row: Row[Any]) -> None:
        await self.db.write(_end_delete, row._mapping["id"], row._mapping["base_id"], self.clock())

    async def abort_delete(self, row: Row[Any]) -> None:
        await self.db.write(_abort_delete, row._mapping["id"])

    async def expired_locals(self, retention_s: float, limit: int = 100) -> list[Row[Any]]:
        return await self.db.read_heavy(_expired_locals, self.clock(), retention_s, limit)

    async def mark_deleting(self, ws_id: int, retention_s: float) -> bool:
        """Start deleting an expired workspace unless a job took it meanwhile; True if marked."""
        return await self.db.write(_mark_expired, ws_id, self.clock(), retention_s)

    async def gc_candidates(self, full_every_s: float, limit: int = 20) -> list[Row[Any]]:
        return await self.db.read_heavy(_gc_candidates, self.clock(), full_every_s, limit)

    async def layer_refs(self) -> dict[str, set[str]]:
        return await self.db.read_heavy(_layer_refs)

    async def gc_done(self, ws_id: int, grace_s: float) -> None:
        await self.db.write(_gc_done, ws_id, self.clock(), grace_s)
