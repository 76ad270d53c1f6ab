"""``/mags-workspaces``: list a user's workspaces, delete one (with its stored data).

Also ``/quotas`` (a mags extension): a user's disk / workspace / sandbox quotas and usage;
admins change a user's with ``PATCH /quotas/{user}`` (see core/quotas.py).
"""

# No `from __future__ import annotations` here: FastAPI must see the route annotations
# (the local `Me` alias) as objects, not strings it cannot resolve.

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import JSONResponse

from mags.api.params import query_bool, read_json_object, reject_unknown
from mags.config import Settings
from mags.core import quotas
from mags.core.ids import iso
from mags.core.tokens import Principal
from mags.core.workspace_upkeep import WorkspaceUpkeep
from mags.errors import NotFound, PermissionDenied, ValidationError
from mags.scheduler.workspace_admin import WorkspaceAdmin

QUOTA_FIELDS = frozenset(quotas.QUOTAS)
MAX_QUOTA = 10**9


def workspace_json(
    row: Any, live_job: str | None, size_bytes: int | None, retention_s: float
) -> dict[str, Any]:
    """One workspace as the API shows it (``workspace_id`` is its name, as in jobs)."""
    m = row._mapping
    persistent = m["mode"] == "persistent"
    expires = m["expires_at"]
    if not persistent and live_job is None and expires is None:
        expires = (m["last_used_at"] or m["created_at"]) + retention_s
    return {
        "workspace_id": m["name"],
        "name": m["name"],
        "mode": m["mode"],
        "persistent": persistent,
        "disk_gb": m["disk_gb"],
        "size_bytes": size_bytes,
        "base_workspace_id": m["base_name"],
        "head_snapshot_id": m["head_snapshot_id"],
        "generation": m["generation"],
        "in_use": live_job is not None,
        "job_id": live_job,
        "created_at": iso(m["created_at"]),
        "updated_at": iso(m["updated_at"]),
        "last_used_at": iso(m["last_used_at"]),
        "last_synced_at": iso(m["last_synced_at"]),
        "expires_at": None if persistent or live_job is not None else iso(expires),
    }


def parse_quota_update(body: dict[str, Any]) -> dict[str, int | None]:
    """``{disk_gb?, workspaces?, sandboxes?}``: an integer >= 0 (0: no limit) or null (the default)."""
    reject_unknown(body, QUOTA_FIELDS)
    if not body:
        raise ValidationError(f"nothing to change: give any of {', '.join(quotas.QUOTAS)}")
    out: dict[str, int | None] = {}
    for key, value in body.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_QUOTA):
            raise ValidationError(
                f"{key} must be an integer between 0 (no limit) and {MAX_QUOTA}, or null (the server's default)"
            )
        out[key] = value
    return out


def workspaces_router(
    settings: Settings,
    workspaces: WorkspaceUpkeep,
    admin: WorkspaceAdmin,
    auth: Callable[[Request], Awaitable[Principal]],
) -> APIRouter:
    router = APIRouter()
    Me = Annotated[Principal, Depends(auth)]
    retention = float(settings.local_workspace_retention_s)

    @router.get("/mags-workspaces")
    async def list_workspaces(me: Me) -> JSONResponse:
        rows, live = await workspaces.list(me.user_id)
        sizes = await admin.local_sizes() if rows else {}
        out = [
            workspace_json(r, live.get(r._mapping["name"]), sizes.get(r._mapping["key"]), retention)
            for r in rows
        ]
        return JSONResponse({"workspaces": out, "total": len(out)})

    @router.delete("/mags-workspaces/{name}")
    async def delete_workspace(name: str, request: Request, me: Me) -> JSONResponse:
        # ?force=true: a script still running on it is stopped too (else 409 naming its job)
        row = await admin.delete(me.user_id, name, force=query_bool(request, "force"))
        m = row._mapping
        return JSONResponse({"success": True, "deleted": True, "workspace_id": m["name"], "mode": m["mode"]})

    db = workspaces.db

    @router.get("/quotas")
    async def my_quotas(me: Me) -> JSONResponse:
        state = await db.read(quotas.state_by_name, me.user, settings)
        return JSONResponse(state.to_json())

    @router.get("/quotas/{user}")
    async def user_quotas(user: str, me: Me) -> JSONResponse:
        if user != me.user and not me.admin:
            raise NotFound(f"user {user} not found")  # never reveal other tenants
        state = await db.read(quotas.state_by_name, user, settings)
        return JSONResponse(state.to_json())

    @router.patch("/quotas/{user}")
    async def set_quotas(user: str, request: Request, me: Me) -> JSONResponse:
        if not me.admin:
            raise PermissionDenied("only an admin can change quotas")
        values = parse_quota_update(await read_json_object(request, 64 * 1024))
        state = await db.write(quotas.set_overrides, user, values, settings)
        return JSONResponse(state.to_json())

    return router
