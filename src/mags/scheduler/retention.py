"""The janitor: expires local workspaces and uploads, garbage-collects workspace snapshots.

* **Local workspaces** are deleted (row and every agent's local copy)
  ``local_workspace_retention_s`` after the sandbox of their last job stopped.
* **Uploads** are deleted ``file_retention_s`` after they were uploaded.
* **Object-store GC**, per persistent workspace (repository prefix ``ws/<key>/``): live =
  its head plus every snapshot a fork mounts as a base layer.  Run when a commit made older
  snapshots garbage (``gc_due_at``), and once a day anyway (syncs whose commit never came).
  The grace period is the storage library's default (24 h): an agent's sync may reuse packs
  up to 6 h old through its dedup index, so a shorter grace could delete data a snapshot
  being committed still points at.

All storage and file-system work runs in threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any

from mags.config import Settings
from mags.core.files import FileStore
from mags.core.tasks import Periodic
from mags.core.workspace_upkeep import WorkspaceUpkeep
from mags.core.workspaces import store_prefix
from mags.errors import Conflict, MagsError
from mags.scheduler.workspace_admin import WorkspaceAdmin
from mags.storage.objectstore import ObjectStore
from mags.storage.sync.gc import DEFAULT_GRACE_S, gc

log = logging.getLogger(__name__)

GC_CHECK_S = 300.0  # look for workspaces due for GC this often
FULL_GC_S = 24 * 3600.0


class Janitor:
    """Periodic retention work; :meth:`run_once` is what each tick does (tests call it)."""

    def __init__(
        self,
        settings: Settings,
        workspaces: WorkspaceUpkeep,
        files: FileStore,
        admin: WorkspaceAdmin,
        store: ObjectStore | None,
        clock: Callable[[], float],
        *,
        interval: float | None = None,
        gc_check_s: float = GC_CHECK_S,
        gc_grace_s: float = DEFAULT_GRACE_S,
    ) -> None:
        self.settings = settings
        self.workspaces = workspaces
        self.files = files
        self.admin = admin
        self.store = store
        self.clock = clock
        # often enough that a short retention (tests, demos) is honoured within ~half of it
        self.interval = interval or max(0.5, min(30.0, settings.local_workspace_retention_s / 2))
        self.gc_check_s = gc_check_s
        self.gc_grace_s = gc_grace_s
        self._last_gc = 0.0
        self._periodic = Periodic("mags-janitor", self.interval, self._tick, "janitor tick failed")

    def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

    async def _tick(self) -> None:
        await self.run_once(gc_now=self.clock() - self._last_gc >= self.gc_check_s)

    async def run_once(self, *, gc_now: bool = True) -> dict[str, Any]:
        """Expire local workspaces and uploads; GC due workspaces if ``gc_now``."""
        done: dict[str, Any] = {
            "workspaces_expired": await self.expire_workspaces(),
            "files_expired": await self.expire_files(),
            "gc": [],
        }
        if gc_now:
            self._last_gc = self.clock()
            done["gc"] = await self.collect_garbage()
        return done

    async def expire_workspaces(self) -> list[str]:
        """Delete local workspaces past their retention (and finish interrupted deletes)."""
        expired: list[str] = []
        for row in await self.workspaces.expired_locals(self.settings.local_workspace_retention_s):
            m = row._mapping
            retention = self.settings.local_workspace_retention_s
            if not await self.workspaces.mark_deleting(m["id"], retention):
                continue  # a job took it meanwhile
            try:
                await self.admin.purge(row)
            except Conflict as exc:
                log.info("workspace %s not expired: %s", m["key"], exc)
                await self.workspaces.abort_delete(row)
                continue
            except MagsError as exc:
                log.warning("workspace %s: delete failed, retried later: %s", m["key"], exc)
                continue
            log.info(
                "workspace %s deleted: %s", m["key"], "delete finished" if m["deleting_at"] else "expired"
            )
            expired.append(m["key"])
        return expired

    async def expire_files(self) -> list[str]:
        """Delete uploads past ``file_retention_s`` (bytes first, then rows)."""
        ids = await self.files.expired()
        if not ids:
            return []

        def unlink_all() -> None:
            for file_id in ids:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.files.path(file_id))

        await asyncio.to_thread(unlink_all)
        await self.files.forget(ids)
        return ids

    async def collect_garbage(self) -> list[dict[str, Any]]:
        """GC every persistent workspace that is due; returns one summary per workspace."""
        if self.store is None:
            return []
        candidates = await self.workspaces.gc_candidates(FULL_GC_S)
        if not candidates:
            return []
        layer_refs = await self.workspaces.layer_refs()
        results = []
        for row in candidates:
            m = row._mapping
            live = set(layer_refs.get(m["key"], set()))
            if m["head_snapshot_id"]:
                live.add(m["head_snapshot_id"])
            try:
                res = await asyncio.to_thread(
                    gc, self.store, live, self.gc_grace_s, prefix=store_prefix(m["key"])
                )
            except MagsError as exc:
                log.warning("workspace %s: gc skipped: %s", m["key"], exc)
                continue
            await self.workspaces.gc_done(m["id"], self.gc_grace_s)
            if res.snapshots_deleted or res.packs_deleted:
                log.info(
                    "workspace %s: gc deleted %d snapshot(s), %d pack(s), %d bytes",
                    m["key"], res.snapshots_deleted, res.packs_deleted, res.bytes_freed,
                )  # fmt: skip
            results.append({"workspace": m["key"], **res.to_dict()})
        return results
