"""What a claimed job needs at launch: its workspace, base layers and files, as a SandboxRequest.

Read at launch time, not at submit time: a workspace's head may have moved since (the final
sync of the sandbox this job replaces is committed just before the job can be claimed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, and_, update
from sqlalchemy.engine import Row

from mags.agent.models import FileRef, LayerRef, SandboxRequest, WorkspaceRef
from mags.config import Settings
from mags.core.db import Database
from mags.core.files import owned_files
from mags.core.schema import jobs
from mags.core.states import VmStatus
from mags.core.workspaces import get_row, prepare_workspace
from mags.errors import SandboxError


class LaunchError(SandboxError):
    """The job cannot start as submitted (its base or files are gone)."""


@dataclass
class LaunchContext:
    """The rows a job's sandbox request is built from (all optional)."""

    workspace: Row[Any] | None = None
    base: Row[Any] | None = None  # --base without -w: layers only
    files: list[Row[Any]] = field(default_factory=list)


def needs_context(row: Row[Any]) -> bool:
    m = row._mapping
    return bool(m["workspace_id"] or m["base_workspace_id"] or m["file_ids"])


def _load(conn: Connection, row: Row[Any], now: float) -> tuple[LaunchContext, bool]:
    """The context and whether the workspace row is missing (to be created)."""
    m = row._mapping
    ctx = LaunchContext()
    missing = False
    if m["workspace_id"]:
        ctx.workspace = get_row(conn, m["user_id"], m["workspace_id"])
        if ctx.workspace is None:
            missing = True  # queued before workspaces had rows (an upgrade): created below
        elif ctx.workspace._mapping["deleting_at"] is not None:
            raise LaunchError(f'workspace "{m["workspace_id"]}" is being deleted')
    elif m["base_workspace_id"]:
        base = get_row(conn, m["user_id"], m["base_workspace_id"])
        if base is None or base._mapping["head_snapshot_id"] is None or base._mapping["deleting_at"]:
            raise LaunchError(f'base workspace "{m["base_workspace_id"]}" no longer exists')
        ctx.base = base
    file_ids = list(dict.fromkeys(m["file_ids"] or []))
    if file_ids:
        found = {r._mapping["id"]: r for r in owned_files(conn, m["user_id"], file_ids, now)}
        gone = [f for f in file_ids if f not in found]
        if gone:
            raise LaunchError(f"uploaded file {gone[0]} expired or was deleted before the job started")
        ctx.files = [found[f] for f in file_ids]
    return ctx, missing


async def load_context(db: Database, row: Row[Any], settings: Settings, now: float) -> LaunchContext:
    """Read (and, for a job queued before workspaces had rows, create) what the launch needs."""
    ctx, missing = await db.read(_load, row, now)
    if missing:
        m = row._mapping
        wants_sync = bool(m["persistent"]) and not m["no_sync"]
        ctx.workspace = await db.write(
            prepare_workspace,
            m["user_id"],
            m["workspace_id"],
            mode="persistent" if wants_sync else "local",
            disk_gb=m["disk_gb"] or settings.default_disk_gb,
            base=None,
            now=now,
        )
    return ctx


def _layers(ws: Row[Any]) -> list[LayerRef]:
    return [LayerRef(**layer) for layer in ws._mapping["layers"] or []]


def workspace_ref(row: Row[Any], ctx: LaunchContext) -> WorkspaceRef | None:
    """The workspace part of a sandbox request.

    The workspace's mode wins over the job's flags: a persistent workspace is restored from its
    head (and synced unless the job says ``no_sync``) even by a job without ``-p``, whose VM
    simply ends with its script.
    """
    m = row._mapping
    if ctx.workspace is not None:
        w = ctx.workspace._mapping
        persistent = w["mode"] == "persistent"
        return WorkspaceRef(
            workspace_id=w["key"],
            mode="persistent" if persistent else "local",
            snapshot_id=w["head_snapshot_id"] if persistent else None,
            layers=_layers(ctx.workspace),
            sync=persistent and not m["no_sync"],
        )
    if ctx.base is not None:
        b = ctx.base._mapping
        top = LayerRef(workspace_id=b["key"], snapshot_id=b["head_snapshot_id"])
        return WorkspaceRef(workspace_id="", mode="ephemeral", layers=[top, *_layers(ctx.base)], sync=False)
    return None


def script_timeout(row: Row[Any], settings: Settings) -> float | None:
    """The script's wall-clock limit: the job's own ``timeout_s``, else ``max_job_seconds``.

    A persistent VM's script has no default limit: it may serve forever (``sleep infinity``,
    a web server); one that asked for a limit gets it (the VM stays up after it, as after
    any script).
    """
    own = row._mapping["timeout_s"]
    if own is not None:
        return float(own)
    return None if row._mapping["persistent"] else float(settings.max_job_seconds)


def sandbox_request(
    row: Row[Any], settings: Settings, ctx: LaunchContext | None = None, files_dir: Path | None = None
) -> SandboxRequest:
    """What the agent needs to start a claimed job."""
    m = row._mapping
    ctx = ctx or LaunchContext()
    disk_gb = m["disk_gb"]
    if disk_gb is None and ctx.workspace is not None:
        disk_gb = ctx.workspace._mapping["disk_gb"]  # the agent sizes the disk to this every start
    files_dir = files_dir or settings.data_dir / "files"
    return SandboxRequest(
        sandbox_id=m["vm_id"],
        job_id=m["request_id"],
        script=m["script"],
        environment=m["environment"] or {},
        image=m["rootfs_type"],
        disk_gb=disk_gb,
        timeout_s=script_timeout(row, settings),
        persistent=bool(m["persistent"]),
        startup_command=m["startup_command"],
        no_sleep=bool(m["no_sleep"]) and bool(m["persistent"]),
        workspace=workspace_ref(row, ctx),
        files=[
            FileRef(name=f._mapping["name"], host_path=str(files_dir / f._mapping["id"])) for f in ctx.files
        ],
    )


def _rebind(conn: Connection, job_id: str, agent_id: str) -> None:
    conn.execute(
        update(jobs)
        .where(and_(jobs.c.request_id == job_id, jobs.c.vm_status == VmStatus.STARTING.value))
        .values(agent_id=agent_id)
    )


async def rebind(db: Database, job_id: str, agent_id: str) -> None:
    """Move a claimed job to the agent that holds its workspace's local copy."""
    await db.write(_rebind, job_id, agent_id)
