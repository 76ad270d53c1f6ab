"""``GET /health``: liveness, no authentication."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import JSONResponse


def health_router(version: str) -> APIRouter:
    router = APIRouter()

    @router.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok", "version": version})

    return router
