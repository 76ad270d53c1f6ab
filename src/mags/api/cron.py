"""``/mags-cron``: create, list, get (with recent runs), update and delete cron jobs.

``{cron_id}`` is a cron job's id or, for CLI convenience, its name.  Another user's cron job
is a 404 like a missing one.
"""

# No `from __future__ import annotations` here: FastAPI must see the route annotations
# (the local `Me` alias) as objects, not strings it cannot resolve.

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import JSONResponse

from mags.api.cron_input import parse_cron_update, parse_new_cron
from mags.api.params import query_int, read_json_object
from mags.config import Settings
from mags.core.cron import DEFAULT_RUNS, MAX_RUNS, CronStore, cron_json, run_json
from mags.core.tokens import Principal


def cron_router(
    settings: Settings,
    store: CronStore,
    auth: Callable[[Request], Awaitable[Principal]],
) -> APIRouter:
    router = APIRouter()
    Me = Annotated[Principal, Depends(auth)]
    # room for a maximal script plus JSON escaping and the other fields (as for jobs)
    body_limit = 2 * settings.max_script_bytes + 512 * 1024

    @router.post("/mags-cron")
    async def create(request: Request, me: Me) -> JSONResponse:
        body = await read_json_object(request, body_limit)
        cron, next_run_at = parse_new_cron(body, settings, store.clock())
        return JSONResponse(cron_json(await store.create(me.user_id, cron, next_run_at)))

    @router.get("/mags-cron")
    async def list_crons(me: Me) -> JSONResponse:
        rows = await store.list(me.user_id)
        return JSONResponse({"cron_jobs": [cron_json(r) for r in rows], "total": len(rows)})

    @router.get("/mags-cron/{cron_id}")
    async def get(cron_id: str, request: Request, me: Me) -> JSONResponse:
        limit = query_int(request, "runs", DEFAULT_RUNS, 0, MAX_RUNS)
        row, runs = await store.get_with_runs(me.user_id, cron_id, limit)
        return JSONResponse({**cron_json(row), "runs": [run_json(r) for r in runs]})

    @router.patch("/mags-cron/{cron_id}")
    async def update(cron_id: str, request: Request, me: Me) -> JSONResponse:
        row = await store.get(me.user_id, cron_id)
        body = await read_json_object(request, body_limit)
        values = parse_cron_update(body, row, settings, store.clock())
        real_id = row._mapping["id"]
        if values:
            row = await store.update(me.user_id, real_id, values)
        return JSONResponse(cron_json(row))

    @router.delete("/mags-cron/{cron_id}")
    async def remove(cron_id: str, me: Me) -> JSONResponse:
        row = await store.delete(me.user_id, cron_id)
        return JSONResponse({"success": True, **cron_json(row)})

    return router
