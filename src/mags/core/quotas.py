"""Per-tenant quotas: total disk, number of workspaces, concurrent sandboxes.

A user's limits are the server's settings (``quota_disk_gb``, ``quota_workspaces``,
``quota_sandboxes``) unless the user row overrides them (``users.quota_*``: null = the
setting, 0 = no limit; an admin sets them with ``PATCH /quotas/{user}``).  Admins are exempt:
quotas share a server fairly between tenants, while the host itself is protected from
everyone, admins included, by the agent's disk budget (runtime/diskspace.py).

What counts (checked when a job is submitted, see scheduler/admission.py):

* **disk_gb** -- the disk sizes of the user's workspaces (the size the workspace will have
  after this job, so ``--disk`` on an existing workspace -- ``mags resize`` -- counts the
  difference) plus the scratch disks of its live ephemeral jobs (``disk_gb``, default
  ``default_disk_gb``);
* **workspaces** -- the user's workspaces (a job on a new name creates one);
* **sandboxes** -- the user's live jobs with a VM: pending, starting, running or *sleeping*
  (a sleeping VM wakes on any request, so it keeps its place; ``mags stop`` frees it).  A job
  that replaces the live sandbox of its workspace takes that sandbox's place.

Only growth is refused: a user over a limit an admin lowered keeps what it has and can still
replace sandboxes or shrink disks.  Checks and inserts of one user are serialized in-process
(:class:`~mags.scheduler.admission.WorkspaceAdmission`); two servers sharing a database may
let a burst overshoot by a job or two.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Connection, and_, case, func, select, update

from mags.config import Settings
from mags.core.schema import jobs, users, workspaces
from mags.core.states import VmStatus
from mags.errors import NotFound, QuotaExceeded

QUOTAS = ("disk_gb", "workspaces", "sandboxes")
CHECK_ORDER = ("workspaces", "sandboxes", "disk_gb")
# a job holds a sandbox from submission until its VM stops or starts stopping
SANDBOX_VM_STATUSES = [
    s.value for s in (VmStatus.PENDING, VmStatus.STARTING, VmStatus.RUNNING, VmStatus.SLEEPING)
]


@dataclass(frozen=True)
class Usage:
    disk_gb: int = 0
    workspaces: int = 0
    sandboxes: int = 0


@dataclass(frozen=True)
class Limits:
    """A user's effective limits (None: no limit)."""

    disk_gb: int | None
    workspaces: int | None
    sandboxes: int | None


@dataclass(frozen=True)
class QuotaState:
    """One user's quotas as the API shows them."""

    user_id: int
    user: str
    admin: bool
    limits: Limits
    overrides: dict[str, int | None]
    usage: Usage

    @property
    def exempt(self) -> bool:
        return self.admin

    def to_json(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "admin": self.admin,
            "exempt": self.exempt,
            "limits": asdict(self.limits),
            "overrides": dict(self.overrides),
            "usage": asdict(self.usage),
        }


def _limit(override: int | None, default: int) -> int | None:
    value = default if override is None else override
    return None if value <= 0 else value


def limits_for(row: Any, settings: Settings) -> Limits:
    """The effective limits of a ``users`` row."""
    m = row._mapping
    return Limits(
        disk_gb=_limit(m["quota_disk_gb"], settings.quota_disk_gb),
        workspaces=_limit(m["quota_workspaces"], settings.quota_workspaces),
        sandboxes=_limit(m["quota_sandboxes"], settings.quota_sandboxes),
    )


# ---------------------------------------------------------------------------- queries
def usage(conn: Connection, user_id: int, default_disk_gb: int) -> Usage:
    """What the user holds now (see the module doc for what counts)."""
    ws_count, ws_disk = conn.execute(
        select(func.count(), func.coalesce(func.sum(workspaces.c.disk_gb), 0)).where(
            and_(workspaces.c.user_id == user_id, workspaces.c.deleting_at.is_(None))
        )
    ).one()
    live = and_(jobs.c.user_id == user_id, jobs.c.vm_status.in_(SANDBOX_VM_STATUSES))
    scratch_gb = case((jobs.c.workspace_id.is_(None), func.coalesce(jobs.c.disk_gb, default_disk_gb)), else_=0)
    sandboxes, scratch = conn.execute(
        select(func.count(), func.coalesce(func.sum(scratch_gb), 0)).where(live)
    ).one()
    return Usage(disk_gb=int(ws_disk) + int(scratch), workspaces=int(ws_count), sandboxes=int(sandboxes))


def _user_by_id(conn: Connection, user_id: int) -> Any:
    return conn.execute(select(users).where(users.c.id == user_id)).first()


def _user_by_name(conn: Connection, name: str) -> Any:
    return conn.execute(select(users).where(users.c.name == name)).first()


def _state(conn: Connection, row: Any, settings: Settings) -> QuotaState:
    m = row._mapping
    return QuotaState(
        user_id=m["id"],
        user=m["name"],
        admin=bool(m["admin"]),
        limits=limits_for(row, settings),
        overrides={q: m[f"quota_{q}"] for q in QUOTAS},
        usage=usage(conn, m["id"], settings.default_disk_gb),
    )


def state_by_name(conn: Connection, name: str, settings: Settings) -> QuotaState:
    row = _user_by_name(conn, name)
    if row is None:
        raise NotFound(f"user {name} not found")
    return _state(conn, row, settings)


def set_overrides(conn: Connection, name: str, values: dict[str, int | None], settings: Settings) -> QuotaState:
    """Store per-user overrides (``None`` = back to the server's setting); the new state."""
    row = _user_by_name(conn, name)
    if row is None:
        raise NotFound(f"user {name} not found")
    if values:
        conn.execute(
            update(users).where(users.c.id == row._mapping["id"]).values(
                **{f"quota_{k}": v for k, v in values.items()}
            )
        )
    return state_by_name(conn, name, settings)


@dataclass(frozen=True)
class Ask:
    """What a submission adds to the user's usage (negative: frees)."""

    disk_gb: int = 0
    workspaces: int = 0
    sandboxes: int = 0


_WHAT = {  # quota -> (name in messages, unit, what counts and how to free some)
    "disk_gb": ("disk", " GB", "workspace disks + ephemeral sandboxes' scratch disks"),
    "workspaces": ("workspaces", "", "delete one with `mags workspace delete`"),
    "sandboxes": ("sandboxes", "", "live VMs, sleeping ones included: stop one with `mags stop`"),
}


def check(conn: Connection, user_id: int, ask: Ask, settings: Settings) -> None:
    """Raise :class:`QuotaExceeded` if ``ask`` takes the user past a limit (admins: never)."""
    if ask.disk_gb <= 0 and ask.workspaces <= 0 and ask.sandboxes <= 0:
        return
    row = _user_by_id(conn, user_id)
    if row is None or row._mapping["admin"]:
        return
    limits = limits_for(row, settings)
    # a count before the disk: a new workspace past both limits is told about the workspaces
    wanted = [q for q in CHECK_ORDER if getattr(ask, q) > 0 and getattr(limits, q) is not None]
    if not wanted:
        return
    used = usage(conn, user_id, settings.default_disk_gb)
    for q in wanted:
        limit, have, more = getattr(limits, q), getattr(used, q), getattr(ask, q)
        if have + more > limit:
            name, u, what = _WHAT[q]
            raise QuotaExceeded(
                f"quota exceeded: {name} limit is {limit}{u}, {have}{u} in use, "
                f"this job needs {more}{u} more ({what})"
            )
