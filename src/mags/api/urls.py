"""Public URLs on the API side: the ``url`` access provider and ``/mags-url-aliases``.

The traffic itself goes through the edge proxy (``mags.proxy``), never through this app.
"""

# No `from __future__ import annotations`: FastAPI must see the route annotations as objects.

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse

from mags.api.auth import make_auth
from mags.api.job_input import NAME_RE
from mags.api.params import read_json_object, reject_unknown
from mags.config import Settings
from mags.core.db import Database
from mags.core.tokens import Principal, TokenStore
from mags.core.urls import UrlStore, alias_json, check_alias_name
from mags.errors import Conflict, ValidationError

API_PREFIX = "/api/v1"
ALIAS_FIELDS = frozenset({"subdomain", "workspace_id", "domain"})
ENDED = ("stopping", "stopped")


class UrlAccessProvider:
    """``POST /mags-jobs/{id}/access`` for any port but 22: enable the job's public URL."""

    def __init__(self, settings: Settings, store: UrlStore) -> None:
        self.settings = settings
        self.store = store

    async def grant(self, principal: Principal, job: Any, port: int) -> dict[str, Any]:
        m = job._mapping
        if not m["persistent"]:
            # an ephemeral sandbox ends with its script and cannot be woken by a request
            raise ValidationError("public URLs need a persistent sandbox: run it with -p (mags run -p --url ...)")
        if m["vm_status"] in ENDED:
            raise Conflict(f"job {m['request_id']} is stopped; start a new one to get a URL")
        enabled = await self.store.enable(principal.user_id, m["request_id"], port)
        sub = enabled["subdomain"]
        return {
            "url": self.settings.app_url(sub),
            "subdomain": sub,
            "port": port,
            # stable per-port URL: keeps serving this port when another port is enabled later
            "port_url": self.settings.app_url(f"{sub}-{port}"),
            "ports": enabled["ports"],
        }


# The hosted service's app domains: the published SDK's url_alias_create() always sends the
# first one.  Here they mean "this server's default apps domain", so that call works unchanged.
HOSTED_APPS_DOMAINS = frozenset({"apps.magpiecloud.com", "app.lfg.run"})


def alias_domain(settings: Settings, value: Any) -> str:
    """The served domain an alias request names: one of ours, else the default; 400 otherwise."""
    if value is None or value == "":
        return settings.apps_domain
    if not isinstance(value, str):
        raise ValidationError("domain must be a string")
    domain = value.strip().strip(".").lower()
    served = settings.served_apps_domains
    if domain in served:
        return domain
    if domain in HOSTED_APPS_DOMAINS:
        return settings.apps_domain
    raise ValidationError(
        f"domain {value!r} is not served here: use one of {', '.join(served)} "
        f"(or leave it out for {settings.apps_domain})",
        code="domain_not_served",
    )


def aliases_router(
    settings: Settings, store: UrlStore, auth: Callable[[Request], Awaitable[Principal]]
) -> APIRouter:
    router = APIRouter()
    Me = Annotated[Principal, Depends(auth)]

    def render(row: Any) -> dict[str, Any]:
        m = row._mapping
        return alias_json(row, settings.app_url(m["subdomain"], m["domain"]))

    @router.post("/mags-url-aliases")
    async def create(request: Request, me: Me) -> JSONResponse:
        body = await read_json_object(request, 4096)
        reject_unknown(body, ALIAS_FIELDS)
        name = check_alias_name(body.get("subdomain"))
        workspace_id = body.get("workspace_id")
        if not isinstance(workspace_id, str) or not NAME_RE.fullmatch(workspace_id):
            raise ValidationError("workspace_id must be the name of one of your workspaces")
        domain = alias_domain(settings, body.get("domain"))
        row = await store.create_alias(me.user_id, name, workspace_id, domain)
        return JSONResponse({"success": True, **render(row)})

    @router.get("/mags-url-aliases")
    async def list_aliases(me: Me) -> JSONResponse:
        rows = await store.list_aliases(me.user_id)
        return JSONResponse({"aliases": [render(r) for r in rows], "total": len(rows)})

    @router.delete("/mags-url-aliases/{subdomain}")
    async def delete(subdomain: str, me: Me) -> JSONResponse:
        row = await store.delete_alias(me.user_id, subdomain.strip().lower())
        return JSONResponse({"success": True, **render(row)})

    return router


def install_urls(
    app: FastAPI, settings: Settings, db: Database, tokens: TokenStore, clock: Callable[[], float]
) -> UrlStore:
    """Add the URL access provider and the alias routes to an app made by ``create_app``."""
    store = UrlStore(db, clock)
    app.state.access_providers["url"] = UrlAccessProvider(settings, store)
    app.include_router(aliases_router(settings, store, make_auth(tokens)), prefix=API_PREFIX)
    app.state.url_store = store  # an embedded proxy listens to its changes
    return store
