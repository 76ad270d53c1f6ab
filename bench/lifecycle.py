"""Benchmark exec round trips and wake-from-sleep against a real server, in one run.

As root (or with sudo):

    .venv/bin/python bench/lifecycle.py [--runs 100] [--runtime namespaces]

Prints exec p50/p95 through the API (SDK `exec` by job id: HTTP → control plane → agent →
sandbox → back), the runtime's exec alone (in this process, same command), their ratio, and
the time from `sleeping` to the first output of an exec for a workspace of ~50 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from mags import Mags  # noqa: E402
from mags.config import load_settings  # noqa: E402
from mags.runtime.base import SandboxSpec  # noqa: E402
from mags.runtime.factory import create_runtime  # noqa: E402
from tests.integration.server_fixture import ServerProc, free_port  # noqa: E402
from benchlib import pct  # noqa: E402



async def runtime_exec(runs: int, runtime: str) -> list[float]:
    settings = load_settings(data_dir=tempfile.mkdtemp(prefix="bench-life-rt-"), pool_size=1)
    rt = create_runtime(settings, name=runtime)
    await rt.start()
    try:
        sb = await rt.create(SandboxSpec(sandbox_id="bench", limits=rt.default_limits))
        out = []
        for i in range(runs + 5):
            t = time.perf_counter()
            r = await sb.exec("true")
            if i >= 5:
                out.append((time.perf_counter() - t) * 1000)
            assert r.exit_code == 0
        await sb.destroy()
        return out
    finally:
        await rt.close()


def wait_vm(m: Mags, rid: str, wanted: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if m.status(rid)["vm_status"] == wanted:
            return
        time.sleep(0.1)
    raise SystemExit(f"sandbox never became {wanted}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--runtime", default="namespaces")
    ap.add_argument("--wakes", type=int, default=5)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    base = Path(tempfile.mkdtemp(prefix="bench-life-"))
    srv = ServerProc(base / "data", base / "home", free_port(), args.runtime,
                     extra_env={"MAGS_IDLE_TIMEOUT_S": "2"}).start()
    try:
        with Mags(api_token=srv.admin_token, api_url=srv.url) as m:
            job = m.run("sleep infinity", workspace_id="bench-exec", persistent=True, no_sleep=True)
            rid = job["request_id"]
            wait_vm(m, rid, "running", 30)
            api = []
            for i in range(args.runs + 5):
                t = time.perf_counter()
                r = m.exec(rid, "true")
                if i >= 5:
                    api.append((time.perf_counter() - t) * 1000)
                assert r["exit_code"] == 0, r
            m.stop(rid)
            # a ~50 MB workspace: a pip-sized tree of files
            job = m.run("mkdir -p /root/data && for i in $(seq 50); do head -c 1000000 /dev/urandom > /root/data/f$i; done",
                        workspace_id="bench-wake", persistent=True)
            rid = job["request_id"]
            wakes = []
            for _ in range(args.wakes):
                wait_vm(m, rid, "sleeping", 60)
                t = time.perf_counter()
                r = m.exec(rid, "du -sm /root/data | cut -f1")
                wakes.append((time.perf_counter() - t) * 1000)
                assert r["exit_code"] == 0 and int(r["output"].strip()) >= 47, r
            m.stop(rid)
        alone = asyncio.run(runtime_exec(args.runs, args.runtime))
    finally:
        srv.stop()
    print(f"mags lifecycle benchmark ({args.runtime} runtime, {os.cpu_count()} CPUs)")
    print(f"  exec through the API:   p50 {pct(api, 50):6.2f} ms  p95 {pct(api, 95):6.2f} ms  ({len(api)} runs)")
    print(f"  runtime exec alone:     p50 {pct(alone, 50):6.2f} ms  p95 {pct(alone, 95):6.2f} ms")
    print(f"  ratio API / runtime p50: {pct(api, 50) / pct(alone, 50):.2f}x")
    print(f"  wake (sleeping → first exec output, ~50 MB workspace): p50 {pct(wakes, 50):6.1f} ms  max {max(wakes):6.1f} ms"
          f"  ({len(wakes)} wakes)")


if __name__ == "__main__":
    main()
