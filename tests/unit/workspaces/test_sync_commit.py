"""Synced snapshots: compare-and-swap commits (SQLite and PostgreSQL), the sync API, stop syncs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from core.pg import postgres_server, skip_reason
from scheduler.fake_agent import FakeAgentClient

from mags.core.db import Database, create_database
from mags.core.ids import Clock
from mags.core.migrate import run_migrations
from mags.core.tokens import TokenStore
from mags.core.workspaces import WorkspaceStore, workspace_key
from mags.server import ControlPlane

from .helpers import key_of, persistent_run, status, submit, vm_status, workspace


async def _cas_rules(db: Database) -> None:
    clock = Clock()
    uid = (await TokenStore(db, clock).ensure_user("cas"))._mapping["id"]
    store = WorkspaceStore(db, clock)
    await store.prepare(uid, "w", mode="persistent", disk_gb=2, base=None)
    key = workspace_key(uid, "w")

    first = await store.commit_sync(key, "s1", None, 60)  # head IS NULL: the first sync wins
    assert (first.outcome, first.head, first.generation) == ("committed", "s1", 1)
    again = await store.commit_sync(key, "s1", None, 60)  # reported twice (API answer + event)
    assert (again.outcome, again.head, again.generation) == ("current", "s1", 1)
    stale = await store.commit_sync(key, "s0", None, 60)  # a sandbox that started from nothing
    assert (stale.outcome, stale.head) == ("lost", "s1")
    nxt = await store.commit_sync(key, "s2", "s1", 60)
    assert (nxt.outcome, nxt.head, nxt.generation) == ("committed", "s2", 2)
    old = await store.commit_sync(key, "s9", "s1", 60)  # from a parent that is no longer the head
    assert (old.outcome, old.head) == ("lost", "s2")
    assert (await store.commit_sync(key, None, None, 60)).outcome == "empty"
    assert (await store.commit_sync("u999-nope", "x", None, 60)).outcome == "unknown"

    # two commits racing from the same parent: exactly one wins, the other never overwrites it
    results = await asyncio.gather(*(store.commit_sync(key, f"race-{i}", "s2", 60) for i in range(6)))
    winners = [r for r in results if r.outcome == "committed"]
    assert len(winners) == 1
    row = await store.get(uid, "w")
    assert row is not None
    assert row._mapping["head_snapshot_id"] == winners[0].snapshot_id
    assert row._mapping["generation"] == 3 and row._mapping["gc_due_at"] is not None
    assert all(r.head == winners[0].snapshot_id for r in results if r.outcome == "lost")


async def test_compare_and_swap_on_sqlite(tmp_path: Path) -> None:
    db = create_database(f"sqlite+aiosqlite:///{tmp_path / 'cas.db'}")
    try:
        await run_migrations(db)
        await _cas_rules(db)
    finally:
        await db.close()


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with postgres_server() as url:
        yield url


async def test_compare_and_swap_on_postgres(pg_url: str) -> None:
    db = create_database(pg_url)
    try:
        await run_migrations(db)
        await _cas_rules(db)
    finally:
        await db.close()


async def test_synced_events_commit_and_a_stale_one_never_overwrites(
    cp: ControlPlane, alice: httpx.AsyncClient, agent: FakeAgentClient
) -> None:
    job = await submit(alice, "echo hi", workspace_id="ws", persistent=True)
    vm = (await status(alice, job, until="completed"))["vm_id"]
    key = await key_of(cp, "alice", "ws")
    agent.emit(
        "synced",
        vm,
        job,
        data={
            "workspace_id": key,
            "snapshot_id": "p1",
            "parent_snapshot_id": None,
            "changed": True,
            "trigger": "periodic",
        },
    )
    agent.emit(
        "synced",
        vm,
        job,
        data={
            "workspace_id": key,
            "snapshot_id": "p2",
            "parent_snapshot_id": "p1",
            "changed": True,
            "trigger": "periodic",
        },
    )
    # a late report from a sandbox that started from p1 too: must not replace p2
    agent.emit(
        "synced",
        vm,
        job,
        data={
            "workspace_id": key,
            "snapshot_id": "p-stale",
            "parent_snapshot_id": "p1",
            "changed": True,
            "trigger": "sleep",
        },
    )

    async def settled() -> dict[str, Any] | None:
        await cp.applier.drain()
        hist = (await status(alice, job))["history"]
        return hist if any("not committed" in h["reason"] for h in hist) else None

    history = await _eventually(settled)
    ws = await workspace(cp, "alice", "ws")
    assert ws is not None and ws["head_snapshot_id"] == "p2" and ws["generation"] == 2
    note = next(h["reason"] for h in history if "not committed" in h["reason"])
    assert "p2" in note and "p-stale" in note
    assert not any("synced (periodic)" in h["reason"] for h in history)  # periodic commits stay quiet


async def _eventually(check: Any, timeout: float = 5.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


async def test_sync_endpoint_commits_and_reports(
    cp: ControlPlane, alice: httpx.AsyncClient, bob: httpx.AsyncClient, agent: FakeAgentClient
) -> None:
    job = await submit(alice, "echo hi", workspace_id="ws", persistent=True)
    await status(alice, job, until="completed")
    r = await alice.post(f"/mags-jobs/{job}/sync")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True and body["changed"] is True and body["workspace_id"] == "ws"
    ws = await workspace(cp, "alice", "ws")
    assert ws is not None and ws["head_snapshot_id"] == body["snapshot_id"] and ws["generation"] == 1
    # nothing changed since: nothing committed, same head
    r = await alice.post(f"/mags-jobs/{job}/sync")
    assert r.json()["changed"] is False and r.json()["snapshot_id"] == body["snapshot_id"]
    agent.write(await key_of(cp, "alice", "ws"))
    r = await alice.post(f"/mags-jobs/{job}/sync")
    assert r.json()["changed"] is True and r.json()["generation"] == 2
    assert (await bob.post(f"/mags-jobs/{job}/sync")).status_code == 404
    # the VM keeps running
    assert (await status(alice, job))["vm_status"] == "running"
    # the agent's own `synced` event for the same sync was harmless (already the head)
    await cp.applier.drain()
    assert (await workspace(cp, "alice", "ws"))["generation"] == 2  # type: ignore[index]


async def test_sync_endpoint_conflicts(alice: httpx.AsyncClient, agent: FakeAgentClient) -> None:
    local = await submit(alice, "sleep 5", workspace_id="loc")
    await vm_status(alice, local, "running")
    r = await alice.post(f"/mags-jobs/{local}/sync")
    assert r.status_code == 409 and "no persistent workspace" in r.json()["error"]
    eph = await submit(alice, "echo x")
    await status(alice, eph, until="completed")
    assert (await alice.post(f"/mags-jobs/{eph}/sync")).status_code == 409
    nosync = await submit(alice, "sleep infinity", workspace_id="ns", persistent=True, no_sync=True)
    await vm_status(alice, nosync, "running")
    assert (await alice.post(f"/mags-jobs/{nosync}/sync")).status_code == 409
    stopped = await persistent_run(alice, agent, "p")
    r = await alice.post(f"/mags-jobs/{stopped}/sync")
    assert r.status_code == 409 and r.json()["error"] == "sandbox is not running: start it with mags new"


async def test_stop_answers_after_the_final_sync_is_the_head(
    cp: ControlPlane, alice: httpx.AsyncClient, agent: FakeAgentClient
) -> None:
    job = await submit(alice, "echo hi", workspace_id="ws", persistent=True)
    await status(alice, job, until="completed")
    await alice.post(f"/mags-jobs/{job}/sync")
    agent.write(await key_of(cp, "alice", "ws"))
    # hold the agent's events back: its stop answer arrives before its `synced` report
    gate = asyncio.Event()
    agent.stream_gate = gate
    stopping = asyncio.create_task(alice.post(f"/mags-jobs/{job}/stop"))
    await _eventually(_async(lambda: len(agent.stops) == 1))
    await asyncio.sleep(0.05)
    assert not stopping.done()  # waiting for the agent's own report, which follows the sync
    gate.set()
    r = await stopping
    assert r.status_code == 200 and r.json()["vm_status"] == "stopped" and r.json()["status"] == "completed"
    _vm, req = agent.stops[-1]
    assert req.sync is True and req.reason == "stopped by user"
    final = [e for e in agent.events_log if e.type == "synced" and e.data["trigger"] == "stop"][-1]
    ws = await workspace(cp, "alice", "ws")
    assert ws is not None and ws["head_snapshot_id"] == final.data["snapshot_id"] and ws["generation"] == 2
    reasons = [h["reason"] for h in (await status(alice, job))["history"]]
    assert f"workspace synced (stop): snapshot {final.data['snapshot_id']}" in reasons


def _async(fn: Any) -> Any:
    async def check() -> Any:
        return fn()

    return check
