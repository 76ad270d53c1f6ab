"""Limits hold, bad input is refused clearly, and a sandbox leaves nothing behind."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from mags.errors import ValidationError
from mags.runtime.base import Limits, SandboxSpec
from mags.runtime.namespaces import BaseRuntime

pytestmark = pytest.mark.asyncio(loop_scope="module")


def spec(**kw: object) -> SandboxSpec:
    return SandboxSpec(sandbox_id=f"t-{uuid.uuid4().hex[:8]}", **kw)  # type: ignore[arg-type]


async def test_memory_bomb_is_oom_killed_and_others_keep_working(runtime: BaseRuntime) -> None:
    bomb = await runtime.create(spec(limits=Limits(memory_mb=128)))
    other = await runtime.create(spec())
    try:
        r = await bomb.exec("python3 -c \"x=[]\nwhile True: x.append(bytearray(16*1024*1024))\"", timeout=60)
        # namespaces: the kernel OOM killer kills python (137); gVisor: the sentry fails it (exit 1)
        assert r.exit_code != 0
        stats = await bomb.stats()
        assert stats.oom_kills >= 1
        r2 = await other.exec("echo alive")
        assert r2.stdout == b"alive\n"
    finally:
        await bomb.destroy()
        await other.destroy()


async def test_fork_bomb_contained_by_pids_limit(runtime: BaseRuntime) -> None:
    bomb = await runtime.create(spec(limits=Limits(pids=64)))
    other = await runtime.create(spec())
    try:
        # a bounded fork bomb: tries to hold 500 processes at once (python: no fork retries)
        bomb_src = (
            "import os, time\n"
            "for i in range(500):\n"
            "    try:\n"
            "        if os.fork() == 0:\n"
            "            time.sleep(30); os._exit(0)\n"
            "    except OSError:\n"
            "        pass\n"
            "time.sleep(30)\n"
        )
        await bomb.spawn(["python3", "-c", bomb_src])
        await asyncio.sleep(1.0 if runtime.name == "namespaces" else 3.0)
        stats = await bomb.stats()
        if runtime.name == "namespaces":
            assert 30 <= stats.pids <= 64
        r = await other.exec("echo alive", timeout=30)
        assert r.stdout == b"alive\n"
        r = await bomb.exec("ps -e | wc -l", timeout=30)
        if runtime.name == "namespaces":
            # every slot is taken: even a new command cannot start
            assert r.exit_code != 0 or int(r.stdout.strip() or 0) <= 64
        else:
            # gVisor's processes are threads of one sentry: count them inside
            assert int(r.stdout.strip() or 0) <= 65
    finally:
        await bomb.destroy()
        await other.destroy()


async def test_bad_input_is_refused_clearly(runtime: BaseRuntime) -> None:
    with pytest.raises(ValidationError, match="unknown image"):
        await runtime.create(spec(image="no-such-image"))
    with pytest.raises(ValidationError, match="memory limit"):
        await runtime.create(spec(limits=Limits(memory_mb=1)))
    with pytest.raises(ValidationError, match="pids limit"):
        await runtime.create(spec(limits=Limits(pids=0)))
    with pytest.raises(ValidationError, match="cpu limit"):
        await runtime.create(spec(limits=Limits(cpus=0)))


def _host_state(rt: BaseRuntime) -> dict[str, object]:
    net = rt.host.network
    assert net is not None and rt.host.cgroups is not None
    mounts = Path("/proc/self/mounts").read_text()
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return {
        "mounts": [m for m in mounts.splitlines() if str(rt.settings.run_dir) in m],
        "cgroups": sorted(str(p) for d in rt.host.cgroups.agent_dirs() if d.exists() for p in d.iterdir() if p.is_dir()),
        "dirs": sorted(os.listdir(rt.host.sandboxes_dir)),
        "netns": sorted(n for n in os.listdir("/run/netns") if n.startswith(net.prefix)),
        "links": sorted(w for w in links.split() if w.startswith(net.if_prefix)),
    }


async def test_sandbox_leaves_nothing_behind(runtime: BaseRuntime) -> None:
    await runtime.pool.wait_full()
    before = _host_state(runtime)
    for _ in range(3):
        sb = await runtime.create(spec(limits=Limits(memory_mb=256)))
        await sb.exec("echo hi > /root/f; sleep 0.1 &")
        await sb.destroy()
    await runtime.pool.wait_full()
    after = _host_state(runtime)
    # the same number of pooled sandboxes and prepared network slots, nothing more
    assert len(after["cgroups"]) == len(before["cgroups"])  # type: ignore[arg-type]
    assert len(after["dirs"]) == len(before["dirs"])  # type: ignore[arg-type]
    # only the agent's own mounts (scratch, the tmpfs holding resolv.conf/hosts): no
    # per-sandbox mount survives
    # pooled sandboxes have scratch disks of their own (new names after the refill)
    assert len(after["mounts"]) == len(before["mounts"])  # type: ignore[arg-type]
    live = [f"/run/sb/{sb.res.name}/scratch/mnt " for sb in runtime.sandboxes()]  # type: ignore[attr-defined]
    agent_mounts = ("/run/etc ", *live)
    assert [m for m in after["mounts"] if not any(a in m for a in agent_mounts)] == []  # type: ignore[union-attr]
    assert after["netns"] == before["netns"] and after["links"] == before["links"]


async def test_runtime_close_removes_everything(tmp_path: Path) -> None:
    from tests.integration.runtime.conftest import runtime_settings, skip_reason
    from mags.runtime.factory import create_runtime

    settings = runtime_settings(str(tmp_path), pool_size=1)
    if reason := skip_reason("namespaces", settings):
        pytest.skip(reason)
    rt = create_runtime(settings, name="namespaces")
    await rt.start()
    sb = await rt.create(spec())
    await sb.exec("sleep 100 &")
    net = rt.host.network
    assert net is not None
    prefix, chain, cg_dirs = net.prefix, net.chain, rt.host.cgroups.agent_dirs()  # type: ignore[union-attr]
    await rt.close()
    assert not [n for n in os.listdir("/run/netns") if n.startswith(prefix)]
    rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
    rules += subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True, text=True).stdout
    assert chain + "-" not in rules
    assert not any(d.exists() for d in cg_dirs)
    assert str(settings.run_dir) not in Path("/proc/self/mounts").read_text()


async def test_spawn_reports_exec_failures_and_uses_the_callers_path(runtime: BaseRuntime) -> None:
    # init spawns with vfork: the exec error must still reach the caller, the PATH searched
    # must be the one given to spawn, and init's own environment must be left as it was
    sb = await runtime.create(spec())
    try:
        r = await sb.exec(["no-such-command-xyz"])
        assert r.exit_code == 127
        assert b"cannot execute no-such-command-xyz" in r.stderr
        r = await sb.exec(["/no/such/file"])
        assert r.exit_code == 127 and b"cannot execute /no/such/file" in r.stderr
        await sb.put_file("/opt/mybin/only-here", b"#!/bin/sh\necho found-it\n", mode=0o755)
        r = await sb.exec(["only-here"], env={"PATH": "/opt/mybin"})
        assert (r.exit_code, r.stdout) == (0, b"found-it\n")
        r = await sb.exec(["only-here"])
        assert r.exit_code == 127
        r = await sb.exec(["true"])
        assert r.exit_code == 0
    finally:
        await sb.destroy()


async def test_network_slot_is_reusable_after_destroy(runtime: BaseRuntime) -> None:
    # gVisor's netstack moves eth0's address into the sandbox while it runs: destroy must put
    # it (and the default route) back before the slot serves the next sandbox
    net = runtime.host.network
    assert net is not None
    sb = await runtime.create(spec())
    slot = sb.res.net  # type: ignore[attr-defined]
    code = (await sb.exec(["true"])).exit_code
    assert code == 0
    await sb.destroy()
    addrs = subprocess.run(["ip", "-n", slot.netns, "-4", "-o", "addr", "show", "eth0"], capture_output=True, text=True)
    routes = subprocess.run(["ip", "-n", slot.netns, "route"], capture_output=True, text=True)
    assert f"inet {slot.ip}/30" in addrs.stdout
    assert f"default via {slot.host_ip}" in routes.stdout
    assert slot in net._free
