"""One :class:`~mags.sdk.base.Call` builder per single-request endpoint (CONTRACT.md table)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mags.errors import ValidationError
from mags.sdk.base import Call, check_id, check_port


def submit_job(payload: dict[str, Any]) -> Call:
    return Call("POST", "/mags-jobs", json=payload)


def list_jobs(page: int, page_size: int) -> Call:
    if page < 1 or page_size < 1:
        raise ValidationError("page and page_size must be >= 1")
    return Call("GET", "/mags-jobs", params={"page": page, "page_size": page_size})


def job_status(request_id: str) -> Call:
    return Call("GET", f"/mags-jobs/{check_id('request_id', request_id)}/status")


def enable_access(request_id: str, port: int) -> Call:
    check_port(port)
    return Call("POST", f"/mags-jobs/{check_id('request_id', request_id)}/access", json={"port": port})


def usage(window_days: int) -> Call:
    return Call("GET", "/mags-jobs/usage", params={"window_days": window_days})


def upload(file_path: str | Path) -> Call:
    path = Path(file_path)
    if not path.is_file():
        raise ValidationError(f"no such file: {file_path}")
    return Call("POST", "/mags-files", upload=path)


def list_workspaces() -> Call:
    return Call("GET", "/mags-workspaces")


def delete_workspace(workspace_id: str, force: bool = False) -> Call:
    params = {"force": "true"} if force else None  # the published SDK sends none
    return Call("DELETE", f"/mags-workspaces/{check_id('workspace_id', workspace_id)}", params=params)


def url_alias_create(subdomain: str, workspace_id: str, domain: str | None) -> Call:
    body: dict[str, Any] = {
        "subdomain": check_id("subdomain", subdomain),
        "workspace_id": check_id("workspace_id", workspace_id),
    }
    if domain:
        body["domain"] = domain
    return Call("POST", "/mags-url-aliases", json=body)


def url_alias_list() -> Call:
    return Call("GET", "/mags-url-aliases")


def url_alias_delete(subdomain: str) -> Call:
    return Call("DELETE", f"/mags-url-aliases/{check_id('subdomain', subdomain)}")


def cron_create(payload: dict[str, Any]) -> Call:
    return Call("POST", "/mags-cron", json=payload)


def cron_list() -> Call:
    return Call("GET", "/mags-cron")


def cron_get(cron_id: str) -> Call:
    return Call("GET", f"/mags-cron/{check_id('cron_id', cron_id)}")


def cron_update(cron_id: str, updates: dict[str, Any]) -> Call:
    if not updates:
        raise ValidationError("nothing to update")
    return Call("PATCH", f"/mags-cron/{check_id('cron_id', cron_id)}", json=updates)


def cron_delete(cron_id: str) -> Call:
    return Call("DELETE", f"/mags-cron/{check_id('cron_id', cron_id)}")


def whoami() -> Call:
    return Call("GET", "/whoami")


def token_create(name: str | None, user: str | None, admin: bool) -> Call:
    body: dict[str, Any] = {"admin": bool(admin)}
    if name:
        body["name"] = name
    if user:
        body["user"] = user
    return Call("POST", "/tokens", json=body)


def token_list() -> Call:
    return Call("GET", "/tokens")


def token_revoke(token_id: str) -> Call:
    return Call("DELETE", f"/tokens/{check_id('token_id', token_id)}")


def follow_params(last_seq: int) -> dict[str, str]:
    """Query of the log stream; ``after`` lets a server skip what a re-connecting client has."""
    params = {"follow": "true"}
    if last_seq >= 0:
        params["after"] = str(last_seq)
    return params
