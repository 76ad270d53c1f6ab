"""``POST /mags-jobs/{id}/access``: SSH (port 22) or a public URL (any other port).

The work is done by *access providers* registered by the parts that serve the traffic: the
SSH gateway (``mags.ssh``) for port 22, the edge proxy (``mags.proxy``) for URLs.  A server
built without one answers 400 "... is not enabled on this server".

A job whose sandbox is still pending or being created is waited for first (``start_wait_s``):
``run(...)`` followed at once by ``enable_access(id, 22)`` is the published docs' example.
"""

# No `from __future__ import annotations`: FastAPI must see the route annotations as objects.

from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import JSONResponse

from mags.api.params import read_json_object
from mags.core.jobs import JobStore
from mags.core.states import VM_STARTING
from mags.core.tokens import Principal
from mags.errors import ValidationError

StartedFn = Callable[[int, str], Awaitable[Any]]


class AccessProvider(Protocol):
    """Grants access of one kind to a job's sandbox; returns the answer's fields."""

    async def grant(self, principal: Principal, job: Any, port: int) -> dict[str, Any]: ...


def access_router(
    jobs: JobStore,
    auth: Callable[[Request], Awaitable[Principal]],
    providers: Mapping[str, AccessProvider],
    started: StartedFn | None = None,
) -> APIRouter:
    """``started(user_id, job_id)``: the job once its sandbox is created (bounded wait)."""
    router = APIRouter()
    Me = Annotated[Principal, Depends(auth)]

    @router.post("/mags-jobs/{job_id}/access")
    async def access(job_id: str, request: Request, me: Me) -> JSONResponse:
        row = await jobs.get(me.user_id, job_id)  # 404 unless the caller owns it
        body = await read_json_object(request, 4096)
        port = body.get("port", 8080)
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValidationError("port must be an integer between 1 and 65535")
        kind = "ssh" if port == 22 else "url"
        provider = providers.get(kind)
        if provider is None:
            what = "SSH access" if kind == "ssh" else "public URLs"
            raise ValidationError(f"{what} is not enabled on this server")
        if started is not None and row._mapping["vm_status"] in VM_STARTING:
            row = await started(me.user_id, job_id)
        answer = await provider.grant(me, row, port)
        return JSONResponse({"success": True, **answer})

    return router
