"""Public URLs of jobs and URL aliases: names, rows, and what a host name routes to.

* A job's **subdomain** is chosen once (16 base32 characters, 80 random bits, so nobody can
  guess another tenant's URL) and never changes.  ``<subdomain>`` serves the port enabled last
  (``POST /mags-jobs/{id}/access``); every enabled port is also ``<subdomain>-<port>``.
* An **alias** is a name a user picks (DNS label rules, unique across tenants) for one of
  their workspaces: it serves the workspace's current job (newest alive, else newest) on that
  job's URL port, or on the port remembered when the alias was made.

Queries are plain functions over a Core ``Connection``, run by :class:`UrlStore` through the
:class:`~mags.core.db.Database` (as in ``core/jobs.py``).
"""

from __future__ import annotations

import base64
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, case, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from mags.core.db import Database
from mags.core.ids import iso
from mags.core.schema import job_urls, jobs, url_aliases
from mags.errors import Conflict, NotFound, ValidationError

LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# generated subdomains, with an optional port: never an alias name
GENERATED_RE = re.compile(r"([a-z2-7]{16})(?:-(\d{1,5}))?")
RESERVED = frozenset(
    {
        "api", "www", "admin", "app", "apps", "mail", "smtp", "imap", "pop", "ftp", "ssh", "sftp", "proxy",
        "status", "docs", "dashboard", "static", "cdn", "assets", "mags", "localhost", "ns", "ns1", "ns2",
        "autoconfig", "autodiscover", "webmail",
    }
)  # fmt: skip
MAX_ALIASES_PER_USER = 100
DEFAULT_PORT = 8080
ALIVE = ("running", "sleeping")


def new_subdomain() -> str:
    """16 characters of base32 (80 random bits): unguessable, a valid DNS label."""
    return base64.b32encode(secrets.token_bytes(10)).decode().lower()


def check_alias_name(value: Any) -> str:
    """The alias name lower-cased, or ValidationError saying what is wrong with it."""
    if not isinstance(value, str) or not value:
        raise ValidationError("subdomain is required")
    name = value.strip().lower()
    if not LABEL_RE.fullmatch(name):
        raise ValidationError(
            f"subdomain {value!r} is not a valid DNS label: use 1-63 letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    if name in RESERVED or name.startswith("xn--"):
        raise ValidationError(f"subdomain {name!r} is reserved; choose another name")
    if GENERATED_RE.fullmatch(name):
        raise ValidationError(f"subdomain {name!r} looks like a generated URL name; choose another name")
    return name


@dataclass(frozen=True)
class Target:
    """Where a host name routes: a job's sandbox and the port inside it."""

    job_id: str
    user_id: int
    vm_id: str | None
    agent_id: str | None
    vm_status: str
    port: int


@dataclass(frozen=True)
class Miss:
    """Why a host name routes nowhere: ``unknown``, ``port`` (not enabled), or ``no-job``."""

    reason: str
    detail: str = ""


# ---------------------------------------------------------------------------- queries
_JOB_URL = select(
    job_urls.c.job_id,
    job_urls.c.user_id,
    job_urls.c.port,
    job_urls.c.ports,
    jobs.c.vm_id,
    jobs.c.agent_id,
    jobs.c.vm_status,
).join(jobs, jobs.c.request_id == job_urls.c.job_id)


def _route(conn: Connection, label: str) -> Target | Miss:
    m = GENERATED_RE.fullmatch(label)
    if m is not None:
        row = conn.execute(_JOB_URL.where(job_urls.c.subdomain == m.group(1))).first()
        if row is None:
            return Miss("unknown")
        r = row._mapping
        port = int(m.group(2)) if m.group(2) else r["port"]
        if port not in (r["ports"] or []):
            return Miss("port", f"port {port} of this sandbox has no public URL")
        return Target(r["job_id"], r["user_id"], r["vm_id"], r["agent_id"], r["vm_status"], port)
    alias = conn.execute(select(url_aliases).where(url_aliases.c.subdomain == label)).first()
    if alias is None:
        return Miss("unknown")
    a = alias._mapping
    job = _current_job(conn, a["user_id"], a["workspace_id"])
    if job is None:
        return Miss("no-job", f"workspace {a['workspace_id']} has no sandbox")
    j = job._mapping
    port = j["url_port"] or a["port"]
    return Target(j["request_id"], a["user_id"], j["vm_id"], j["agent_id"], j["vm_status"], port)


def _current_job(conn: Connection, user_id: int, workspace_id: str) -> Any:
    """The workspace's newest job whose VM is alive, else its newest job."""
    alive_first = case((jobs.c.vm_status.in_(ALIVE), 0), else_=1)
    return conn.execute(
        select(jobs.c.request_id, jobs.c.vm_id, jobs.c.agent_id, jobs.c.vm_status, job_urls.c.port.label("url_port"))
        .select_from(jobs.outerjoin(job_urls, job_urls.c.job_id == jobs.c.request_id))
        .where(and_(jobs.c.user_id == user_id, jobs.c.workspace_id == workspace_id))
        .order_by(alive_first, jobs.c.created_at.desc())
        .limit(1)
    ).first()


def _taken(conn: Connection, name: str) -> bool:
    in_jobs = conn.execute(select(job_urls.c.job_id).where(job_urls.c.subdomain == name)).first()
    in_aliases = conn.execute(select(url_aliases.c.id).where(url_aliases.c.subdomain == name)).first()
    return in_jobs is not None or in_aliases is not None


def _enable(conn: Connection, user_id: int, job_id: str, port: int, now: float) -> dict[str, Any]:
    row = conn.execute(
        select(job_urls).where(and_(job_urls.c.job_id == job_id, job_urls.c.user_id == user_id))
    ).first()
    if row is not None:
        ports = sorted({*row._mapping["ports"], port})
        conn.execute(
            update(job_urls).where(job_urls.c.job_id == job_id).values(port=port, ports=ports, updated_at=now)
        )
        return {"subdomain": row._mapping["subdomain"], "port": port, "ports": ports}
    sub = new_subdomain()
    while _taken(conn, sub):  # 80 random bits: practically never
        sub = new_subdomain()
    conn.execute(
        insert(job_urls).values(
            job_id=job_id, user_id=user_id, subdomain=sub, port=port, ports=[port], created_at=now, updated_at=now
        )
    )
    # the job's public `subdomain` field (CONTRACT.md)
    conn.execute(update(jobs).where(jobs.c.request_id == job_id).values(subdomain=sub))
    return {"subdomain": sub, "port": port, "ports": [port]}


def _create_alias(conn: Connection, user_id: int, name: str, workspace_id: str, domain: str, now: float) -> Any:
    job = _current_job(conn, user_id, workspace_id)
    if job is None:
        raise NotFound(f"workspace {workspace_id} not found (run a job in it first)")
    port = job._mapping["url_port"] or DEFAULT_PORT
    existing = conn.execute(select(url_aliases).where(url_aliases.c.subdomain == name)).first()
    if existing is not None:
        if existing._mapping["user_id"] != user_id:
            raise Conflict(f"subdomain {name!r} is taken; choose another name")
        # the owner re-points their own alias
        conn.execute(
            update(url_aliases)
            .where(url_aliases.c.id == existing._mapping["id"])
            .values(workspace_id=workspace_id, domain=domain, port=port, updated_at=now)
        )
        return _alias_by_id(conn, existing._mapping["id"])
    if _taken(conn, name):
        raise Conflict(f"subdomain {name!r} is taken; choose another name")
    count = conn.execute(
        select(func.count()).select_from(url_aliases).where(url_aliases.c.user_id == user_id)
    ).scalar_one()
    if count >= MAX_ALIASES_PER_USER:
        raise Conflict(f"you already have {MAX_ALIASES_PER_USER} URL aliases; remove one first")
    alias_id = str(uuid.uuid4())
    conn.execute(
        insert(url_aliases).values(
            id=alias_id,
            user_id=user_id,
            subdomain=name,
            workspace_id=workspace_id,
            domain=domain,
            port=port,
            created_at=now,
            updated_at=now,
        )
    )
    return _alias_by_id(conn, alias_id)


def _alias_by_id(conn: Connection, alias_id: str) -> Any:
    return conn.execute(select(url_aliases).where(url_aliases.c.id == alias_id)).one()


def _list_aliases(conn: Connection, user_id: int) -> list[Any]:
    return list(
        conn.execute(
            select(url_aliases).where(url_aliases.c.user_id == user_id).order_by(url_aliases.c.created_at)
        ).all()
    )


def _delete_alias(conn: Connection, user_id: int, name: str) -> Any:
    row = conn.execute(
        select(url_aliases).where(and_(url_aliases.c.subdomain == name, url_aliases.c.user_id == user_id))
    ).first()
    if row is None:
        raise NotFound(f"URL alias {name} not found")
    conn.execute(url_aliases.delete().where(url_aliases.c.id == row._mapping["id"]))
    return row


# ---------------------------------------------------------------------------- store
class UrlStore:
    """Data access for public URLs and aliases; user-facing calls take the user's id."""

    def __init__(self, db: Database, clock: Callable[[], float]) -> None:
        self.db = db
        self.clock = clock
        # called with the labels whose routes just changed (an embedded proxy drops them from its cache)
        self.listeners: list[Callable[[list[str]], None]] = []

    def _changed(self, labels: list[str]) -> None:
        for listener in self.listeners:
            listener(labels)

    async def enable(self, user_id: int, job_id: str, port: int) -> dict[str, Any]:
        """Give the job a subdomain (once) and make ``port`` its served port."""
        enabled = await self.db.write(_enable, user_id, job_id, port, self.clock())
        self._changed([enabled["subdomain"], f"{enabled['subdomain']}-{port}"])
        return enabled

    async def route(self, label: str) -> Target | Miss:
        """What ``<label>.<apps_domain>`` routes to (no caching; see proxy/routing.py)."""
        return await self.db.read(_route, label)

    async def create_alias(self, user_id: int, name: str, workspace_id: str, domain: str) -> Any:
        try:
            row = await self.db.write(_create_alias, user_id, name, workspace_id, domain, self.clock())
        except IntegrityError as exc:  # a concurrent create took the name first
            raise Conflict(f"subdomain {name!r} is taken; choose another name") from exc
        self._changed([name])
        return row

    async def list_aliases(self, user_id: int) -> list[Any]:
        return await self.db.read(_list_aliases, user_id)

    async def delete_alias(self, user_id: int, name: str) -> Any:
        row = await self.db.write(_delete_alias, user_id, name)
        self._changed([name])
        return row


def alias_json(row: Any, url: str) -> dict[str, Any]:
    """One alias as the API shows it."""
    m = row._mapping
    return {
        "id": m["id"],
        "subdomain": m["subdomain"],
        "workspace_id": m["workspace_id"],
        "domain": m["domain"],
        "port": m["port"],
        "url": url,
        "created_at": iso(m["created_at"]),
        "updated_at": iso(m["updated_at"]),
    }
