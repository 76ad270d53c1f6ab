"""Workspace rows: create on submit, commit synced snapshots (compare-and-swap), list, delete.

A workspace is a user's named writable layer (``-w NAME``).  Its row records the mode
(``local`` or ``persistent``; a local workspace run with ``-p`` becomes persistent, never the
other way), the disk size, the read-only ``layers`` frozen when a fork was created from a base,
and for persistent workspaces the committed ``head_snapshot_id`` with a ``generation``
counter.  Agents snapshot workspaces; only :func:`commit_sync` moves a head, and only from
the snapshot the sync started from, so a stale sandbox can never overwrite a newer head.

Queries are plain functions over a Core ``Connection``; :class:`WorkspaceStore` runs them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Connection, and_, case, delete, func, insert, or_, select, update
from sqlalchemy.engine import Row

from mags.core.db import Database
from mags.core.schema import jobs, workspaces
from mags.core.states import VM_ACTIVE, VmStatus
from mags.errors import Conflict, NotFound

log = logging.getLogger(__name__)

_LIVE = [s.value for s in VM_ACTIVE | {VmStatus.PENDING}]
STALE_DELETE_S = 300.0  # a delete marked this long ago was interrupted: the janitor finishes it

LIVE_JOB_COLUMNS = (
    jobs.c.request_id,
    jobs.c.status,
    jobs.c.vm_status,
    jobs.c.persistent,
    jobs.c.no_sync,
    jobs.c.finished_at,
    jobs.c.created_at,
    # a `mags new` sandbox: compared in SQL so scripts are never read back
    (jobs.c.script == "sleep infinity").label("is_new"),
)


def workspace_key(user_id: int, name: str) -> str:
    """The agent-side id of a user's workspace ``name`` (unique across users).

    ``u<digits>-`` cannot be produced by two different (user, name) pairs: the user id has no
    dash, so the first dash always ends it.
    """
    return f"u{user_id}-{name}"


def store_prefix(key: str) -> str:
    """Where a workspace's objects live in the object store (the agent's syncer writes there)."""
    return f"ws/{key}/"


@dataclass
class SyncCommit:
    """What :func:`commit_sync` did with one synced snapshot.

    ``outcome``: ``committed`` (head moved), ``current`` (already the head: a sync without
    changes, or the same sync reported twice), ``empty`` (never synced, nothing to commit),
    ``lost`` (the head is not the snapshot the sync started from: nothing overwritten),
    ``unknown`` (no such workspace, or it is being deleted).
    """

    outcome: Literal["committed", "current", "empty", "lost", "unknown"]
    head: str | None
    snapshot_id: str | None
    generation: int | None = None

    @property
    def ok(self) -> bool:
        return self.outcome in ("committed", "current", "empty")


# ---------------------------------------------------------------------------- queries
def get_row(conn: Connection, user_id: int, name: str) -> Row[Any] | None:
    return conn.execute(
        select(workspaces).where(and_(workspaces.c.user_id == user_id, workspaces.c.name == name))
    ).first()


def live_jobs(conn: Connection, user_id: int, name: str) -> list[Row[Any]]:
    """Jobs on workspace ``name`` whose sandbox is not over yet, newest first."""
    stmt = (
        select(*LIVE_JOB_COLUMNS)
        .where(and_(jobs.c.user_id == user_id, jobs.c.workspace_id == name, jobs.c.vm_status.in_(_LIVE)))
        .order_by(jobs.c.created_at.desc())
    )
    return list(conn.execute(stmt).all())


def _users_of_base(conn: Connection, user_id: int, name: str) -> list[Row[Any]]:
    """Live jobs running on top of workspace ``name`` without a workspace of their own."""
    stmt = select(jobs.c.request_id).where(
        and_(
            jobs.c.user_id == user_id,
            jobs.c.base_workspace_id == name,
            jobs.c.workspace_id.is_(None),
            jobs.c.vm_status.in_(_LIVE),
        )
    )
    return list(conn.execute(stmt).all())


def prepare_workspace(
    conn: Connection,
    user_id: int,
    name: str,
    *,
    mode: str,
    disk_gb: int,
    base: Row[Any] | None,
    now: float,
) -> Row[Any]:
    """Create the workspace for a submitted job, or update it (mode upgrade, in use again)."""
    row = get_row(conn, user_id, name)
    if row is None:
        layers: list[dict[str, str]] = []
        if base is not None:
            b = base._mapping
            layers = [{"workspace_id": b["key"], "snapshot_id": b["head_snapshot_id"]}, *b["layers"]]
        conn.execute(
            insert(workspaces).values(
                user_id=user_id,
                name=name,
                key=workspace_key(user_id, name),
                mode=mode,
                disk_gb=disk_gb,
                base_id=None if base is None else base._mapping["id"],
                layers=layers,
                generation=0,
                created_at=now,
                updated_at=now,
                last_used_at=now,
            )
        )
    else:
        values: dict[str, Any] = {"updated_at": now, "last_used_at": now, "expires_at": None}
        if mode == "persistent" and row._mapping["mode"] != "persistent":
            values["mode"] = "persistent"  # a local workspace run with -p keeps its files, now synced
        conn.execute(update(workspaces).where(workspaces.c.id == row._mapping["id"]).values(**values))
    result = get_row(conn, user_id, name)
    assert result is not None
    return result


def commit_sync(
    conn: Connection, key: str, snapshot_id: str | None, parent: str | None, now: float, gc_grace_s: float
) -> SyncCommit:
    """Make ``snapshot_id`` the head of workspace ``key`` if the head is still ``parent``.

    The UPDATE itself checks the parent (``head IS NULL`` for a first sync, ``head = :parent``
    otherwise: ``= NULL`` is never true in SQL), so two racing commits from the same parent
    cannot both win, on SQLite as on PostgreSQL.
    """
    row = conn.execute(
        select(
            workspaces.c.id, workspaces.c.head_snapshot_id, workspaces.c.generation, workspaces.c.deleting_at
        ).where(workspaces.c.key == key)
    ).first()
    if row is None or row._mapping["deleting_at"] is not None:
        return SyncCommit("unknown", None, snapshot_id)
    ws_id, head = row._mapping["id"], row._mapping["head_snapshot_id"]
    if snapshot_id is None:
        return SyncCommit("empty", head, None, row._mapping["generation"])
    if snapshot_id == head:
        conn.execute(
            update(workspaces).where(workspaces.c.id == ws_id).values(last_synced_at=now, updated_at=now)
        )
        return SyncCommit("current", head, snapshot_id, row._mapping["generation"])
    same_parent = (
        workspaces.c.head_snapshot_id.is_(None)
        if parent is None
        else (workspaces.c.head_snapshot_id == parent)
    )
    due = now + gc_grace_s  # the old head (or this lost snapshot) is garbage after the grace period
    won = conn.execute(
        update(workspaces)
        .where(and_(workspaces.c.id == ws_id, same_parent))
        .values(
            head_snapshot_id=snapshot_id,
            generation=workspaces.c.generation + 1,
            last_synced_at=now,
            updated_at=now,
            gc_due_at=func.coalesce(workspaces.c.gc_due_at, due),
        )
    ).rowcount
    after = conn.execute(
        select(workspaces.c.head_snapshot_id, workspaces.c.generation).where(workspaces.c.id == ws_id)
    ).one()
    if won:
        return SyncCommit("committed", snapshot_id, snapshot_id, after._mapping["generation"])
    conn.execute(
        update(workspaces)
        .where(workspaces.c.id == ws_id)
        .values(gc_due_at=func.coalesce(workspaces.c.gc_due_at, due))
    )
    return SyncCommit("lost", after._mapping["head_snapshot_id"], snapshot_id, after._mapping["generation"])


def _launched(conn: Connection, ws_id: int, agent_id: str, disk_gb: int | None, now: float) -> None:
    values: dict[str, Any] = {
        "agent_id": agent_id,
        "last_used_at": now,
        "expires_at": None,
        "updated_at": now,
    }
    if disk_gb is not None:
        values["disk_gb"] = disk_gb  # the agent accepted the size (a refused shrink fails the launch)
    conn.execute(update(workspaces).where(workspaces.c.id == ws_id).values(**values))


def jobs_ended(conn: Connection, ended: Iterable[tuple[int, str]], now: float, retention_s: float) -> None:
    """The sandbox of a job on each ``(user_id, name)`` stopped: local workspaces start expiring."""
    for user_id, name in ended:
        conn.execute(
            update(workspaces)
            .where(and_(workspaces.c.user_id == user_id, workspaces.c.name == name))
            .values(
                last_used_at=now,
                updated_at=now,
                expires_at=case((workspaces.c.mode == "local", now + retention_s), else_=None),
            )
        )


def _list(conn: Connection, user_id: int) -> tuple[list[Row[Any]], dict[str, str]]:
    base = workspaces.alias("base")
    rows = conn.execute(
        select(workspaces, base.c.name.label("base_name"))
        .select_from(workspaces.outerjoin(base, base.c.id == workspaces.c.base_id))
        .where(and_(workspaces.c.user_id == user_id, workspaces.c.deleting_at.is_(None)))
        .order_by(func.coalesce(workspaces.c.last_used_at, workspaces.c.created_at).desc(), workspaces.c.name)
    ).all()
    live = conn.execute(
        select(jobs.c.workspace_id, jobs.c.request_id)
        .where(and_(jobs.c.user_id == user_id, jobs.c.workspace_id.is_not(None), jobs.c.vm_status.in_(_LIVE)))
        .order_by(jobs.c.created_at)
    ).all()
    return list(rows), {r[0]: r[1] for r in live}  # newest live job per workspace wins


def _begin_delete(conn: Connection, user_id: int, name: str, now: float) -> Row[Any]:
    """Mark a workspace as being deleted, unless a job or a fork still needs it."""
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
    busy = live_jobs(conn, user_id, name) + _users_of_base(conn, user_id, name)
    if busy:
        raise Conflict(
            f'workspace "{name}" is in use by job {busy[0]._mapping["request_id"]} (stop it first)'
        )
    conn.execute(update(workspaces).where(workspaces.c.id == m["id"]).values(deleting_at=now))
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
                jobs.c.vm_status.in_(_LIVE),
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


# ---------------------------------------------------------------------------- store
class WorkspaceStore:
    """Data access for workspaces; user-facing reads always take the user's id."""

    def __init__(self, db: Database, clock: Callable[[], float]) -> None:
        self.db = db
        self.clock = clock

    async def get(self, user_id: int, name: str) -> Row[Any] | None:
        return await self.db.read(get_row, user_id, name)

    async def live_jobs(self, user_id: int, name: str) -> list[Row[Any]]:
        return await self.db.read(live_jobs, user_id, name)

    async def prepare(
        self, user_id: int, name: str, *, mode: str, disk_gb: int, base: Row[Any] | None
    ) -> Row[Any]:
        """Create or update the workspace a submitted job runs on; returns the row."""
        return await self.db.write(
            prepare_workspace, user_id, name, mode=mode, disk_gb=disk_gb, base=base, now=self.clock()
        )

    async def commit_sync(
        self, key: str, snapshot_id: str | None, parent: str | None, gc_grace_s: float
    ) -> SyncCommit:
        return await self.db.write(commit_sync, key, snapshot_id, parent, self.clock(), gc_grace_s)

    async def launched(self, ws_id: int, agent_id: str, disk_gb: int | None) -> None:
        """A sandbox started on the workspace: bind it to that agent, stop its expiry."""
        await self.db.write(_launched, ws_id, agent_id, disk_gb, self.clock())

    async def list(self, user_id: int) -> tuple[list[Row[Any]], dict[str, str]]:
        """The user's workspaces (with ``base_name``) and the live job of each one in use."""
        return await self.db.read(_list, user_id)

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
