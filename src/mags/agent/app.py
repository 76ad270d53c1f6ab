"""The agent's HTTP API (see agent/models.py for the endpoint list)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse

from mags.agent.models import ExecRequest, ResizeRequest, SandboxRequest, SandboxSettings, StopRequest
from mags.agent import attach as attach_mod
from mags.agent.service import AgentService
from mags.errors import MagsError


def create_agent_app(service: AgentService) -> FastAPI:
    app = FastAPI(title="mags agent", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(MagsError)
    async def _mags_error(_: Request, exc: MagsError) -> JSONResponse:
        return JSONResponse({"error": str(exc), "type": type(exc).__name__}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "bad request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return JSONResponse({"error": f"{where}: {first.get('msg')}"}, status_code=400)

    @app.get("/v1/health")
    async def health() -> dict[str, object]:
        return service.health().model_dump()

    @app.post("/v1/sandboxes")
    async def create(req: SandboxRequest) -> dict[str, object]:
        return (await service.create(req)).model_dump()

    @app.get("/v1/sandboxes")
    async def list_() -> dict[str, object]:
        return {"sandboxes": [i.model_dump() for i in service.list()]}

    @app.get("/v1/sandboxes/{sandbox_id}")
    async def get(sandbox_id: str) -> dict[str, object]:
        return service.get(sandbox_id).model_dump()

    @app.post("/v1/sandboxes/{sandbox_id}/exec")
    async def exec_(sandbox_id: str, req: ExecRequest) -> dict[str, object]:
        return (await service.exec(sandbox_id, req)).model_dump()

    @app.post("/v1/sandboxes/{sandbox_id}/stop")
    async def stop(sandbox_id: str, req: StopRequest | None = None) -> dict[str, object]:
        return (await service.stop(sandbox_id, req or StopRequest())).model_dump()

    @app.post("/v1/sandboxes/{sandbox_id}/sync")
    async def sync(sandbox_id: str) -> dict[str, object]:
        return (await service.sync(sandbox_id)).model_dump()

    @app.post("/v1/sandboxes/{sandbox_id}/wake")
    async def wake(sandbox_id: str) -> dict[str, object]:
        await service.wake(sandbox_id)
        return service.get(sandbox_id).model_dump()

    @app.post("/v1/sandboxes/{sandbox_id}/touch")
    async def touch(sandbox_id: str) -> dict[str, object]:
        service.touch(sandbox_id)
        return {}

    @app.post("/v1/sandboxes/{sandbox_id}/settings")
    async def settings_(sandbox_id: str, req: SandboxSettings) -> dict[str, object]:
        return (await service.update(sandbox_id, req)).model_dump()

    @app.websocket("/v1/sandboxes/{sandbox_id}/attach")
    async def attach(ws: WebSocket, sandbox_id: str) -> None:
        await attach_mod.attach(service, sandbox_id, ws)

    @app.websocket("/v1/sandboxes/{sandbox_id}/connect")
    async def connect(ws: WebSocket, sandbox_id: str, port: int) -> None:
        await attach_mod.connect(service, sandbox_id, port, ws)

    @app.get("/v1/workspaces")
    async def workspaces() -> dict[str, object]:
        return {"workspaces": [w.model_dump() for w in service.workspaces.list()]}

    @app.post("/v1/workspaces/{workspace_id}/resize")
    async def resize(workspace_id: str, req: ResizeRequest) -> dict[str, object]:
        return (await service.resize_workspace(workspace_id, req.disk_gb)).model_dump()

    @app.delete("/v1/workspaces/{workspace_id}")
    async def delete_workspace(workspace_id: str) -> dict[str, object]:
        await service.delete_workspace(workspace_id)
        return {}

    @app.get("/v1/events")
    async def events(after: int = 0) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            async for batch in service.events.follow(after):
                if not batch:
                    yield b"\n"  # heartbeat
                    continue
                yield b"".join(ev.model_dump_json(exclude_none=True).encode() + b"\n" for ev in batch)

        return StreamingResponse(body(), media_type="application/x-ndjson")

    return app
