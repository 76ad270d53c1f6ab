"""``/mags-jobs``: submit, list, status (long-poll), logs (follow), update, stop, exec, sync, usage."""

# No `from __future__ import annotations` here: FastAPI must see the route annotations
# (the local `Me` alias) as objects, not strings it cannot resolve.

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse

from mags.api.job_input import parse_exec, parse_job_update, parse_new_job
from mags.api.params import query_bool, query_float, query_int, read_json_object
from mags.api.waiting import follow_logs, wait_for_status
from mags.config import Settings
from mags.core.notify import JobNotifier
from mags.core.render import event_json, job_json, log_json
from mags.core.states import JobStatus
from mags.core.tokens import Principal
from mags.errors import ValidationError
from mags.scheduler.control import JobController

MAX_WAIT_S = 60.0
# a submit's own wait stays short: a POST cut off while it waits cannot be retried safely
MAX_SUBMIT_WAIT_S = 10.0
MAX_PAGE_SIZE = 500
DEFAULT_UNTIL = frozenset({JobStatus.COMPLETED.value, JobStatus.ERROR.value})
_STATUSES = frozenset(s.value for s in JobStatus)


def _parse_until(request: Request) -> frozenset[str]:
    raw = request.query_params.get("until")
    if not raw:
        return DEFAULT_UNTIL
    wanted = frozenset(s.strip() for s in raw.split(",") if s.strip())
    bad = sorted(wanted - _STATUSES)
    if bad or not wanted:
        raise ValidationError(f"until must be a comma-separated list of: {', '.join(sorted(_STATUSES))}")
    return wanted


def jobs_router(
    settings: Settings,
    controller: JobController,
    notifier: JobNotifier,
    auth: Callable[[Request], Awaitable[Principal]],
) -> APIRouter:
    router = APIRouter()
    Me = Annotated[Principal, Depends(auth)]
    jobs = controller.jobs
    # room for a maximal script plus JSON escaping and the other fields
    body_limit = 2 * settings.max_script_bytes + 512 * 1024
    max_log_rows = settings.max_log_lines + 1

    async def status_answer(
        job_id: str, request: Request, user_id: int, wait: float, until: frozenset[str]
    ) -> dict[str, object]:
        """A job's status (after a long-poll when ``wait`` > 0), with its logs if asked and done."""
        if wait > 0:
            row = await wait_for_status(jobs, notifier, user_id, job_id, wait, until)
            history = await jobs.history(job_id)
        else:
            row, history = await jobs.get_with_history(user_id, job_id)
        out = job_json(row)
        out["history"] = [event_json(e) for e in history]
        if request.query_params.get("include") == "logs" and out["status"] in DEFAULT_UNTIL:
            # run_and_wait's last two requests in one: the finished job with its output
            rows = await jobs.logs(job_id, 0, max_log_rows + 1)
            out["logs"] = [log_json(r) for r in rows[:max_log_rows]]
            out["logs_has_more"] = len(rows) > max_log_rows
        return out

    @router.post("/mags-jobs")
    async def submit(request: Request, me: Me) -> JSONResponse:
        # ?wait=S (a mags extension): answer with the job's status once it finished, or after
        # S seconds -- submit and long-poll in one request (SDK run_and_wait, short jobs)
        wait = query_float(request, "wait", 0.0, 0.0, MAX_SUBMIT_WAIT_S)
        job = parse_new_job(await read_json_object(request, body_limit), settings)
        done = await controller.submit(me.user_id, job)
        if done.existing:  # a `new` for a workspace whose sandbox is alive: that one
            return JSONResponse({"request_id": done.request_id, "status": "accepted", "existing": True})
        if wait > 0:
            return JSONResponse(await status_answer(done.request_id, request, me.user_id, wait, DEFAULT_UNTIL))
        return JSONResponse({"request_id": done.request_id, "status": "accepted"})

    @router.get("/mags-jobs")
    async def list_jobs(request: Request, me: Me) -> JSONResponse:
        page = query_int(request, "page", 1, 1, 1_000_000)
        page_size = query_int(request, "page_size", 20, 1, MAX_PAGE_SIZE)
        rows, total = await jobs.list(me.user_id, page, page_size)
        return JSONResponse(
            {"jobs": [job_json(r) for r in rows], "total": total, "page": page, "page_size": page_size}
        )

    @router.get("/mags-jobs/usage")
    async def usage(request: Request, me: Me) -> JSONResponse:
        window_days = query_int(request, "window_days", 30, 1, 3650)
        return JSONResponse(await jobs.usage(me.user_id, window_days))

    @router.get("/mags-jobs/{job_id}/status")
    async def status(job_id: str, request: Request, me: Me) -> JSONResponse:
        wait = query_float(request, "wait", 0.0, 0.0, MAX_WAIT_S)
        until = _parse_until(request)
        return JSONResponse(await status_answer(job_id, request, me.user_id, wait, until))

    @router.get("/mags-jobs/{job_id}/logs", response_model=None)
    async def logs(job_id: str, request: Request, me: Me) -> JSONResponse | StreamingResponse:
        await jobs.get(me.user_id, job_id)  # 404 unless the caller owns it
        after = query_int(request, "after", 0, 0, 2**31 - 1)
        if query_bool(request, "follow"):
            last_id = request.headers.get("last-event-id", "")
            if last_id.isdigit():  # an EventSource reconnecting
                after = max(after, int(last_id))
            return StreamingResponse(
                follow_logs(jobs, notifier, me.user_id, job_id, after),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        limit = query_int(request, "limit", max_log_rows, 1, max_log_rows)
        rows = await jobs.logs(job_id, after, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        next_after = rows[-1]._mapping["seq"] if rows else after
        return JSONResponse({"logs": [log_json(r) for r in rows], "has_more": more, "next_after": next_after})

    @router.patch("/mags-jobs/{job_id}")
    async def update(job_id: str, request: Request, me: Me) -> JSONResponse:
        row = await jobs.get(me.user_id, job_id)
        body = await read_json_object(request, body_limit)
        values = parse_job_update(body, settings, persistent=bool(row._mapping["persistent"]))
        return JSONResponse(job_json(await controller.update_settings(me.user_id, job_id, values)))

    @router.post("/mags-jobs/{job_id}/stop")
    async def stop(job_id: str, me: Me) -> JSONResponse:
        row = await controller.stop(me.user_id, job_id)
        return JSONResponse({"success": True, **job_json(row)})

    @router.post("/mags-jobs/{job_id}/exec")
    async def exec_(job_id: str, request: Request, me: Me) -> JSONResponse:
        await jobs.get(me.user_id, job_id)  # 404 before looking at the body
        command, timeout = parse_exec(await read_json_object(request, body_limit), settings)
        res = await controller.exec(me.user_id, job_id, command, timeout)
        answer: dict[str, object] = {
            "exit_code": res.exit_code,
            "stdout": res.stdout,
            "stderr": res.stderr,
            "timed_out": res.timed_out,
        }
        if res.truncated:  # each stream holds at most max_exec_output_bytes; the rest was dropped
            answer |= {
                "truncated": True,
                "stdout_truncated": res.stdout_truncated,
                "stderr_truncated": res.stderr_truncated,
            }
        return JSONResponse(answer)

    @router.post("/mags-jobs/{job_id}/sync")
    async def sync(job_id: str, me: Me) -> JSONResponse:
        res, commit = await controller.sync(me.user_id, job_id)
        return JSONResponse(
            {
                "success": True,
                "request_id": job_id,
                "workspace_id": (await jobs.get(me.user_id, job_id))._mapping["workspace_id"],
                "snapshot_id": commit.head,
                "changed": res.changed and commit.outcome == "committed",
                "generation": commit.generation,
                "bytes_uploaded": res.bytes_uploaded,
                "files": res.files,
                "seconds": res.seconds,
            }
        )

    return router
