"""Multi-request operations as step generators, shared by ``Mags`` and ``AsyncMags``.

Each flow yields :class:`~mags.sdk.base.Call` (answered with the decoded JSON),
:class:`~mags.sdk.base.Sleep` (answered with ``None``) or :class:`~mags.sdk.base.Emit`
(streaming flows only) and returns its result.  No I/O happens here.
"""

from __future__ import annotations

import math
import time
from typing import Any

from mags.errors import ClientError
from mags.sdk.base import (
    ALIVE,
    LIST_PAGE_SIZE,
    MAX_LIST_PAGES,
    MAX_LONG_POLL_S,
    STARTED,
    SUBMIT_WAIT_S,
    TERMINAL,
    Call,
    Emit,
    Flow,
    LogDeduper,
    Sleep,
    StreamEvent,
    check_id,
    check_port,
    exec_result,
    is_alive,
    job_id_of,
    looks_like_job_id,
    not_found,
    pick_job,
    run_result,
)


def single(call: Call) -> Flow[Any]:
    """A flow of exactly one request."""
    return (yield call)


def status_call(
    request_id: str, *, wait: int = 0, until: tuple[str, ...] = TERMINAL, with_logs: bool = False
) -> Call:
    """``GET /mags-jobs/{id}/status``, long-polling when ``wait`` > 0.

    ``with_logs`` asks a mags server to add the logs once the job finished (other servers
    ignore the parameter; the caller then fetches them).
    """
    params: dict[str, Any] | None = {"wait": wait, "until": ",".join(until)} if wait > 0 else None
    if with_logs:
        params = {**(params or {}), "include": "logs"}
    return Call("GET", f"/mags-jobs/{request_id}/status", params=params, extra_timeout=float(wait))


def wait_status(
    request_id: str,
    until: tuple[str, ...],
    *,
    timeout: float | None,
    poll_interval: float,
    with_logs: bool = False,
) -> Flow[dict[str, Any]]:
    """Return the job's status once it is in ``until``, or the last one seen at the deadline.

    Uses the server's long-poll, so a job that finishes in 10 ms is seen in ~10 ms.  An older
    server ignores ``wait`` and answers at once; then we fall back to polling every
    ``poll_interval`` seconds.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        remaining = MAX_LONG_POLL_S if deadline is None else deadline - time.monotonic()
        wait = max(1, min(MAX_LONG_POLL_S, math.ceil(remaining)))
        started = time.monotonic()
        status = yield status_call(request_id, wait=wait, until=until, with_logs=with_logs)
        if status.get("status") in until:
            return status
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return status
        if now - started < wait * 0.5:  # answered early without reaching `until`: no long-poll
            pause = poll_interval if deadline is None else min(poll_interval, max(0.0, deadline - now))
            yield Sleep(pause)


def all_logs(request_id: str) -> Flow[dict[str, Any]]:
    """``{"logs": [...]}`` with every entry: follows ``has_more``/``next_after`` pages."""
    entries: list[dict[str, Any]] = []
    after: Any = None
    while True:
        params = {"after": after} if after is not None else None
        page = yield Call("GET", f"/mags-jobs/{request_id}/logs", params=params)
        entries.extend(page.get("logs") or [])
        following = page.get("next_after")
        if not page.get("has_more") or following is None or following == after:
            return {"logs": entries}
        after = following


def wait_result(
    request_id: str, *, timeout: float | None, poll_interval: float, spent: float = 0.0
) -> Flow[dict[str, Any]]:
    """Wait for a job's script to finish; return ``request_id, status, exit_code, duration_ms, logs``.

    ``spent``: seconds of ``timeout`` already used (by the submit's own wait).
    """
    left = None if timeout is None else max(0.0, timeout - spent)
    status = yield from wait_status(
        request_id, TERMINAL, timeout=left, poll_interval=poll_interval, with_logs=True
    )
    if status.get("status") not in TERMINAL:
        raise ClientError(
            f"job {request_id} did not finish within {timeout:g}s (status: {status.get('status')})",
            status_code=408,
        )
    return (yield from _result(request_id, status))


def _result(request_id: str, status: dict[str, Any]) -> Flow[dict[str, Any]]:
    """A finished job's result: its logs from the status answer, or fetched."""
    if isinstance(status.get("logs"), list) and not status.get("logs_has_more"):
        logs = {"logs": status.pop("logs")}
    else:
        logs = yield from all_logs(request_id)
    status.pop("logs", None)
    status.pop("logs_has_more", None)
    return run_result(request_id, status, logs)


def run_and_wait(payload: dict[str, Any], *, timeout: float | None, poll_interval: float) -> Flow[dict]:
    """Submit a job and wait for its result.

    The submit itself asks a mags server to wait a little (``?wait=``): a short job's result
    comes back in that one request.  Otherwise (a longer job, or a server without the
    extension, which answers ``accepted`` at once) we long-poll its status.
    """
    started = time.monotonic()
    wait = SUBMIT_WAIT_S if timeout is None else min(SUBMIT_WAIT_S, timeout)
    params = {"wait": f"{wait:g}", "include": "logs"} if wait > 0 else None
    submitted = yield Call("POST", "/mags-jobs", json=payload, params=params, extra_timeout=wait)
    request_id = job_id_of(submitted)
    if submitted.get("status") in TERMINAL:
        return (yield from _result(request_id, submitted))
    spent = time.monotonic() - started if wait > 0 else 0.0
    return (yield from wait_result(request_id, timeout=timeout, poll_interval=poll_interval, spent=spent))


def new(
    name: str,
    payload: dict[str, Any],
    *,
    timeout: float,
    poll_interval: float,
) -> Flow[dict[str, Any]]:
    """Submit a ``sleep infinity`` sandbox and wait until it runs with a ``vm_id``."""
    submitted = yield Call("POST", "/mags-jobs", json=payload)
    request_id = job_id_of(submitted)
    deadline = time.monotonic() + timeout
    backoff = 0.02
    status = yield from wait_status(request_id, STARTED, timeout=timeout, poll_interval=poll_interval)
    while True:
        state = status.get("status")
        if state in TERMINAL:
            why = status.get("error_message") or f"it ended with status {state}"
            raise ClientError(f"sandbox '{name}' ({request_id}) failed to start: {why}", status_code=500)
        if state in ALIVE and status.get("vm_id"):
            return {
                "request_id": request_id,
                "status": state,
                "workspace_id": status.get("workspace_id", name),
                "vm_id": status.get("vm_id"),
            }
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ClientError(
                f"sandbox '{name}' ({request_id}) did not start within {timeout:g}s", status_code=408
            )
        if state in ALIVE:  # running but not yet bound to a VM: re-check shortly
            yield Sleep(min(backoff, poll_interval, remaining))
            backoff *= 2
            status = yield status_call(request_id)
        else:
            status = yield from wait_status(
                request_id, STARTED, timeout=remaining, poll_interval=poll_interval
            )


def find_job(name_or_id: str) -> Flow[dict[str, Any] | None]:
    """Find a job by id, name or workspace (see :func:`mags.sdk.base.pick_job`); ``None`` if none."""
    check_id("name_or_id", name_or_id)
    if looks_like_job_id(name_or_id):
        job = yield Call("GET", f"/mags-jobs/{name_or_id}/status", not_found_ok=True)
        if job is not None:
            job.setdefault("request_id", name_or_id)
            return job
    jobs: list[dict[str, Any]] = []
    for page in range(1, MAX_LIST_PAGES + 1):
        data = yield Call("GET", "/mags-jobs", params={"page": page, "page_size": LIST_PAGE_SIZE})
        batch = list(data.get("jobs") or [])
        jobs.extend(batch)
        hit = pick_job(jobs, name_or_id, alive_only=True)
        if hit is not None:
            return hit
        total = data.get("total")
        page_size = data.get("page_size") or LIST_PAGE_SIZE
        if len(batch) < page_size or (isinstance(total, int) and len(jobs) >= total):
            break
    return pick_job(jobs, name_or_id)


def resolve_id(name_or_id: str) -> Flow[str]:
    """A job id for ``name_or_id``; ids are used as they are, without a request."""
    check_id("name_or_id", name_or_id)
    if looks_like_job_id(name_or_id):
        return name_or_id
    job = yield from find_job(name_or_id)
    if job is None:
        raise not_found(name_or_id)
    return job_id_of(job)


def post_to_job(name_or_id: str, action: str) -> Flow[dict[str, Any]]:
    """Resolve, then ``POST /mags-jobs/{id}/<action>`` (stop, sync)."""
    request_id = yield from resolve_id(name_or_id)
    return (yield Call("POST", f"/mags-jobs/{request_id}/{action}"))


def exec_(name_or_id: str, command: str, *, timeout: float) -> Flow[dict[str, Any]]:
    """Run ``command`` in a live sandbox; return ``exit_code, output, stderr``."""
    if looks_like_job_id(name_or_id):
        request_id = name_or_id
    else:
        job = yield from find_job(name_or_id)
        if job is None:
            raise ClientError(f"no running or sleeping sandbox found for '{name_or_id}'", status_code=404)
        if not is_alive(job):
            raise ClientError(
                f"sandbox '{name_or_id}' is {job.get('status')}, needs to be running or sleeping "
                f"(start it with `mags new {name_or_id}`)",
                status_code=409,
            )
        request_id = job_id_of(job)
    answer = yield Call(
        "POST",
        f"/mags-jobs/{request_id}/exec",
        json={"command": command, "timeout": timeout},
        extra_timeout=float(timeout),
    )
    return exec_result(answer)


def update_job(name_or_id: str, body: dict[str, Any]) -> Flow[dict[str, Any]]:
    """Resolve, then ``PATCH /mags-jobs/{id}``."""
    request_id = yield from resolve_id(name_or_id)
    return (yield Call("PATCH", f"/mags-jobs/{request_id}", json=body))


def url(name_or_id: str, *, port: int) -> Flow[dict[str, Any]]:
    """Resolve, then enable public URL access on ``port``."""
    check_port(port)
    request_id = yield from resolve_id(name_or_id)
    return (yield Call("POST", f"/mags-jobs/{request_id}/access", json={"port": port}))


def resize(
    workspace: str,
    new_payload: dict[str, Any],
    *,
    timeout: float,
    poll_interval: float,
) -> Flow[dict[str, Any]]:
    """Stop the workspace's live sandbox (the server syncs it first), then start a bigger one."""
    existing = yield from find_job(workspace)
    if existing is not None and is_alive(existing):
        request_id = job_id_of(existing)
        yield Call("POST", f"/mags-jobs/{request_id}/stop")
        yield from wait_status(request_id, TERMINAL, timeout=timeout, poll_interval=poll_interval)
    return (yield from new(workspace, new_payload, timeout=timeout, poll_interval=poll_interval))


def poll_logs(
    request_id: str,
    dedupe: LogDeduper,
    *,
    initial: dict[str, Any] | None,
    poll_interval: float,
) -> Flow[None]:
    """Follow a job without server-sent events (older server): emit new entries, then ``end``."""
    if initial is not None:
        dedupe.restart()
        for entry in initial.get("logs") or []:
            if dedupe.accept(entry):
                yield Emit(StreamEvent("log", entry))
    while True:
        started = time.monotonic()
        status = yield status_call(request_id, wait=1)
        finished = status.get("status") in TERMINAL
        logs = yield from all_logs(request_id)
        dedupe.restart()
        for entry in logs.get("logs") or []:
            if dedupe.accept(entry):
                yield Emit(StreamEvent("log", entry))
        if finished:
            yield Emit(StreamEvent("end", status))
            return
        if time.monotonic() - started < 0.5:
            yield Sleep(poll_interval)
