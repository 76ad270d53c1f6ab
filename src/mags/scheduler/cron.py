"""The cron scheduler: starts each due tick of every cron job as an ordinary job.

Every ``interval`` seconds (and on :meth:`CronScheduler.wake`) one :meth:`~CronScheduler.tick`:

1. takes over runs another scheduler claimed but never submitted (it died in between);
2. claims each due tick in the database (``scheduler/cron_claim.py``) -- several servers may
   run this loop on one database, each tick is handled once;
3. submits the claimed run exactly like ``POST /mags-jobs``: the cron's fields as a job body,
   validated by ``parse_new_job``, stored and dispatched by ``JobController.submit``;
4. records the outcome in the run's history row (``started`` / ``failed_to_start``).

Time comes from an injected clock, so tests drive schedules without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from mags.api.job_input import parse_new_job
from mags.config import Settings
from mags.core.db import Database
from mags.core.ids import new_request_id
from mags.errors import MagsError
from mags.scheduler.control import JobController
from mags.scheduler.cron_claim import (
    Claim,
    claim_tick,
    due_crons,
    mark_failed,
    mark_started,
    reclaim,
    stale_runs,
)

log = logging.getLogger(__name__)

POLL_S = 1.0
# a claimed run not submitted after this long belongs to a scheduler that died
STALE_CLAIM_S = 60.0
# ticks are noticed up to one poll late (more under load); never let that count as "missed"
MIN_GRACE_S = 10.0
DUE_BATCH = 500
MAX_SUBMITS = 32  # submissions in flight at once (each is a few database transactions)
STOP_WAIT_S = 5.0


@dataclass
class TickReport:
    """What one pass did (for tests and logs)."""

    started: int = 0
    skipped: int = 0
    failed: int = 0
    lost: int = 0
    recovered: int = 0


class CronScheduler:
    """Runs due cron ticks as jobs through ``controller``; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        controller: JobController,
        clock: Callable[[], float],
        *,
        interval: float = POLL_S,
        stale_claim_s: float = STALE_CLAIM_S,
    ) -> None:
        self.settings = settings
        self.db = db
        self.controller = controller
        self.clock = clock
        self.interval = interval
        self.stale_claim_s = stale_claim_s
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._inflight: set[asyncio.Task[None]] = set()
        self._inflight_runs: set[int] = set()
        self._limit = asyncio.Semaphore(MAX_SUBMITS)

    @property
    def grace_s(self) -> float:
        """How late a tick may be and still run (``cron_grace_s``, at least MIN_GRACE_S)."""
        return max(float(self.settings.cron_grace_s), MIN_GRACE_S)

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="mags-cron")

    def wake(self) -> None:
        """Check for due ticks now (a cron job was created or changed)."""
        self._wake.set()

    async def stop(self) -> None:
        """Finish the current pass and its submissions (bounded), then stop.

        A submission still going after STOP_WAIT_S is cancelled; its run stays ``starting``
        and the next start (or another server) takes it over.
        """
        if self._task is None:
            return
        self._stopping = True
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._task), STOP_WAIT_S)
        pending: list[asyncio.Task[None]] = [self._task]
        if self._inflight:
            _, still = await asyncio.wait(set(self._inflight), timeout=STOP_WAIT_S)
            pending.extend(still)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self.tick(wait=False)
            except Exception:  # the database may be briefly unavailable; retried next poll
                log.warning("cron pass failed", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()

    async def tick(self, *, wait: bool = True) -> TickReport:
        """One pass at ``clock()``: recover stale claims, then claim every due tick.

        Claims are made one by one (each a short transaction); the claimed runs are submitted
        concurrently, so one slow submission (a persistent run replacing its workspace's
        previous sandbox waits for that sandbox's final sync) holds back no other cron.  With
        ``wait`` the pass returns once its submissions are done (tests); the loop does not wait.
        """
        now = self.clock()
        grace = self.grace_s
        report = TickReport()
        claims: list[Claim] = []
        for run_id, claimed_at in await self.db.read(stale_runs, now - self.stale_claim_s):
            if run_id in self._inflight_runs:  # ours, and still being submitted
                continue
            claim = await self.db.write(reclaim, run_id, claimed_at, now, grace)
            if claim is not None:
                report.recovered += 1
                log.warning(
                    "cron %s: submitting run %s left unsubmitted by a stopped server",
                    claim.cron_id,
                    claim.request_id,
                )
                claims.append(claim)
        for cron_id, expected in await self.db.read(due_crons, now, DUE_BATCH):
            outcome = await self.db.write(claim_tick, cron_id, expected, now, grace, new_request_id())
            if outcome.kind == "claimed":
                assert outcome.claim is not None
                claims.append(outcome.claim)
            elif outcome.kind == "skipped":
                report.skipped += 1
                log.info("cron %s: %s", cron_id, outcome.reason)
            else:
                report.lost += 1
        tasks = [self._spawn(claim, report) for claim in claims]
        if wait and tasks:
            await asyncio.gather(*tasks)
        return report

    def _spawn(self, claim: Claim, report: TickReport) -> asyncio.Task[None]:
        task = asyncio.create_task(self._submit(claim, report), name=f"mags-cron-run-{claim.run_id}")
        self._inflight.add(task)
        self._inflight_runs.add(claim.run_id)

        def done(t: asyncio.Task[None]) -> None:
            self._inflight.discard(t)
            self._inflight_runs.discard(claim.run_id)

        task.add_done_callback(done)
        return task

    async def _submit(self, claim: Claim, report: TickReport) -> None:
        """Submit a claimed run as a job and record whether it started."""
        async with self._limit:
            await self._submit_now(claim, report)

    async def _submit_now(self, claim: Claim, report: TickReport) -> None:
        try:
            job = dataclasses.replace(parse_new_job(claim.body, self.settings), request_id=claim.request_id)
            done = await self.controller.submit(claim.user_id, job)
        except IntegrityError:
            # the request id exists: another scheduler took this run over and submitted it
            if await self.controller.jobs.get_internal(claim.request_id) is not None:
                await self.db.write(mark_started, claim.run_id, claim.request_id)
                report.started += 1
                return
            await self._failed(claim, "the job could not be stored", report)
        except MagsError as exc:
            await self._failed(claim, f"failed to start: {exc}", report)
        except Exception:  # left `starting`: a later pass retries it while within the grace window
            log.exception("cron %s: submitting run %s failed", claim.cron_id, claim.request_id)
            report.failed += 1
        else:
            # a `sleep infinity` persistent run may be answered with the workspace's live sandbox
            job_id = getattr(done, "request_id", None) or claim.request_id
            reason = (
                None
                if job_id == claim.request_id
                else f"the workspace's live sandbox (job {job_id}) was reused"
            )
            await self.db.write(mark_started, claim.run_id, claim.request_id, job_id, reason)
            report.started += 1

    async def _failed(self, claim: Claim, reason: str, report: TickReport) -> None:
        log.warning("cron %s: run for %s %s", claim.cron_id, claim.scheduled_for, reason)
        await self.db.write(mark_failed, claim.run_id, claim.request_id, reason)
        report.failed += 1
