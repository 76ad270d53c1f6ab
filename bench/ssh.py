"""Benchmark the SSH gateway against the API's exec, in one run on one real server.

As root (or with sudo):

    .venv/bin/python bench/ssh.py [--runs 50] [--runtime namespaces]

Measures, for the command ``true`` in one running sandbox:

* ``ssh host true`` with a new connection each time (OpenSSH client: TCP, key exchange,
  public-key auth, session, attach into the sandbox, exit status);
* the same over an open connection: OpenSSH ``ControlMaster`` (a new ``ssh`` process per
  command, multiplexed) and an asyncssh client session (in process: the gateway's own cost);
* ``POST /mags-jobs/{id}/exec`` through the API (keep-alive HTTP client) -- or, where the
  server has no such route (404), the agent's exec over its unix socket, said so in the output.

Prints p50/p95 per path and their ratios to the API exec.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

import httpx

from mags import Mags
from tests.integration.server_fixture import ServerProc, free_port
from tests.integration.ssh.helpers import Access, client_opts, grant
from benchlib import pct  # noqa: E402

WARMUP = 3



def timed(fn: Callable[[], None], runs: int) -> list[float]:
    out = []
    for i in range(runs + WARMUP):
        t = time.perf_counter()
        fn()
        if i >= WARMUP:
            out.append((time.perf_counter() - t) * 1000)
    return out


def ssh_new_connection(acc: Access, runs: int) -> list[float]:
    argv = [*acc.ssh_argv(), "true"]

    def once() -> None:
        subprocess.run(argv, check=True, capture_output=True)

    return timed(once, runs)


def ssh_control_master(acc: Access, runs: int, tmp: Path) -> list[float]:
    sock = tmp / "cm.sock"
    master = subprocess.Popen(
        [*acc.ssh_argv("-M", "-S", str(sock), "-N", "-o", "ControlPersist=no")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            if time.monotonic() > deadline or master.poll() is not None:
                raise RuntimeError("ControlMaster did not start")
            time.sleep(0.05)
        argv = [
            "ssh",
            *client_opts(acc.key, acc.port),
            "-S",
            str(sock),
            "-p",
            str(acc.port),
            f"root@{acc.host}",
            "true",
        ]

        def once() -> None:
            subprocess.run(argv, check=True, capture_output=True)

        return timed(once, runs)
    finally:
        master.terminate()
        master.wait(10)


async def asyncssh_session(acc: Access, runs: int) -> tuple[list[float], float]:
    import asyncssh

    t = time.perf_counter()
    async with asyncssh.connect(
        acc.host, acc.port, username="root", client_keys=[asyncssh.read_private_key(acc.key)],
        known_hosts=None, agent_path=None,
    ) as conn:  # fmt: skip
        connect_ms = (time.perf_counter() - t) * 1000
        out = []
        for i in range(runs + WARMUP):
            t = time.perf_counter()
            r = await conn.run("true")
            if i >= WARMUP:
                out.append((time.perf_counter() - t) * 1000)
            assert r.exit_status == 0
        return out, connect_ms


def api_exec(server: ServerProc, job_id: str, runs: int) -> tuple[list[float], str]:
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    with httpx.Client(base_url=f"{server.url}/api/v1", headers=headers, timeout=60) as http:
        probe = http.post(f"/mags-jobs/{job_id}/exec", json={"command": "true", "timeout": 30})
        if probe.status_code != 404:
            probe.raise_for_status()

            def once() -> None:
                r = http.post(f"/mags-jobs/{job_id}/exec", json={"command": "true", "timeout": 30})
                assert r.status_code == 200 and r.json()["exit_code"] == 0, r.text

            return timed(once, runs), "API exec (POST /mags-jobs/{id}/exec)"
    return asyncio.run(agent_exec(server, job_id, runs)), "agent exec (no API exec route on this server)"


async def agent_exec(server: ServerProc, job_id: str, runs: int) -> list[float]:
    from mags.agent.client import HttpAgentClient
    from mags.agent.models import ExecRequest

    with Mags(api_token=server.admin_token, api_url=server.url) as m:
        vm_id = m.status(job_id)["vm_id"]
    client = HttpAgentClient("bench", uds=str(server.data_dir / "run" / "agent.sock"))
    try:
        out = []
        for i in range(runs + WARMUP):
            t = time.perf_counter()
            r = await client.exec(vm_id, ExecRequest(command="true", timeout=30))
            if i >= WARMUP:
                out.append((time.perf_counter() - t) * 1000)
            assert r.exit_code == 0
        return out
    finally:
        await client.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--runtime", default="namespaces")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (sandboxes)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-ssh-"))
    tmp.chmod(0o700)
    server = ServerProc(tmp / "data", tmp / "home", free_port(), args.runtime,
                        extra_env={"MAGS_SSH_PORT": str(free_port())}).start()  # fmt: skip
    try:
        with Mags(api_token=server.admin_token, api_url=server.url) as m:
            job = m.new("bench-ssh")
        acc = grant(server.url, server.admin_token, job["request_id"], tmp, "bench")
        results: dict[str, list[float]] = {}
        api, api_label = api_exec(server, job["request_id"], args.runs)
        results["ssh host true (new connection)"] = ssh_new_connection(acc, args.runs)
        results["ssh -S ControlMaster true (open connection)"] = ssh_control_master(acc, args.runs, tmp)
        session, connect_ms = asyncio.run(asyncssh_session(acc, args.runs))
        results["asyncssh session run('true') (open connection)"] = session
        results[api_label] = api
        base = pct(api, 50)
        print(f"runtime {args.runtime}, {args.runs} runs each (after {WARMUP} warm-up), command `true`")
        print(f"{'path':<50} {'p50 ms':>8} {'p95 ms':>8} {'p50 / exec':>11}")
        for name, xs in results.items():
            print(f"{name:<50} {pct(xs, 50):8.1f} {pct(xs, 95):8.1f} {pct(xs, 50) / base:10.2f}x")
        print(f"(asyncssh connect + auth, once: {connect_ms:.1f} ms)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
