"""Rows -> wire JSON (the shapes in CONTRACT.md)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column

from mags.core.ids import iso
from mags.core.schema import jobs

# What listings and status answers carry; the script and environment (possibly secrets)
# are never echoed back in listings.
JOB_COLUMNS: list[Column[Any]] = [
    jobs.c.request_id,
    jobs.c.name,
    jobs.c.workspace_id,
    jobs.c.base_workspace_id,
    jobs.c.type,
    jobs.c.status,
    jobs.c.vm_status,
    jobs.c.exit_code,
    jobs.c.script_duration_ms,
    jobs.c.vm_id,
    jobs.c.subdomain,
    jobs.c.error_message,
    jobs.c.persistent,
    jobs.c.no_sleep,
    jobs.c.no_sync,
    jobs.c.ephemeral,
    jobs.c.startup_command,
    jobs.c.disk_gb,
    jobs.c.rootfs_type,
    jobs.c.timeout_s,
    jobs.c.created_at,
    jobs.c.started_at,
    jobs.c.finished_at,
    jobs.c.stopped_at,
    jobs.c.updated_at,
]

_TIMES = ("created_at", "started_at", "finished_at", "stopped_at", "updated_at")
_BOOLS = ("persistent", "no_sleep", "no_sync", "ephemeral")


def job_json(row: Any) -> dict[str, Any]:
    """One job as the API shows it."""
    m = row._mapping if hasattr(row, "_mapping") else row
    out: dict[str, Any] = {c.name: m[c.name] for c in JOB_COLUMNS}
    for name in _TIMES:
        out[name] = iso(out[name])
    for name in _BOOLS:
        out[name] = bool(out[name])
    return out


def log_json(row: Any) -> dict[str, Any]:
    m = row._mapping
    return {"seq": m["seq"], "timestamp": iso(m["ts"]), "source": m["source"], "message": m["message"]}


def event_json(row: Any) -> dict[str, Any]:
    m = row._mapping
    return {
        "timestamp": iso(m["ts"]),
        "status": m["to_status"],
        "vm_status": m["vm_status"],
        "reason": m["reason"],
    }
