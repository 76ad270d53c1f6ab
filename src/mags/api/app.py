"""``create_app``: the FastAPI application, built from its collaborators (no globals)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI

from mags.api.access import AccessProvider, access_router
from mags.api.auth import make_auth
from mags.api.cron import cron_router
from mags.api.errors import install_error_handlers
from mags.api.files import files_router
from mags.api.health import health_router
from mags.api.jobs import jobs_router
from mags.api.tokens import tokens_router
from mags.api.workspaces import workspaces_router
from mags.config import Settings
from mags.core.cron import CronStore
from mags.core.db import Database
from mags.core.notify import JobNotifier
from mags.core.tokens import TokenStore
from mags.core.workspace_upkeep import WorkspaceUpkeep
from mags.scheduler.control import JobController
from mags.scheduler.workspace_admin import WorkspaceAdmin
from mags.scheduler.workspace_release import WorkspaceRelease

API_PREFIX = "/api/v1"


def mags_version() -> str:
    try:
        return version("mags")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0"


def create_app(
    settings: Settings,
    db: Database,
    controller: JobController,
    notifier: JobNotifier,
    *,
    tokens: TokenStore | None = None,
    access_providers: dict[str, AccessProvider] | None = None,
    workspace_admin: WorkspaceAdmin | None = None,
) -> FastAPI:
    """The REST API (``/api/v1``) over ``db``; jobs are submitted and stopped via ``controller``."""
    tokens = tokens or TokenStore(db, controller.clock)
    ver = mags_version()
    app = FastAPI(
        title="mags",
        version=ver,
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        openapi_url=f"{API_PREFIX}/openapi.json",
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app)
    auth = make_auth(tokens)
    app.include_router(health_router(ver), prefix=API_PREFIX)
    app.include_router(tokens_router(tokens, auth), prefix=API_PREFIX)
    app.include_router(jobs_router(settings, controller, notifier, auth), prefix=API_PREFIX)
    app.include_router(cron_router(settings, CronStore(db, controller.clock), auth), prefix=API_PREFIX)
    app.include_router(files_router(controller.files, auth), prefix=API_PREFIX)
    if workspace_admin is None:
        upkeep = WorkspaceUpkeep(db, controller.clock)
        release = WorkspaceRelease(upkeep, controller)
        lock = controller.admission.lock
        workspace_admin = WorkspaceAdmin(upkeep, controller.registry, None, lock, release)
    admin = workspace_admin
    app.include_router(workspaces_router(settings, admin.workspaces, admin, auth), prefix=API_PREFIX)
    # filled by the SSH gateway ("ssh") and the edge proxy ("url") when they are enabled
    providers: dict[str, AccessProvider] = access_providers if access_providers is not None else {}
    app.include_router(
        access_router(controller.jobs, auth, providers, started=controller.wait_started), prefix=API_PREFIX
    )
    app.state.access_providers = providers
    app.state.settings = settings
    app.state.tokens = tokens
    app.state.workspace_admin = admin
    return app
