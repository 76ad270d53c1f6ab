"""GET/DELETE /mags-workspaces, local workspace expiry, and object-store GC by the janitor."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
from scheduler.fake_agent import FakeAgentClient
from scheduler.helpers import execute
from sqlalchemy import update

from mags.core.schema import workspaces
from mags.server import ControlPlane
from mags.storage.local import LocalObjectStore
from mags.storage.sync import SyncOptions, snapshot

from .helpers import key_of, new, persistent_run, status, submit, user_id, vm_status, workspace


def store_of(cp: ControlPlane) -> LocalObjectStore:
    return LocalObjectStore(cp.settings.local_store_root)


async def test_list_shows_every_field_clients_use(
    cp: ControlPlane, alice: httpx.AsyncClient, bob: httpx.AsyncClient, agent: FakeAgentClient
) -> None:
    assert (await alice.get("/mags-workspaces")).json() == {"workspaces": [], "total": 0}
    await persistent_run(alice, agent, "golden")
    await status(alice, await submit(alice, workspace_id="scratch", disk_gb=3), until="completed")
    box = (await new(alice, "fork", base_workspace_id="golden")).json()["request_id"]
    await vm_status(alice, box, "running")
    agent.write(await key_of(cp, "alice", "golden"), used_bytes=12345)

    data = (await alice.get("/mags-workspaces")).json()
    assert data["total"] == 3
    by = {w["workspace_id"]: w for w in data["workspaces"]}
    g, s, f = by["golden"], by["scratch"], by["fork"]
    assert g["persistent"] is True and g["mode"] == "persistent" and g["head_snapshot_id"]
    assert g["last_synced_at"].endswith("Z") and g["expires_at"] is None and g["in_use"] is False
    assert g["size_bytes"] == 12345 and g["disk_gb"] == 2 and g["name"] == "golden"
    assert s["persistent"] is False and s["disk_gb"] == 3 and s["head_snapshot_id"] is None
    assert s["expires_at"] and s["last_synced_at"] is None and s["job_id"] is None
    assert f["in_use"] is True and f["job_id"] == box and f["base_workspace_id"] == "golden"
    assert f["expires_at"] is None  # in use
    for w in data["workspaces"]:
        for key in ("created_at", "last_used_at", "generation", "base_workspace_id"):
            assert key in w
    assert (await bob.get("/mags-workspaces")).json()["total"] == 0  # tenants see their own


async def test_delete_is_refused_while_used_or_a_base_and_for_other_tenants(
    cp: ControlPlane, alice: httpx.AsyncClient, bob: httpx.AsyncClient, agent: FakeAgentClient
) -> None:
    await persistent_run(alice, agent, "golden")
    job = await submit(alice, "sleep 30", workspace_id="live", persistent=True)
    await vm_status(alice, job, "running")
    r = await alice.delete("/mags-workspaces/live")
    assert r.status_code == 409 and r.json() == {
        "error": f'workspace "live" is in use: job {job} is still running its script '
        "(wait for it, stop it, or delete with force: mags workspace delete --force live)",
        "code": "workspace_in_use",
    }
    assert (await status(alice, job))["vm_status"] == "running"  # nothing was stopped
    pending = await submit(alice, "true", workspace_id="fork", base_workspace_id="golden")
    await status(alice, pending, until="completed")
    r = await alice.delete("/mags-workspaces/golden")
    assert r.status_code == 409
    assert r.json() == {"error": 'workspace "golden" is the base of fork — delete the forks first'}
    # an ephemeral sandbox on top of it uses it too
    eph = await submit(alice, "sleep 5", base_workspace_id="golden")
    await vm_status(alice, eph, "running")
    await alice.delete("/mags-workspaces/fork")
    r = await alice.delete("/mags-workspaces/golden")
    assert r.status_code == 409 and eph in r.json()["error"]
    assert (await bob.delete("/mags-workspaces/golden")).status_code == 404
    assert (await alice.delete("/mags-workspaces/nope")).status_code == 404
    assert await workspace(cp, "alice", "golden") is not None


async def test_delete_removes_row_local_copies_and_stored_objects(
    cp: ControlPlane, alice: httpx.AsyncClient, agent: FakeAgentClient, tmp_path: Path
) -> None:
    await persistent_run(alice, agent, "doomed")
    await persistent_run(alice, agent, "kept")
    store = store_of(cp)
    doomed, kept = await key_of(cp, "alice", "doomed"), await key_of(cp, "alice", "kept")
    for key in (doomed, kept):  # what the agent's syncer would have written
        store.put(f"ws/{key}/snapshots/s1", b"root")
        store.put(f"ws/{key}/packs/ab/ab12", b"pack")
    assert doomed in agent.workspaces

    r = await alice.delete("/mags-workspaces/doomed")
    assert r.status_code == 200 and r.json()["success"] is True and r.json()["workspace_id"] == "doomed"
    assert [i.key for i in store.list(f"ws/{doomed}/")] == []
    assert len(list(store.list(f"ws/{kept}/"))) == 2
    assert doomed in agent.deleted_workspaces and doomed not in agent.workspaces
    assert await workspace(cp, "alice", "doomed") is None
    names = [w["workspace_id"] for w in (await alice.get("/mags-workspaces")).json()["workspaces"]]
    assert names == ["kept"]
    # the name can be used again: a fresh, empty workspace
    job = await submit(alice, workspace_id="doomed", persistent=True)
    await status(alice, job, until="completed")
    assert (await workspace(cp, "alice", "doomed"))["generation"] == 0  # type: ignore[index]


async def test_delete_while_an_agent_still_uses_it_is_409_and_keeps_everything(
    cp: ControlPlane, alice: httpx.AsyncClient, agent: FakeAgentClient
) -> None:
    await persistent_run(alice, agent, "ws")
    key = await key_of(cp, "alice", "ws")
    agent.workspaces[key].in_use_by = "vm-elsewhere"  # the database thinks nothing runs
    r = await alice.delete("/mags-workspaces/ws")
    assert r.status_code == 409 and "still in use" in r.json()["error"]
    ws = await workspace(cp, "alice", "ws")
    assert ws is not None and ws["deleting_at"] is None


async def test_local_workspaces_expire_after_their_window(
    cp: ControlPlane, alice: httpx.AsyncClient, agent: FakeAgentClient
) -> None:
    await status(alice, await submit(alice, workspace_id="tmp"), until="completed")
    await persistent_run(alice, agent, "keep")
    running = await submit(alice, "sleep 5", workspace_id="busy")
    await vm_status(alice, running, "running")
    tmp = await workspace(cp, "alice", "tmp")
    assert tmp is not None and tmp["expires_at"] is not None
    assert abs(tmp["expires_at"] - (time.time() + cp.settings.local_workspace_retention_s)) < 5
    assert cp.janitor is not None
    assert (await cp.janitor.run_once())["workspaces_expired"] == []

    # the window passes (for all three)
    await execute(
        cp.db, update(workspaces).values(expires_at=time.time() - 1, last_used_at=time.time() - 9999)
    )
    done = await cp.janitor.run_once()
    tkey = await key_of(cp, "alice", "tmp")
    assert done["workspaces_expired"] == [tkey]
    assert await workspace(cp, "alice", "tmp") is None and tkey in agent.deleted_workspaces
    assert await workspace(cp, "alice", "keep") is not None  # persistent: kept until deleted
    assert await workspace(cp, "alice", "busy") is not None  # in use
    # reused after expiry: a fresh local workspace
    await status(alice, await submit(alice, workspace_id="tmp"), until="completed")
    assert (await workspace(cp, "alice", "tmp"))["expires_at"] > time.time()  # type: ignore[index]


async def test_interrupted_delete_is_finished_by_the_janitor(
    cp: ControlPlane, alice: httpx.AsyncClient, agent: FakeAgentClient
) -> None:
    await persistent_run(alice, agent, "half")
    key = await key_of(cp, "alice", "half")
    store_of(cp).put(f"ws/{key}/snapshots/s1", b"x")
    await execute(cp.db, update(workspaces).values(deleting_at=time.time() - 3600))
    assert cp.janitor is not None
    assert (await cp.janitor.run_once())["workspaces_expired"] == [key]
    assert await workspace(cp, "alice", "half") is None
    assert list(store_of(cp).list(f"ws/{key}/")) == []


def _age(store: LocalObjectStore, prefix: str, seconds: float) -> None:
    past = time.time() - seconds
    for info in store.list(prefix):
        os.utime(store.path_of(info.key), (past, past))


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


async def test_gc_keeps_heads_and_fork_layers_and_removes_the_rest(
    cp: ControlPlane, alice: httpx.AsyncClient, tmp_path: Path
) -> None:
    """Real snapshots under ws/<key>/, committed through the store; the janitor collects."""
    uid = await user_id(cp, "alice")
    ws_store, store = cp.controller.workspaces, store_of(cp)
    await ws_store.prepare(uid, "golden", mode="persistent", disk_gb=2, base=None)
    gkey = await key_of(cp, "alice", "golden")
    opts = SyncOptions(prefix=f"ws/{gkey}/")
    upper, cache = tmp_path / "upper", tmp_path / "cache"
    snaps = []
    for i in range(3):
        _write(upper / f"f{i}", os.urandom(50_000))
        parent = snaps[-1] if snaps else None
        snaps.append(snapshot(store, upper, parent, cache, opts).snapshot_id)
        assert (await ws_store.commit_sync(gkey, snaps[-1], parent, 3600)).outcome == "committed"
        if i == 0:  # a fork made while s0 was the head keeps s0 as its base layer
            base = await ws_store.get(uid, "golden")
            await ws_store.prepare(uid, "fork", mode="local", disk_gb=2, base=base)
    _age(store, f"ws/{gkey}/", 7200)
    assert cp.janitor is not None
    cp.janitor.gc_grace_s = 3600
    done = await cp.janitor.run_once()
    assert [g["workspace"] for g in done["gc"]] == [gkey] and done["gc"][0]["snapshots_deleted"] == 1
    left = {i.key.rsplit("/", 1)[-1] for i in store.list(f"ws/{gkey}/snapshots/")}
    assert left == {snaps[0], snaps[2]}  # s1: neither head nor anyone's layer
    # nothing due any more: not collected again until the next commit (or the daily pass)
    assert (await cp.janitor.run_once())["gc"] == []
    # once the fork is gone its layer is garbage too
    assert (await alice.delete("/mags-workspaces/fork")).status_code == 200
    done = await cp.janitor.run_once()
    assert done["gc"][0]["snapshots_deleted"] == 1
    left = {i.key.rsplit("/", 1)[-1] for i in store.list(f"ws/{gkey}/snapshots/")}
    assert left == {snaps[2]}


async def test_expiry_loses_to_a_submit_that_renewed_the_workspace(
    cp: ControlPlane, alice: httpx.AsyncClient
) -> None:
    await status(alice, await submit(alice, workspace_id="tmp"), until="completed")
    await execute(cp.db, update(workspaces).values(expires_at=time.time() - 1))
    store = cp.controller.workspaces
    retention = cp.settings.local_workspace_retention_s
    [row] = await store.expired_locals(retention)
    # a submission on it lands between the janitor's look and its delete
    await store.prepare(await user_id(cp, "alice"), "tmp", mode="local", disk_gb=2, base=None)
    assert await store.mark_deleting(row._mapping["id"], retention) is False
    assert (await workspace(cp, "alice", "tmp"))["deleting_at"] is None  # type: ignore[index]
