"""Desired vs actual at start and stop: no job is left ``running`` for a sandbox that is gone,
and no accepted job is lost.

* :func:`reconcile_at_start` -- jobs a previous process left active (claimed, running,
  sleeping) whose sandbox the agent no longer has are ``lost``: one whose script never ran
  goes back to ``pending`` ("requeued: server restarted before it started") and runs again;
  one whose script had started -- the database says so, or the agent's spawn record does
  (agent/spawns.py) -- ends ``error`` with "server restarted", except persistent VMs that come
  back (always-on ones running, others asleep; see scheduler/resume.py).  Sandboxes the
  database knows nothing active about are stopped.
* :func:`end_superseded` -- jobs of an agent that listened on the url one of ours has now
  (the agent restarted under a new id) are lost the same way.
* :func:`end_orphans` -- so are jobs on agents no live control plane serves (never
  registered, or no heartbeat for a while); :class:`Housekeeper` runs it and the heartbeat
  periodically.
* :func:`mark_shutdown` / :func:`finish_active` -- on shutdown, record why the sandboxes are
  going away before the agent stops them, then end whatever the agent did not report.  A job
  whose script has not started is left as it is (pending, perhaps claimed): the next start
  requeues it, with the agent's spawn records at hand.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from mags.agent.models import SandboxInfo, StopRequest
from mags.agent.spawns import LOST_REASON
from mags.config import Settings
from mags.core.db import Database
from mags.core.schema import agents, jobs
from mags.core.states import VM_ACTIVE, JobStatus, VmStatus
from mags.core.tasks import Periodic
from mags.scheduler.applier import StateApplier
from mags.scheduler.changes import RESTART_REASON, SPAWNED_LOST_REASON, Change
from mags.scheduler.registry import AgentRegistry
from mags.scheduler.resume import resume_lost, resume_mode

log = logging.getLogger(__name__)

# Every control plane refreshes its agents' last_seen this often; agents silent for longer
# than AGENT_STALE_S are considered gone with whatever they ran.
AGENT_HEARTBEAT_S = 10.0
AGENT_STALE_S = 30.0
RESUME_CONCURRENCY = 4  # lost VMs re-provisioned at once at start (each restores a workspace)

_ACTIVE = [s.value for s in VM_ACTIVE]


_ACTIVE_COLUMNS = (
    jobs.c.request_id, jobs.c.vm_id, jobs.c.agent_id, jobs.c.vm_status, jobs.c.status, jobs.c.stop_reason
)  # fmt: skip


def _active_jobs_sync(conn: Connection, agent_ids: list[str] | None, whole: bool = False) -> list[Any]:
    """Jobs whose VM is active (on ``agent_ids``): their ids and states, or ``whole`` rows."""
    cond = jobs.c.vm_status.in_(_ACTIVE)
    if agent_ids is not None:
        cond = and_(cond, jobs.c.agent_id.in_(agent_ids))
    stmt = select(jobs) if whole else select(*_ACTIVE_COLUMNS)
    return list(conn.execute(stmt.where(cond)).all())


async def _active_jobs(db: Database, agent_ids: list[str] | None = None) -> list[Any]:
    return await db.read_heavy(_active_jobs_sync, agent_ids)


def _job_ids(conn: Connection, stmt: Any) -> list[str]:
    return [r[0] for r in conn.execute(stmt).all()]


def not_started(row: Any) -> bool:
    """The job's script has not started and nobody asked to stop it: it must run later."""
    m = row._mapping
    return bool(m["status"] == JobStatus.PENDING.value and not m["stop_reason"])


@dataclass(frozen=True)
class Lost:
    """An active job whose sandbox is gone.

    ``spawned_at``: when its agent recorded spawning the script, if the database never learnt
    of that start (agent/spawns.py).
    """

    job_id: str
    agent_id: str
    spawned_at: float | None = None


def _lost(job_id: str, ts: float, reason: str, spawned_at: float | None = None) -> Change:
    if spawned_at is None:
        return Change("lost", job_id, ts, reason=reason)
    return Change("lost", job_id, ts, reason=SPAWNED_LOST_REASON, data={"spawned_at": spawned_at})


async def _lose(applier: StateApplier, changes: list[Change]) -> tuple[int, int]:
    """Apply ``lost`` changes (one batch, mostly); returns (ended, requeued)."""
    outcomes = await asyncio.gather(*(applier.apply(c) for c in changes), return_exceptions=True)
    for change, outcome in zip(changes, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            log.error("job %s: cannot record that its sandbox is gone: %s", change.job_id, outcome)
    return outcomes.count("ended"), outcomes.count("requeued")


def _spawned_at(row: Any, info: SandboxInfo | None) -> float | None:
    """When the agent spawned the script of a job the database shows as never started, if it did."""
    m = row._mapping
    if info is None or info.reason != LOST_REASON or info.job_id != m["request_id"]:
        return None
    return info.created_at if m["status"] == JobStatus.PENDING.value else None


async def reconcile_at_start(
    db: Database,
    registry: AgentRegistry,
    applier: StateApplier,
    clock: Callable[[], float],
    settings: Settings | None = None,
) -> int:
    """Bring active jobs in line with what the agents really run; returns jobs ended.

    With ``settings``, persistent VMs that qualify are re-provisioned instead of ended
    (scheduler/resume.py).
    """
    alive: dict[str, dict[str, SandboxInfo]] = {}
    for agent in registry.all():
        try:
            alive[agent.agent_id] = {s.sandbox_id: s for s in await agent.list_sandboxes()}
        except Exception as exc:  # noqa: BLE001 - an unreachable agent's jobs are left alone
            log.warning("cannot list sandboxes of agent %s: %s", agent.agent_id, exc)
    ended = 0
    known: set[str] = set()
    lost: list[Lost] = []  # sandboxes no agent has
    for row in await _active_jobs(db, list(alive)):
        job_id, vm_id, agent_id = row._mapping["request_id"], row._mapping["vm_id"], row._mapping["agent_id"]
        info = alive[agent_id].get(vm_id or "")
        if info is None or info.reason == LOST_REASON:  # gone (perhaps after its script started)
            lost.append(Lost(job_id, agent_id, _spawned_at(row, info)))
        else:
            known.add(info.sandbox_id)
            await applier.apply(
                Change("state", job_id, clock(), state=info.state, reason="sandbox found at start")
            )
    gone, requeued = await _end_or_resume(db, registry, applier, clock, settings, lost)
    ended += gone
    for agent in registry.all():
        for sandbox_id, info in alive.get(agent.agent_id, {}).items():
            if sandbox_id in known or info.state == "stopped":
                continue
            log.warning("stopping orphaned sandbox %s (job %s)", sandbox_id, info.job_id)
            try:
                await agent.stop_sandbox(sandbox_id, StopRequest(reason="orphaned sandbox", sync=True))
            except Exception as exc:  # noqa: BLE001 - best effort
                log.warning("cannot stop orphaned sandbox %s: %s", sandbox_id, exc)
    ended += await end_superseded(db, registry, applier, clock)
    ended += await end_orphans(db, registry, applier, clock, RESTART_REASON)
    if ended:
        log.warning("%d job(s) left active by a previous server ended: %s", ended, RESTART_REASON)
    if requeued:
        log.warning("%d job(s) claimed by a previous server but never started: requeued", requeued)
    return ended


async def _end_or_resume(
    db: Database,
    registry: AgentRegistry,
    applier: StateApplier,
    clock: Callable[[], float],
    settings: Settings | None,
    lost: list[Lost],
) -> tuple[int, int]:
    """Re-provision the lost sandboxes that qualify (a few at a time), requeue or end the others.

    Returns (ended, requeued).
    """
    slots = asyncio.Semaphore(RESUME_CONCURRENCY)

    async def one(job: Lost) -> str | None:
        agent = registry.get(job.agent_id)
        if settings is not None and agent is not None:
            async with slots:
                if await resume_lost(db, agent, applier, clock, settings, job.job_id):
                    return None
        outcome: str | None = await applier.apply(_lost(job.job_id, clock(), RESTART_REASON, job.spawned_at))
        return outcome

    outcomes = await asyncio.gather(*(one(j) for j in lost))
    return outcomes.count("ended"), outcomes.count("requeued")


async def register_agents(db: Database, registry: AgentRegistry, now: float) -> None:
    """Upsert our agents' rows with ``last_seen = now`` (the heartbeat other servers check)."""
    rows = [
        {
            "id": a.agent_id,
            "url": registry.url(a.agent_id),
            "runtime": getattr(a, "runtime", None),
            "last_seen": now,
        }
        for a in registry.all()
    ]
    if rows:
        await db.write(_upsert_agents, rows, db.is_sqlite)


def _upsert_agents(conn: Connection, rows: list[dict[str, Any]], sqlite: bool) -> None:
    insert = sqlite_insert if sqlite else pg_insert
    for row in rows:
        stmt = insert(agents).values(**row)
        stmt = stmt.on_conflict_do_update(
            index_elements=["id"], set_={k: v for k, v in row.items() if k != "id"}
        )
        conn.execute(stmt)


async def end_superseded(
    db: Database, registry: AgentRegistry, applier: StateApplier, clock: Callable[[], float]
) -> int:
    """End active jobs of agents that listened where one of ours listens now (a restart).

    Only one agent can serve a url at a time, so an agent that registered the same url under
    another id is gone -- with its sandboxes.
    """
    urls = registry.urls()
    if not urls:
        return 0
    stmt = (
        select(jobs.c.request_id)
        .join(agents, agents.c.id == jobs.c.agent_id)
        .where(
            and_(
                jobs.c.vm_status.in_(_ACTIVE),
                agents.c.url.in_(urls),
                agents.c.id.not_in(registry.ids()),
            )
        )
    )
    gone = await db.read_heavy(_job_ids, stmt)
    ended, _ = await _lose(applier, [_lost(job_id, clock(), RESTART_REASON) for job_id in gone])
    return ended


async def end_orphans(
    db: Database,
    registry: AgentRegistry,
    applier: StateApplier,
    clock: Callable[[], float],
    reason: str,
    stale_s: float = AGENT_STALE_S,
) -> int:
    """End active jobs on agents that are not ours and show no heartbeat for ``stale_s``.

    A job whose script had not started goes back to the queue instead.  Nobody can read a dead
    agent's spawn records (agent/spawns.py): should it have spawned the script just before it
    died, too late to report it, that script runs again -- the one case left where a script
    may run twice.
    """
    cutoff = clock() - stale_s
    stmt = (
        select(jobs.c.request_id)
        .select_from(jobs.outerjoin(agents, agents.c.id == jobs.c.agent_id))
        .where(
            and_(
                jobs.c.vm_status.in_([s for s in _ACTIVE if s != "pending"]),
                or_(jobs.c.agent_id.is_(None), jobs.c.agent_id.not_in(registry.ids() or [""])),
                or_(agents.c.id.is_(None), agents.c.last_seen.is_(None), agents.c.last_seen < cutoff),
            )
        )
    )
    orphans = await db.read_heavy(_job_ids, stmt)
    ended, _ = await _lose(applier, [_lost(job_id, clock(), reason) for job_id in orphans])
    return ended


class Housekeeper:
    """Periodic: heartbeat for our agents, and ending jobs of agents that went silent."""

    def __init__(
        self,
        db: Database,
        registry: AgentRegistry,
        applier: StateApplier,
        clock: Callable[[], float],
        *,
        heartbeat_s: float = AGENT_HEARTBEAT_S,
        stale_s: float = AGENT_STALE_S,
    ) -> None:
        self.db, self.registry, self.applier, self.clock = db, registry, applier, clock
        self.heartbeat_s, self.stale_s = heartbeat_s, stale_s
        self._periodic = Periodic("mags-housekeeper", heartbeat_s, self._beat, "housekeeping failed")

    def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

    async def _beat(self) -> None:
        await register_agents(self.db, self.registry, self.clock())
        reason = f"agent lost: no heartbeat for {self.stale_s:g} s"
        await end_orphans(self.db, self.registry, self.applier, self.clock, reason, self.stale_s)


async def mark_shutdown(
    db: Database, agent_ids: list[str], reason: str, clock: Callable[[], float], keep: Collection[str] = ()
) -> None:
    """Record why active sandboxes on these agents are about to stop (one UPDATE).

    ``keep``: jobs whose VMs go to sleep instead, to come back at the next start.
    """
    if agent_ids:
        await db.write(_mark_shutdown, agent_ids, reason, clock(), list(keep))


def _mark_shutdown(conn: Connection, agent_ids: list[str], reason: str, now: float, keep: list[str]) -> None:
    cond = and_(
        jobs.c.vm_status.in_(_ACTIVE),
        jobs.c.agent_id.in_(agent_ids),
        or_(jobs.c.stop_reason.is_(None), jobs.c.stop_reason == ""),
        # a stop reason would end a job whose script has not started yet: it must run later
        jobs.c.status != JobStatus.PENDING.value,
    )
    if keep:
        cond = and_(cond, jobs.c.request_id.not_in(keep))
    conn.execute(update(jobs).where(cond).values(stop_reason=reason, updated_at=now))


async def kept_at_shutdown(db: Database, agent_ids: list[str]) -> dict[str, str]:
    """Active persistent VMs on these agents that sleep through a shutdown: job id -> vm id.

    The same rule as after a crash (scheduler/resume.py): they come back at the next start.
    """
    if not agent_ids:
        return {}
    rows = await db.read_heavy(_active_jobs_sync, agent_ids, True)
    return {r._mapping["request_id"]: r._mapping["vm_id"] for r in rows if resume_mode(r) is not None}


async def finish_active(
    db: Database,
    agent_ids: list[str],
    applier: StateApplier,
    reason: str,
    clock: Callable[[], float],
    keep: Collection[str] = (),
) -> int:
    """End every job still active on these agents (but those in ``keep`` left asleep).

    A job whose script has not started is left claimed: the next start requeues it (or ends it,
    should the agent's spawn record say that it did start after all).
    """
    rows = await _active_jobs(db, agent_ids) if agent_ids else []
    ended = 0
    for row in rows:
        job_id = row._mapping["request_id"]
        if job_id in keep and row._mapping["vm_status"] == VmStatus.SLEEPING.value:
            continue
        if not_started(row):
            continue
        applier.submit(Change("finish", job_id, clock(), reason=reason))
        ended += 1
    await applier.drain()
    return ended
