"""The state applier: applies :class:`Change` batches to the database, then wakes waiters.

One task drains a queue.  Whatever is queued when it looks becomes one write transaction:
the touched jobs are read once, every change runs through the state machine
(:class:`~mags.core.states.JobState`), and the result is written as one UPDATE per job, one
multi-row INSERT of log lines and one of ``job_events``.  While that transaction runs the next
batch accumulates, so under load transactions grow instead of queueing up.

Because log lines and the ``exit`` that follows them travel through the same queue, a job is
never marked finished before its earlier output is stored.  Likewise a ``synced`` event (a
workspace snapshot to commit, see ``core/workspaces.py``) is committed before the ``state:
stopped`` the agent sends after it, so once a job's sandbox shows ``stopped`` its final sync is
the workspace's head; :meth:`StateApplier.expect_agent_stop` lets a stopper wait for that.

Log rows are capped per job in lines (``max_log_lines``) and bytes (``max_log_bytes``, counted
as in ``core/logcap.py``), here where they are written, whatever an agent sends.  The bytes a
job already stored are remembered per job (read once from ``job_logs`` after a restart).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Connection, LargeBinary, cast, func, insert, select, update

from mags.core.db import Database
from mags.core.logcap import TRUNCATED_KEY, cut_text, line_bytes, truncation_message, truncation_reason
from mags.core.notify import JobNotifier
from mags.core.schema import job_events, job_logs, jobs
from mags.core.states import IllegalTransition, JobState, VmStatus
from mags.core.workspaces import SyncCommit, commit_sync, jobs_ended
from mags.scheduler.changes import Change
from mags.scheduler.transitions import apply_change

log = logging.getLogger(__name__)

_STATE_COLUMNS = (
    jobs.c.request_id,
    jobs.c.status,
    jobs.c.vm_status,
    jobs.c.persistent,
    jobs.c.finished_at,
    jobs.c.started_at,
    jobs.c.exit_code,
    jobs.c.stop_reason,
    jobs.c.log_count,
    jobs.c.user_id,
    jobs.c.workspace_id,
)
DEFAULT_GC_GRACE_S = 24 * 3600.0
DEFAULT_MAX_LOG_BYTES = 10 * 1024 * 1024
LOG_BYTES_REMEMBERED = 4096  # jobs whose stored log size is kept in memory (most recent first)


class StateApplier:
    """Serialises and batches every job state change of this process."""

    def __init__(
        self,
        db: Database,
        notifier: JobNotifier,
        clock: Callable[[], float],
        *,
        max_log_lines: int,
        max_log_bytes: int = DEFAULT_MAX_LOG_BYTES,
        batch_max: int = 2000,
        local_retention_s: float = 600.0,
        gc_grace_s: float = DEFAULT_GC_GRACE_S,
    ) -> None:
        self.db = db
        self.notifier = notifier
        self.clock = clock
        self.max_log_lines = max_log_lines
        self.max_log_bytes = max_log_bytes
        # job id -> bytes of its stored log rows, as committed (see _stored_log_bytes)
        self._log_bytes: OrderedDict[str, int] = OrderedDict()
        self.batch_max = batch_max
        self._queue: asyncio.Queue[Change] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.batches = 0  # transactions committed (for tests and metrics)
        self.local_retention_s = local_retention_s
        self.gc_grace_s = gc_grace_s
        self._agent_stops: dict[str, set[asyncio.Future[None]]] = {}

    # ------------------------------------------------------------------ public
    def submit(self, change: Change) -> None:
        """Queue a change without waiting for it."""
        self._idle.clear()
        self._queue.put_nowait(change)

    async def apply(self, change: Change) -> Any:
        """Queue a change and wait until it is committed; returns the handler's result."""
        change.done = asyncio.get_running_loop().create_future()
        self.submit(change)
        return await change.done

    def expect_agent_stop(self, job_id: str) -> asyncio.Future[None]:
        """A future resolved once the agent's own ``stopped`` for ``job_id`` is committed.

        The agent reports a stop's final workspace sync before that state, so when this
        resolves the workspace head includes everything the sandbox wrote.  Register *before*
        asking the agent to stop; pair with :meth:`forget_agent_stop`.
        """
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._agent_stops.setdefault(job_id, set()).add(fut)
        return fut

    def forget_agent_stop(self, job_id: str, fut: asyncio.Future[None]) -> None:
        waiters = self._agent_stops.get(job_id)
        if waiters is not None:
            waiters.discard(fut)
            if not waiters:
                del self._agent_stops[job_id]
        if not fut.done():
            fut.cancel()

    async def drain(self) -> None:
        """Wait until everything queued so far is committed."""
        await self._idle.wait()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="mags-state-applier")

    async def stop(self) -> None:
        """Apply what is queued, then stop."""
        if self._task is None:
            return
        await self.drain()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None

    # ------------------------------------------------------------------ loop
    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.batch_max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._apply_batch(batch)
            if self._queue.empty():
                self._idle.set()

    async def _apply_batch(self, batch: list[Change]) -> None:
        try:
            results = await self._write(batch)
        except Exception:
            if len(batch) == 1:
                log.exception("dropping job change %s for job %s", batch[0].kind, batch[0].job_id)
                _resolve(batch, None, error=True)
                return
            # one bad change must not lose the others: retry them one at a time
            log.warning("state batch of %d failed; retrying one by one", len(batch), exc_info=True)
            for change in batch:
                await self._apply_batch([change])
            return
        self.batches += 1
        self.notifier.notify({c.job_id for c in batch})
        _resolve(batch, results)
        for c in batch:
            if (c.from_agent and c.kind == "state" and c.state == VmStatus.STOPPED) or c.kind == "finish":
                for fut in self._agent_stops.pop(c.job_id, ()):
                    if not fut.done():
                        fut.set_result(None)

    async def _write(self, batch: list[Change]) -> list[Any]:
        results, log_bytes = await self.db.write(self._write_sync, batch, self.clock())
        # only once committed: a failed batch is retried and must not count twice
        for job_id, size in log_bytes.items():
            self._log_bytes[job_id] = size
            self._log_bytes.move_to_end(job_id)
        while len(self._log_bytes) > LOG_BYTES_REMEMBERED:
            self._log_bytes.popitem(last=False)
        return results

    def _write_sync(
        self, conn: Connection, batch: list[Change], now: float
    ) -> tuple[list[Any], dict[str, int]]:
        """The batch as one transaction (runs wherever the database runs writes).

        Returns the handlers' results and the log size of every job that got log rows.
        """
        job_ids = list({c.job_id for c in batch})
        results: list[Any] = []
        log_rows: list[dict[str, Any]] = []
        log_bytes: dict[str, int] = {}
        rows = conn.execute(select(*_STATE_COLUMNS).where(jobs.c.request_id.in_(job_ids))).all()
        states = {r._mapping["request_id"]: JobState.from_row(r) for r in rows}
        workspace_of = {
            r._mapping["request_id"]: (r._mapping["user_id"], r._mapping["workspace_id"]) for r in rows
        }
        for change in batch:
            state = states.get(change.job_id)
            if change.kind == "synced":
                results.append(self._commit_sync(conn, state, change, now))
                continue
            if state is None:
                results.append(None)  # a sandbox we do not know (another server's, or deleted)
                continue
            if change.kind == "log":
                self._add_log(conn, state, change, log_rows, log_bytes)
                results.append(None)
                continue
            results.append(self._apply_one(state, change, now))
        for state in states.values():
            if state.changes:
                conn.execute(
                    update(jobs)
                    .where(jobs.c.request_id == state.job_id)
                    .values(**state.changes, updated_at=now)
                )
        if log_rows:
            conn.execute(insert(job_logs), log_rows)
        events = [e for s in states.values() for e in s.events]
        if events:
            conn.execute(insert(job_events), events)
        ended = {
            workspace_of[s.job_id]
            for s in states.values()
            if s.changes.get("vm_status") == VmStatus.STOPPED and workspace_of[s.job_id][1]
        }
        if ended:
            jobs_ended(conn, ended, now, self.local_retention_s)
        return results, log_bytes

    def _commit_sync(
        self, conn: Connection, state: JobState | None, change: Change, now: float
    ) -> SyncCommit:
        """Commit a synced snapshot (compare-and-swap of the head); a lost race is recorded."""
        data = change.data or {}
        key = str(data.get("workspace_id") or "")
        result = commit_sync(
            conn, key, data.get("snapshot_id"), data.get("parent_snapshot_id"), now, self.gc_grace_s
        )
        trigger = data.get("trigger") or "request"
        note = None
        if result.outcome == "lost":
            log.warning(
                "workspace %s: snapshot %s (from %s, %s sync of job %s) not committed: head is %s",
                key, result.snapshot_id, data.get("parent_snapshot_id"), trigger, change.job_id, result.head,
            )  # fmt: skip
            note = (
                f"workspace sync ({trigger}) not committed: the workspace head moved to {result.head} "
                f"meanwhile; snapshot {result.snapshot_id} is kept until garbage collection"
            )
        elif result.outcome == "committed" and trigger != "periodic":
            note = f"workspace synced ({trigger}): snapshot {result.snapshot_id}"
        elif result.outcome == "unknown" and key:
            log.info("synced event for unknown or deleted workspace %s (job %s)", key, change.job_id)
        if note and state is not None:
            self._note(state, change, note)
        return result

    def _apply_one(self, state: JobState, change: Change, now: float) -> Any:
        try:
            return apply_change(state, change, now)
        except IllegalTransition as exc:
            # an agent can report things in an order our own actions already overtook
            log.debug("ignoring %s for job %s: %s", change.kind, change.job_id, exc)
            return None

    def _add_log(
        self,
        conn: Connection,
        state: JobState,
        change: Change,
        log_rows: list[dict[str, Any]],
        log_bytes: dict[str, int],
    ) -> None:
        """One log line, within the job's line and byte caps."""
        count = state.log_count
        if count > self.max_log_lines:
            return
        if count == self.max_log_lines:
            lines = self.max_log_lines
            self._log_row(state, change, "system", f"log truncated: more than {lines} lines", log_rows)
            self._note(state, change, f"logs truncated at {lines} lines")
            return
        cap = self.max_log_bytes
        used = log_bytes.get(state.job_id)
        if used is None:
            used = self._stored_log_bytes(conn, state)
        source = change.source if change.source in ("stdout", "stderr", "system") else "stdout"
        message = (change.message or "").replace("\x00", "\ufffd")  # PostgreSQL text has no NUL
        size = line_bytes(message)
        if source == "system" and TRUNCATED_KEY in (change.data or {}):
            # the agent reached its own byte cap: the same single line and history entry
            if used <= cap:
                log_bytes[state.job_id] = self._truncate(state, change, log_rows, used)
        elif source != "system" and used + size > cap:
            if used <= cap:  # else: truncated before, the line is dropped
                head = cut_text(message, cap - used - 1)  # the crossing line is cut to fit
                if head:
                    self._log_row(state, change, source, head, log_rows)
                    used += line_bytes(head)
                log_bytes[state.job_id] = self._truncate(state, change, log_rows, used)
        else:
            # the agent's own lines (a failed final sync...) are kept after a truncation: few, short
            self._log_row(state, change, source, message, log_rows)
            log_bytes[state.job_id] = used + size

    def _truncate(self, state: JobState, change: Change, log_rows: list[dict[str, Any]], used: int) -> int:
        """Close the job's log at the byte cap; returns its new size (over the cap from now on)."""
        cap = self.max_log_bytes
        message = truncation_message(cap)
        self._log_row(state, change, "system", message, log_rows)
        self._note(state, change, truncation_reason(cap))
        # counted from the stored rows (after a restart) this is over the cap too
        return max(used + line_bytes(message), cap + 1)

    def _log_row(
        self, state: JobState, change: Change, source: str, message: str, log_rows: list[dict[str, Any]]
    ) -> None:
        count = state.log_count + 1
        row = {"job_id": state.job_id, "seq": count, "ts": change.ts, "source": source, "message": message}
        log_rows.append(row)
        state.set(log_count=count)

    def _note(self, state: JobState, change: Change, reason: str) -> None:
        """A history entry (``job_events``) that changes no status."""
        state.events.append(
            {
                "job_id": state.job_id,
                "ts": change.ts,
                "from_status": state.status.value,
                "to_status": state.status.value,
                "from_vm_status": state.vm_status.value,
                "vm_status": state.vm_status.value,
                "reason": reason,
            }
        )

    def _stored_log_bytes(self, conn: Connection, state: JobState) -> int:
        """Bytes of the job's stored log rows, counted as ``line_bytes`` does."""
        remembered = self._log_bytes.get(state.job_id)
        if remembered is not None:
            return remembered
        if state.log_count == 0:
            return 0
        # after a restart (or once forgotten): one indexed range scan of this job's rows
        if conn.dialect.name == "sqlite":
            size = func.length(cast(job_logs.c.message, LargeBinary))
        else:
            size = func.octet_length(job_logs.c.message)
        stmt = select(func.coalesce(func.sum(size + 1), 0)).where(job_logs.c.job_id == state.job_id)
        return int(conn.execute(stmt).scalar_one())


def _resolve(batch: Iterable[Change], results: list[Any] | None, *, error: bool = False) -> None:
    for i, change in enumerate(batch):
        if change.done is None or change.done.done():
            continue
        if error:
            change.done.set_exception(RuntimeError(f"could not apply {change.kind} to job {change.job_id}"))
        else:
            change.done.set_result(results[i] if results else None)
