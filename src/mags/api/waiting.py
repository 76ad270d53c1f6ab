"""Waiting for a job to change: long-poll and log-follow loops on the job notifier."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy.engine import Row

from mags.core.jobs import JobStore
from mags.core.notify import RECHECK_S, JobNotifier, wait_until
from mags.core.render import job_json, log_json
from mags.core.states import script_done

KEEPALIVE_S = 15.0
FOLLOW_PAGE = 1000


async def wait_for_status(
    jobs: JobStore, notifier: JobNotifier, user_id: int, job_id: str, wait: float, until: frozenset[str]
) -> Row[Any]:
    """The job once its status is in ``until``, or as it is after ``wait`` seconds."""
    return await wait_until(
        notifier, job_id, lambda: jobs.get(user_id, job_id), lambda row: row._mapping["status"] in until, wait
    )


def _sse(event: str, data: Any, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def follow_logs(
    jobs: JobStore, notifier: JobNotifier, user_id: int, job_id: str, after: int
) -> AsyncIterator[str]:
    """Server-sent events: ``log`` per line, then ``end`` with the job once its script is done."""
    while True:
        fut = notifier.subscribe(job_id)
        try:
            rows = await jobs.logs(job_id, after, FOLLOW_PAGE)
            for r in rows:
                after = r._mapping["seq"]
                yield _sse("log", log_json(r), after)
            if len(rows) == FOLLOW_PAGE:
                continue
            job = await jobs.get(user_id, job_id)
            if script_done(job) or notifier.closed:
                # lines committed together with the exit may have landed after our read
                for r in await jobs.logs(job_id, after):
                    after = r._mapping["seq"]
                    yield _sse("log", log_json(r), after)
                yield _sse("end", job_json(job))
                return
            waited = 0.0
            while not await notifier.wait(fut, RECHECK_S):
                waited += RECHECK_S
                if waited >= KEEPALIVE_S:
                    yield ": keepalive\n\n"
                    break
                if await _changed(jobs, user_id, job_id, after):
                    break
        finally:
            notifier.unsubscribe(job_id, fut)


async def _changed(jobs: JobStore, user_id: int, job_id: str, after: int) -> bool:
    """Cheap cross-process check: is there anything new to send?"""
    if await jobs.logs(job_id, after, 1):
        return True
    return script_done(await jobs.get(user_id, job_id))
