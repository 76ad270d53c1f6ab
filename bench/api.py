"""End-to-end API benchmark: SDK `run_and_wait('true')` against a real server, vs the runtime alone.

As root (or with sudo):

    .venv/bin/python bench/api.py [--runs 50] [--seconds 30] [--clients 20] [--runtime namespaces]

Prints p50/p95 of submit → completed → logs through the SDK over a real `mags server`
subprocess, the same for the runtime alone (warm pool, `bash -c true`, in this process), the
ratio, and sustained jobs/second with N concurrent clients, checking no job is lost or stuck.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import threading
import time
import uuid
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



async def runtime_alone(runs: int, runtime: str) -> list[float]:
    settings = load_settings(data_dir=tempfile.mkdtemp(prefix="bench-api-rt-"), pool_size=2)
    rt = create_runtime(settings, name=runtime)
    await rt.start()
    out = []
    try:
        for i in range(runs + 3):
            await rt.pool.wait_full()
            t = time.perf_counter()
            sb = await rt.create(SandboxSpec(sandbox_id=f"b{i}", limits=rt.default_limits))
            proc = await sb.spawn_script("true")
            async for _ in proc.events():
                pass
            if i >= 3:
                out.append((time.perf_counter() - t) * 1000)
            await sb.destroy()
    finally:
        await rt.close()
    return out


def end_to_end(m: Mags, runs: int) -> list[float]:
    out = []
    for i in range(runs + 3):
        t = time.perf_counter()
        r = m.run_and_wait("true", timeout=60)
        dt = (time.perf_counter() - t) * 1000
        assert r["status"] == "completed", r
        if i >= 3:
            out.append(dt)
        time.sleep(0.05)  # let the warm pool refill, as between a user's runs
    return out


def throughput(srv: ServerProc, clients: int, seconds: float) -> tuple[float, int, list[str]]:
    stop_at = time.monotonic() + seconds
    done: list[str] = []
    problems: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        with Mags(api_token=srv.admin_token, api_url=srv.url) as m:
            while time.monotonic() < stop_at:
                tag = uuid.uuid4().hex[:8]
                try:
                    r = m.run_and_wait(f"echo {tag}", timeout=120)
                except Exception as exc:  # noqa: BLE001 - counted as a problem
                    with lock:
                        problems.append(f"{type(exc).__name__}: {exc}")
                    continue
                ok = r["status"] == "completed" and any(e["message"] == tag for e in r["logs"])
                with lock:
                    (done if ok else problems).append(r["request_id"] if ok else f"bad result {r}")

    t = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.monotonic() - t
    return len(done) / elapsed, len(done), problems


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--runtime", default="namespaces")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    base = Path(tempfile.mkdtemp(prefix="bench-api-"))
    srv = ServerProc(base / "data", base / "home", free_port(), args.runtime).start()
    try:
        with Mags(api_token=srv.admin_token, api_url=srv.url) as m:
            e2e = end_to_end(m, args.runs)
        alone = asyncio.run(runtime_alone(args.runs, args.runtime))
        rate, n, problems = throughput(srv, args.clients, args.seconds)
        with Mags(api_token=srv.admin_token, api_url=srv.url) as m:
            jobs = m.list_jobs(page_size=200)["jobs"]
            stuck = [j["request_id"] for j in jobs if j["status"] in ("pending", "running")]
    finally:
        srv.stop()
    print(f"mags API benchmark ({args.runtime} runtime, {os.cpu_count()} CPUs)")
    print(f"  end-to-end run_and_wait('true') via SDK: p50 {pct(e2e, 50):6.1f} ms  p95 {pct(e2e, 95):6.1f} ms  ({len(e2e)} runs)")
    print(f"  runtime alone (warm, bash -c true):      p50 {pct(alone, 50):6.1f} ms  p95 {pct(alone, 95):6.1f} ms")
    print(f"  ratio end-to-end / runtime p50:          {pct(e2e, 50) / pct(alone, 50):.2f}x")
    print(f"  throughput, {args.clients} concurrent clients, {args.seconds:.0f} s: {rate:.1f} jobs/s ({n} jobs)")
    print(f"  lost or failed: {len(problems)}   stuck (pending/running at the end): {len(stuck)}")
    for p in problems[:5]:
        print("    ", p)


if __name__ == "__main__":
    main()
