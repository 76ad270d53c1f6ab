"""Submitting on workspaces: bases and forks, one sandbox per workspace, `new` reuse, modes, disk."""

from __future__ import annotations

import asyncio
import itertools

import httpx
from scheduler.fake_agent import FakeAgentClient

from mags.agent.models import LayerRef
from mags.core.ids import new_request_id
from mags.core.jobs import NewJob
from mags.server import ControlPlane

from .helpers import created_for, key_of, new, persistent_run, status, submit, user_id, vm_status, workspace

BASE_404 = 'base workspace "{}" not found (or never synced: run it with -p first)'


async def test_fork_from_missing_or_unsynced_base_is_404(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, agent: FakeAgentClient
) -> None:
    r = await alice.post(
        "/mags-jobs", json={"script": "true", "base_workspace_id": "nope", "workspace_id": "x"}
    )
    assert r.status_code == 404 and r.json() == {"error": BASE_404.format("nope")}
    # a local workspace has no synced head
    await status(alice, await submit(alice, "true", workspace_id="loc"), until="completed")
    r = await alice.post("/mags-jobs", json={"script": "true", "base_workspace_id": "loc"})
    assert r.status_code == 404 and r.json() == {"error": BASE_404.format("loc")}
    # nor can another tenant fork yours
    await persistent_run(alice, agent, "golden")
    r = await bob.post(
        "/mags-jobs", json={"script": "true", "base_workspace_id": "golden", "workspace_id": "f"}
    )
    assert r.status_code == 404 and "golden" in r.json()["error"]


async def test_fork_layers_are_the_base_head_and_base_never_changes(
    cp: ControlPlane, alice: httpx.AsyncClient, agent: FakeAgentClient
) -> None:
    await persistent_run(alice, agent, "golden")
    golden = await workspace(cp, "alice", "golden")
    assert golden is not None and golden["head_snapshot_id"] and golden["mode"] == "persistent"
    gkey = await key_of(cp, "alice", "golden")

    fork_job = await persistent_run(alice, agent, "fork", base_workspace_id="golden")
    req = created_for(agent, fork_job)
    assert req.workspace.workspace_id == await key_of(cp, "alice", "fork")
    assert req.workspace.mode == "persistent" and req.workspace.snapshot_id is None
    assert req.workspace.layers == [LayerRef(workspace_id=gkey, snapshot_id=golden["head_snapshot_id"])]
    fork = await workspace(cp, "alice", "fork")
    assert fork is not None and fork["base_id"] == golden["id"] and fork["head_snapshot_id"]
    assert (await workspace(cp, "alice", "golden")) == golden  # untouched by the fork's syncs

    # a fork of the fork sees both, topmost first
    job = await submit(alice, "true", workspace_id="fork2", base_workspace_id="fork")
    await status(alice, job, until="completed")
    assert [layer.workspace_id for layer in created_for(agent, job).workspace.layers] == [
        await key_of(cp, "alice", "fork"),
        gkey,
    ]
    listed = {w["workspace_id"]: w for w in (await alice.get("/mags-workspaces")).json()["workspaces"]}
    assert listed["fork2"]["base_workspace_id"] == "fork" and listed["fork"]["base_workspace_id"] == "golden"


async def test_base_without_workspace_is_an_ephemeral_sandbox_on_top(
    cp: ControlPlane, alice: httpx.AsyncClient, agent: FakeAgentClient
) -> None:
    await persistent_run(alice, agent, "golden")
    head = (await workspace(cp, "alice", "golden"))["head_snapshot_id"]  # type: ignore[index]
    job = await submit(alice, "echo scribble", base_workspace_id="golden")
    assert (await status(alice, job, until="completed"))["status"] == "completed"
    ref = created_for(agent, job).workspace
    assert ref.mode == "ephemeral" and ref.workspace_id == "" and not ref.sync
    assert ref.layers == [LayerRef(workspace_id=await key_of(cp, "alice", "golden"), snapshot_id=head)]
    names = [w["workspace_id"] for w in (await alice.get("/mags-workspaces")).json()["workspaces"]]
    assert names == ["golden"]


async def test_base_only_applies_when_the_workspace_is_created(
    alice: httpx.AsyncClient, agent: FakeAgentClient
) -> None:
    await persistent_run(alice, agent, "golden")
    await persistent_run(alice, agent, "other")
    await status(
        alice, await submit(alice, workspace_id="fork", base_workspace_id="golden"), until="completed"
    )
    await status(
        alice, await submit(alice, workspace_id="fork", base_workspace_id="golden"), until="completed"
    )
    await status(alice, await submit(alice, workspace_id="fork"), until="completed")  # no --base: fine
    r = await alice.post(
        "/mags-jobs", json={"script": "true", "workspace_id": "fork", "base_workspace_id": "other"}
    )
    assert r.status_code == 409 and "another base" in r.json()["error"]
    r = await alice.post(
        "/mags-jobs", json={"script": "true", "workspace_id": "other", "base_workspace_id": "golden"}
    )
    assert r.status_code == 409 and "without a base" in r.json()["error"]


async def test_busy_workspace_is_409(alice: httpx.AsyncClient) -> None:
    first = await submit(alice, "sleep 5", workspace_id="ws")
    await vm_status(alice, first, "running")
    r = await alice.post("/mags-jobs", json={"script": "true", "workspace_id": "ws"})
    assert r.status_code == 409
    assert r.json() == {"error": f'workspace "ws" is busy: job {first} is still running (stop it or wait)'}
    # a persistent job whose script still runs is just as busy
    job = await submit(alice, "sleep 5", workspace_id="pws", persistent=True)
    await vm_status(alice, job, "running")
    r = await alice.post("/mags-jobs", json={"script": "true", "workspace_id": "pws", "persistent": True})
    assert r.status_code == 409 and job in r.json()["error"]


async def test_new_run_replaces_a_finished_persistent_vm_after_its_final_sync(
    cp: ControlPlane, alice: httpx.AsyncClient, agent: FakeAgentClient
) -> None:
    old = await submit(alice, "echo hi", workspace_id="ws", persistent=True)
    assert (await status(alice, old, until="completed"))["vm_status"] == "running"
    new_job = await submit(alice, "echo again", workspace_id="ws", persistent=True)
    # the old VM was stopped with a sync, its reason recorded, before the new one started
    old_vm = (await status(alice, old))["vm_id"]
    assert [(sid, r.reason, r.sync) for sid, r in agent.stops] == [
        (old_vm, f"replaced by job {new_job}", True)
    ]
    done = await status(alice, old)
    assert done["status"] == "completed" and done["vm_status"] == "stopped" and done["exit_code"] == 0
    assert done["history"][-1]["reason"] == f"replaced by job {new_job}"
    await status(alice, new_job, until="completed")
    head_after_stop = next(
        e.data["snapshot_id"] for e in agent.events_log if e.type == "synced" and e.job_id == old
    )
    assert created_for(agent, new_job).workspace.snapshot_id == head_after_stop


async def test_new_sandbox_is_replaced_by_a_run_on_its_workspace(
    alice: httpx.AsyncClient, agent: FakeAgentClient
) -> None:
    r = await new(alice, "box")
    box = r.json()["request_id"]
    await vm_status(alice, box, "running")
    job = await submit(alice, "echo run", workspace_id="box")
    assert (await status(alice, job, until="completed"))["status"] == "completed"
    old = await status(alice, box)
    assert old["vm_status"] == "stopped" and old["status"] == "completed"
    assert any(h["reason"] == f"replaced by job {job}" for h in old["history"])


async def test_new_for_a_live_sandbox_returns_it(
    cp: ControlPlane, alice: httpx.AsyncClient, agent: FakeAgentClient
) -> None:
    first = await new(alice, "box")
    assert first.status_code == 200 and "existing" not in first.json()
    box = first.json()["request_id"]
    again = await new(alice, "box")  # even before it runs: no second sandbox
    assert again.json() == {"request_id": box, "status": "accepted", "existing": True}
    await vm_status(alice, box, "running")
    assert (await new(alice, "box")).json()["request_id"] == box
    agent.sleep_sandbox((await status(alice, box))["vm_id"])
    await vm_status(alice, box, "sleeping")
    assert (await new(alice, "box")).json()["request_id"] == box  # sleeping counts as alive
    # asking for sync on a no-sync sandbox needs a new one: replaced
    upgraded = await new(alice, "box", persistent=True)
    assert upgraded.status_code == 200 and upgraded.json()["request_id"] != box
    await vm_status(alice, upgraded.json()["request_id"], "running")
    assert (await status(alice, box))["vm_status"] == "stopped"
    assert (await workspace(cp, "alice", "box"))["mode"] == "persistent"  # type: ignore[index]
    assert len([r for r in agent.created if r.workspace and r.workspace.workspace_id.endswith("-box")]) == 2


async def test_local_workspace_run_with_p_becomes_persistent_and_keeps_its_files(
    cp: ControlPlane, alice: httpx.AsyncClient, agent: FakeAgentClient
) -> None:
    await status(alice, await submit(alice, workspace_id="w"), until="completed")
    assert (await workspace(cp, "alice", "w"))["mode"] == "local"  # type: ignore[index]
    job = await persistent_run(alice, agent, "w")
    ref = created_for(agent, job).workspace
    # persistent from now on, starting from the local copy (no head yet)
    assert ref.mode == "persistent" and ref.sync and ref.snapshot_id is None
    ws = await workspace(cp, "alice", "w")
    assert ws["mode"] == "persistent" and ws["head_snapshot_id"]  # type: ignore[index]
    # a later run without -p still restores and syncs the workspace; only its VM ends with the script
    job = await submit(alice, workspace_id="w")
    await status(alice, job, until="completed")
    ref = created_for(agent, job).workspace
    assert ref.mode == "persistent" and ref.snapshot_id == ws["head_snapshot_id"]  # type: ignore[index]
    assert not created_for(agent, job).persistent


async def test_disk_size_follows_the_last_accepted_request(
    cp: ControlPlane, alice: httpx.AsyncClient, agent: FakeAgentClient
) -> None:
    await status(alice, await submit(alice, workspace_id="d", disk_gb=5), until="completed")
    assert (await workspace(cp, "alice", "d"))["disk_gb"] == 5  # type: ignore[index]
    job = await submit(alice, workspace_id="d")
    await status(alice, job, until="completed")
    assert created_for(agent, job).disk_gb == 5  # the agent sizes the disk to this at every start
    agent.write(await key_of(cp, "alice", "d"), used_bytes=4 * 2**30)
    refused = await submit(alice, workspace_id="d", disk_gb=1)
    job = await status(alice, refused, until="completed,error")
    assert job["status"] == "error" and "cannot shrink" in job["error_message"]
    assert (await workspace(cp, "alice", "d"))["disk_gb"] == 5  # type: ignore[index]
    await status(alice, await submit(alice, workspace_id="d", disk_gb=8), until="completed")
    assert (await workspace(cp, "alice", "d"))["disk_gb"] == 8  # type: ignore[index]


async def test_claims_never_run_two_sandboxes_on_one_workspace(
    cp: ControlPlane, alice: httpx.AsyncClient, agent: FakeAgentClient
) -> None:
    uid = await user_id(cp, "alice")
    await status(alice, await submit(alice, workspace_id="ws"), until="completed")
    # bypass the submit rules (as a second server racing us could): the claim still serialises
    ids = [new_request_id() for _ in range(3)]
    for rid in ids:
        await cp.jobs.create(uid, NewJob(request_id=rid, script="sleep 0.1", workspace_id="ws"))
    cp.dispatcher.wake()
    for rid in ids:
        await status(alice, rid, until="completed")
    assert [r.job_id for r in agent.created if r.job_id in ids] == ids  # in order, one after the other
    starts = {e.job_id: e.seq for e in agent.events_log if e.type == "started" and e.job_id in ids}
    stops = {
        e.job_id: e.seq
        for e in agent.events_log
        if e.type == "state" and e.state == "stopped" and e.job_id in ids
    }
    for before, after in itertools.pairwise(ids):
        assert stops[before] < starts[after]


async def test_concurrent_new_calls_make_one_sandbox(
    alice: httpx.AsyncClient, agent: FakeAgentClient
) -> None:
    answers = await asyncio.gather(*(new(alice, "race") for _ in range(5)))
    assert len({a.json()["request_id"] for a in answers}) == 1
    await vm_status(alice, answers[0].json()["request_id"], "running")
    assert len(agent.created) == 1
