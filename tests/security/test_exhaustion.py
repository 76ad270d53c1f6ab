"""Resource exhaustion from inside a sandbox, bounded, with the host as the witness.

A tenant runs a fork bomb, a memory bomb, fills its disk's inodes, and starts sandboxes in a
loop.  Each test measures the host while it happens -- its process count (and the processes
in the sandbox's own network namespace), its free memory, its free inodes, whether the API
still answers -- and checks that everything of the sandbox is gone once it is stopped.  Each
bomb runs for seconds and its sandbox is stopped in a ``finally``.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from pathlib import Path

import httpx
import pytest

from mags import Mags
from mags.config import load_settings
from mags.errors import ClientError
from mags.runtime.gvisor import GVISOR_THREAD_HEADROOM
from tests.integration.server_fixture import ServerProc
from tests.security.conftest import Tenants
from tests.security.helpers import (
    Sampler,
    guest_net,
    guest_python,
    host_pids,
    mem_available,
    processes_in_netns,
    sandbox_netns,
    still_alive,
)

GiB = 1 << 30
BOMB_SECONDS = 8
HOST_NOISE = 512  # other processes that come and go on this shared host meanwhile


def host_side_pids_cap(runtime: str) -> int:
    """How many host processes one sandbox may hold: its pids cgroup limit.

    Under gVisor every guest process also costs host processes (systrap stubs), so its
    cgroup gets 3x the guest limit plus headroom, while the guest itself is held to the
    limit by RLIMIT_NPROC (ARCHITECTURE.md, "gVisor specifics").
    """
    pids = load_settings().default_pids
    return pids if runtime == "namespaces" else pids * 3 + GVISOR_THREAD_HEADROOM


def health_latency(url: str) -> float:
    started = time.monotonic()
    r = httpx.get(f"{url}/api/v1/health", timeout=5)
    r.raise_for_status()
    return time.monotonic() - started


class NetnsWatch:
    """Every host process seen in a network namespace, and the most seen at once."""

    def __init__(self, ns: Path) -> None:
        self.ns = ns
        self.seen: dict[int, int] = {}
        self.most = 0

    def sample(self) -> None:
        now = processes_in_netns(self.ns)
        self.seen.update(now)
        self.most = max(self.most, len(now))


def test_a_fork_bomb_is_capped_and_leaves_nothing_behind(tenants: Tenants, sec_server: ServerProc) -> None:
    assert sec_server.proc is not None
    cap = host_side_pids_cap(sec_server.runtime)
    with tenants.client(tenants.alice_token) as alice, tenants.client(tenants.bob_token) as bob:
        job = alice.new(f"bomb-{uuid.uuid4().hex[:6]}", timeout=120)["request_id"]
        try:
            watch = NetnsWatch(sandbox_netns(guest_net(alice, job).gateway, sec_server.proc.pid))
            baseline = len(host_pids())
            latencies: list[float] = []
            with Sampler(lambda: len(host_pids()), 0.2) as host_count, Sampler(watch.sample, 0.3):
                started = alice.exec(job, "nohup bash -c ':(){ :|:& };:' >/dev/null 2>&1 & echo lit")
                assert started["output"].strip() == "lit", started
                deadline = time.monotonic() + BOMB_SECONDS
                while time.monotonic() < deadline:
                    latencies.append(health_latency(sec_server.url))  # raises past 5 s
                    time.sleep(0.5)
                # another tenant is still served, start to finish
                other = bob.run_and_wait("echo still-served", timeout=60)
                assert other["exit_code"] == 0 and "still-served" in str(other["logs"]), other
                stopped = alice.stop(job)
            assert stopped["vm_status"] in ("stopped", "stopping"), stopped
        finally:
            with contextlib.suppress(ClientError):
                alice.stop(job)

    assert watch.most > 100, f"the bomb never ran ({watch.most} processes in its sandbox)"
    assert watch.most <= cap, f"{watch.most} host processes in one sandbox, cap {cap}"
    grew = max(host_count.values) - baseline
    assert grew <= cap + HOST_NOISE, f"the host gained {grew} processes (cap {cap})"
    assert max(latencies) < 5, latencies
    deadline = time.monotonic() + 30
    while still_alive(watch.seen) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert still_alive(watch.seen) == {}, (
        f"processes of the stopped sandbox survive: {still_alive(watch.seen)}"
    )


def test_a_memory_bomb_is_killed_at_the_limit_and_the_host_keeps_its_memory(
    alice: Mags, sec_server: ServerProc
) -> None:
    limit_mb = load_settings().default_memory_mb
    before = mem_available()
    script = (
        'python3 -c "x = []\n'
        "for i in range(64): x.append(b'x' * (64 << 20))\n"
        "print('survived', len(x))\""
    )  # 4 GiB, every page written
    with Sampler(mem_available, 0.05) as free:
        res = alice.run_and_wait(script, timeout=180)
    job = alice.status(res["request_id"])
    assert job["status"] == "error", job
    assert "out of memory" in (job["error_message"] or ""), job
    assert f"{limit_mb} MB" in job["error_message"], job
    assert "survived" not in str(res["logs"]), res
    dropped = before - min(free.values)
    assert dropped < 1.5 * GiB, f"host MemAvailable fell by {dropped / GiB:.2f} GiB"
    assert health_latency(sec_server.url) < 5


def test_filling_a_workspace_disk_with_files_costs_the_host_no_inodes(
    alice: Mags, sec_server: ServerProc
) -> None:
    ws = f"inodes-{uuid.uuid4().hex[:6]}"
    before = os.statvfs(sec_server.data_dir).f_ffree
    job = alice.new(ws, disk_gb=1, timeout=120)["request_id"]
    try:
        res = guest_python(alice, job, """
import errno, os
os.makedirs('/root/many', exist_ok=True)
n = 0
try:
    while n < 2_000_000:
        os.close(os.open('/root/many/%d' % n, os.O_CREAT | os.O_WRONLY, 0o600))
        n += 1
    print(n, 'no limit')
except OSError as e:
    print(n, errno.errorcode.get(e.errno, e.errno))
""", timeout=600)  # fmt: skip
        created, outcome = res["output"].split()
        assert outcome == "ENOSPC" and int(created) > 10_000, res
        used = before - os.statvfs(sec_server.data_dir).f_ffree
        assert used < 5_000, f"the host lost {used} inodes to {created} files in a sandbox"
        # the sandbox and the host both still work
        assert alice.exec(job, "rm -rf /root/many && echo ok")["output"].strip() == "ok"
        probe = Path(sec_server.data_dir) / f"probe-{uuid.uuid4().hex}"
        probe.write_text("x")
        probe.unlink()
    finally:
        alice.stop(job)
    deadline = time.monotonic() + 60
    while True:
        try:
            alice.delete_workspace(ws)
            break
        except ClientError as exc:
            if exc.status_code != 409 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_a_tenant_cannot_start_sandboxes_without_bound(tenants: Tenants, sec_server: ServerProc) -> None:
    """Starting sandboxes in a loop meets a per-tenant limit; other tenants still get theirs."""
    if sec_server.runtime != "namespaces":
        pytest.skip("the limit is enforced at admission, whatever the runtime: checked once")
    tries = 40
    started: list[str] = []
    refusal: ClientError | None = None
    with tenants.client(tenants.bob_token) as bob, tenants.client(tenants.alice_token) as alice:
        try:
            for _ in range(tries):
                try:
                    started.append(bob.run("sleep 120")["request_id"])
                except ClientError as exc:
                    refusal = exc
                    break
            assert refusal is not None, f"{tries} sandboxes started for one tenant without any refusal"
            assert refusal.status_code == 429, refusal
            # the limit is per tenant: Alice is not locked out by Bob's sandboxes
            assert alice.run_and_wait("echo mine", timeout=120)["exit_code"] == 0
        finally:
            for job in started:
                with contextlib.suppress(ClientError):
                    bob.stop(job)
