"""Per-sandbox SSH keys: issued by the access call, looked up by the gateway, revoked at stop.

A key pair is made per ``POST /mags-jobs/{id}/access {"port": 22}``; only its public half is
stored, bound to that one job (and its ``vm_id``).  The private half goes to the caller once.
The gateway finds a key by its SHA-256 fingerprint (a unique index), compares the whole public
key in constant time, and accepts it only while the job's VM is alive; rows of jobs whose VM
stopped are deleted by :meth:`SshKeyStore.revoke_dead` (the gateway runs it periodically).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, delete, insert, select

from mags.core.db import Database
from mags.core.schema import jobs, ssh_keys
from mags.core.states import VmStatus

# a job's VM can take SSH traffic in these states (a sleeping one is woken by the gateway)
ALIVE_VM = (VmStatus.RUNNING.value, VmStatus.SLEEPING.value)
# keys kept per job: every access call adds one, the oldest go past this
MAX_KEYS_PER_JOB = 20


@dataclass(frozen=True)
class IssuedKey:
    """A fresh key pair: the private key (OpenSSH format) is shown to the caller once."""

    private_key: str
    public_key: str
    fingerprint: str


@dataclass(frozen=True)
class KeyTarget:
    """What an accepted key opens: one job's sandbox, on one agent."""

    job_id: str
    vm_id: str
    agent_id: str | None
    vm_status: str
    user_id: int

    @property
    def alive(self) -> bool:
        return self.vm_status in ALIVE_VM


def generate_key_pair(comment: str = "") -> IssuedKey:
    """A new ed25519 key pair."""
    import asyncssh  # imported here: the API process needs it only when issuing keys

    key = asyncssh.generate_private_key("ssh-ed25519", comment=comment or None)
    private = key.export_private_key("openssh").decode()
    return IssuedKey(private, public_key_text(key), key.get_fingerprint("sha256"))


def public_key_text(key: Any) -> str:
    """``"<algorithm> <base64>"`` of an asyncssh key, without comment (the stored form)."""
    parts = key.export_public_key("openssh").decode().split()
    return f"{parts[0]} {parts[1]}"


# ---------------------------------------------------------------------------- queries
def _insert(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(ssh_keys), values)
    old = (
        conn.execute(
            select(ssh_keys.c.id)
            .where(ssh_keys.c.job_id == values["job_id"])
            .order_by(ssh_keys.c.id.desc())
            .offset(MAX_KEYS_PER_JOB)
        )
        .scalars()
        .all()
    )
    if old:
        conn.execute(delete(ssh_keys).where(ssh_keys.c.id.in_(old)))


_LOOKUP = select(
    ssh_keys.c.public_key,
    ssh_keys.c.job_id,
    ssh_keys.c.vm_id,
    ssh_keys.c.user_id,
    jobs.c.vm_id.label("job_vm_id"),
    jobs.c.agent_id,
    jobs.c.vm_status,
).select_from(ssh_keys.join(jobs, jobs.c.request_id == ssh_keys.c.job_id))


def _lookup(conn: Connection, fingerprint: str) -> Any:
    return conn.execute(_LOOKUP.where(ssh_keys.c.fingerprint == fingerprint)).first()


def _target(conn: Connection, job_id: str) -> Any:
    return conn.execute(
        select(jobs.c.request_id, jobs.c.vm_id, jobs.c.agent_id, jobs.c.vm_status, jobs.c.user_id).where(
            jobs.c.request_id == job_id
        )
    ).first()


def _alive_jobs(conn: Connection, job_ids: list[str]) -> set[str]:
    rows = conn.execute(
        select(jobs.c.request_id).where(and_(jobs.c.request_id.in_(job_ids), jobs.c.vm_status.in_(ALIVE_VM)))
    )
    return {r[0] for r in rows}


def _revoke_dead(conn: Connection) -> int:
    # driven from ssh_keys (small) through the jobs primary key: no scan of the jobs table
    dead = (
        conn.execute(
            select(ssh_keys.c.id)
            .select_from(ssh_keys.join(jobs, jobs.c.request_id == ssh_keys.c.job_id))
            .where(jobs.c.vm_status.not_in(ALIVE_VM))
        )
        .scalars()
        .all()
    )
    if dead:
        conn.execute(delete(ssh_keys).where(ssh_keys.c.id.in_(dead)))
    return len(dead)


def _revoke_job(conn: Connection, job_id: str) -> int:
    return conn.execute(delete(ssh_keys).where(ssh_keys.c.job_id == job_id)).rowcount or 0


def _count(conn: Connection, job_id: str | None) -> int:
    stmt = select(ssh_keys.c.id)
    if job_id is not None:
        stmt = stmt.where(ssh_keys.c.job_id == job_id)
    return len(conn.execute(stmt).all())


class SshKeyStore:
    """Data access for ``ssh_keys``."""

    def __init__(self, db: Database, clock: Callable[[], float]) -> None:
        self.db = db
        self.clock = clock

    async def issue(self, user_id: int, job_id: str, vm_id: str) -> IssuedKey:
        """Make a key pair for ``job_id``'s sandbox and store its public half."""
        issued = generate_key_pair(f"mags-{vm_id}")
        await self.db.write(
            _insert,
            {
                "fingerprint": issued.fingerprint,
                "public_key": issued.public_key,
                "job_id": job_id,
                "vm_id": vm_id,
                "user_id": user_id,
                "created_at": self.clock(),
            },
        )
        return issued

    async def find(self, fingerprint: str, public_key: str) -> KeyTarget | None:
        """The sandbox a client key opens, or None (unknown key, or bound to an old VM)."""
        row = await self.db.read(_lookup, fingerprint)
        if row is None:
            # same comparison work as for a hit, so a miss is not visibly faster
            hmac.compare_digest(public_key.encode(), public_key.encode())
            return None
        m = row._mapping
        if not hmac.compare_digest(m["public_key"].encode(), public_key.encode()):
            return None
        if m["job_vm_id"] != m["vm_id"]:  # the job got another sandbox since: not this key's
            return None
        return KeyTarget(m["job_id"], m["vm_id"], m["agent_id"], m["vm_status"], m["user_id"])

    async def target(self, job_id: str) -> KeyTarget | None:
        """The job's current sandbox and state (re-checked at every channel the gateway opens)."""
        row = await self.db.read(_target, job_id)
        if row is None or not row._mapping["vm_id"]:
            return None
        m = row._mapping
        return KeyTarget(m["request_id"], m["vm_id"], m["agent_id"], m["vm_status"], m["user_id"])

    async def alive_jobs(self, job_ids: list[str]) -> set[str]:
        """Which of ``job_ids`` still have a live VM."""
        return await self.db.read(_alive_jobs, job_ids) if job_ids else set()

    async def revoke_dead(self) -> int:
        """Delete the keys of every job whose VM is not alive; returns how many."""
        return await self.db.write(_revoke_dead)

    async def revoke_job(self, job_id: str) -> int:
        """Delete every key of one job."""
        return await self.db.write(_revoke_job, job_id)

    async def count(self, job_id: str | None = None) -> int:
        """How many keys are stored (for one job, or in all); for tests and metrics."""
        return await self.db.read(_count, job_id)
