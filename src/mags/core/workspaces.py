"""Workspace rows: create on submit, commit synced snapshots (compare-and-swap), list.

A workspace is a user's named writable layer (``-w NAME``).  Its row records the mode
(``local`` or ``persistent``; a local workspace run with ``-p`` becomes persistent, never the
other way), the disk size, the read-only ``layers`` frozen when a fork was created from a base,
and for persistent workspaces the committed ``head_snapshot_id`` with a ``generation``
counter.  Agents snapshot workspaces; only :func:`commit_sync` moves a head, and only from
the snapshot the sync started from, so a stale sandbox can never overwrite a newer head.

Queries are plain functions over a Core ``Connection``; :class:`WorkspaceStore` runs them.
Deleting, expiry and GC bookkeeping are in ``core/workspace_upkeep.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Connection, and_, case, func, insert, select, update
from sqlalchemy.engine import Row

from mags.core.db import Database
from mags.core.schema import jobs, workspaces
from mags.core.states import VM_ACTIVE, VmStatus

log = logging.getLogger(__name__)

# a job on a workspace holds it from submission until its sandbox is stopped
LIVE_VM_STATUSES = [s.value for s in VM_ACTIVE | {VmStatus.PENDING}]

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
        .where(
            and_(
                jobs.c.user_id == user_id, jobs.c.workspace_id == name, jobs.c.vm_status.in_(LIVE_VM_STATUSES)
            )
        )
        .order_by(jobs.c.created_at.desc())
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
        .where(
            and_(
                jobs.c.user_id == user_id,
                jobs.c.workspace_id.is_not(None),
                jobs.c.vm_status.in_(LIVE_VM_STATUSES),
            )
        )
        .order_by(jobs.c.created_at)
    ).all()
    return list(rows), {r[0]: r[1] for r in live}  # newest live job per workspace wins


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
