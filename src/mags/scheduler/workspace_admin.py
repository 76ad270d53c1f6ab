"""Deleting workspaces (API and expiry), their object data and every agent's local copy.

The control plane owns a workspace's stored data: objects under ``ws/<key>/`` (deleted here,
off the event loop, with :func:`~mags.storage.sync.gc.delete_repository`).  Agents own their
local copies; we ask each of our agents to drop its copy (404: it had none).

A delete is four steps: free the workspace (``scheduler/workspace_release.py``: an idle VM on
it is stopped without a final sync, a sandbox being torn down is waited for, a running script
is a 409 unless ``force``), mark the row ``deleting`` (refused while a job or a fork needs the
workspace), remove local copies and objects, delete the row.  A delete cut short (crash,
agent unreachable) is finished later by the janitor, which finds the mark.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Row

from mags.core.workspace_upkeep import WorkspaceUpkeep
from mags.core.workspaces import store_prefix
from mags.errors import Conflict, MagsError, StorageError
from mags.scheduler.registry import AgentRegistry
from mags.scheduler.workspace_release import WorkspaceRelease
from mags.storage.objectstore import ObjectStore
from mags.storage.sync.gc import delete_repository

log = logging.getLogger(__name__)

AGENT_LIST_TIMEOUT_S = 2.0


class WorkspaceAdmin:
    """Deletes workspaces everywhere they live; reports local sizes for listings."""

    def __init__(
        self,
        workspaces: WorkspaceUpkeep,
        registry: AgentRegistry,
        store: ObjectStore | None,
        lock: Callable[[int, str], contextlib.AbstractAsyncContextManager[Any]] | None = None,
        release: WorkspaceRelease | None = None,
    ) -> None:
        self.workspaces = workspaces
        self.registry = registry
        self.store = store
        # the admission's per-workspace lock: a submit and a delete of one name never interleave
        self.lock = lock
        self.release = release  # None: whatever uses the workspace is a 409 (no scheduler here)

    async def delete(self, user_id: int, name: str, *, force: bool = False) -> Row[Any]:
        """Delete a user's workspace; returns the deleted row.

        An idle VM on it is stopped first (no final sync); 409 while a script runs on it
        unless ``force`` (then it is stopped too), or while it is the base of a fork.
        """
        guard = self.lock(user_id, name) if self.lock is not None else contextlib.nullcontext()
        async with guard:
            if self.release is not None:
                await self.workspaces.deletable(user_id, name)  # 404 / a fork's base: stop nothing
                await self.release.free(user_id, name, force=force)
            row = await self.workspaces.begin_delete(user_id, name)
        try:
            await self.purge(row)
        except Conflict:
            await self.workspaces.abort_delete(row)  # an agent still uses it: nothing was removed
            raise
        return row

    async def purge(self, row: Row[Any]) -> None:
        """Remove a workspace marked ``deleting``: local copies, objects, then its row."""
        m = row._mapping
        key = m["key"]
        for agent in self.registry.all():
            try:
                await agent.delete_workspace(key)
            except MagsError as exc:
                if exc.status_code in (404, 410):
                    continue  # no local copy there
                if exc.status_code == 409:
                    raise Conflict(
                        f'workspace "{m["name"]}" is still in use on agent {agent.agent_id}'
                    ) from exc
                raise
        if m["mode"] == "persistent" or m["head_snapshot_id"]:  # local ones never wrote objects
            if self.store is None:
                raise StorageError("no object store configured: cannot delete the workspace's data")
            removed = await asyncio.to_thread(delete_repository, self.store, store_prefix(key))
            log.info("workspace %s: %d stored object(s) deleted", key, removed)
        await self.workspaces.end_delete(row)

    async def local_sizes(self) -> dict[str, int]:
        """Used bytes of each local copy on our agents (best effort, for listings)."""
        sizes: dict[str, int] = {}

        async def one(agent: Any) -> None:
            try:
                infos = await asyncio.wait_for(agent.list_workspaces(), AGENT_LIST_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - sizes are informative only
                log.debug("cannot list workspaces of agent %s: %s", agent.agent_id, exc)
                return
            for info in infos:
                sizes[info.workspace_id] = max(sizes.get(info.workspace_id, 0), info.used_bytes)

        await asyncio.gather(*(one(a) for a in self.registry.all()))
        return sizes
