"""Benchmark the sandbox runtimes against the bare isolation primitives, in one run.

    sudo .venv/bin/python bench/runtime.py [--runs 30] [--backend namespaces|gvisor|all]

For each backend it prints start→exit of `true` and of `python3 -c 'print(1)'` (p50/p95):
*warm* (a pre-started sandbox from the pool, the product's normal path) and *cold* (pool
disabled: cgroup + overlay + namespaces + init built for the run), exec into a running
sandbox, teardown, memory per idle sandbox, and the ratio to the bare primitive measured in
the same run (`unshare` for namespaces, `runsc run` for gVisor).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mags.config import load_settings  # noqa: E402
from mags.runtime.base import SandboxSpec  # noqa: E402
from mags.runtime.factory import create_runtime  # noqa: E402
from mags.runtime.image import resolve_image  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def fmt(xs: list[float]) -> str:
    return f"p50 {pct(xs, 50):7.2f} ms  p95 {pct(xs, 95):7.2f} ms"


async def timed_cmd(argv: list[str]) -> float:
    t = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rc = await proc.wait()
    if rc != 0:
        raise RuntimeError(f"{argv[:3]} failed with {rc}")
    return (time.perf_counter() - t) * 1000


async def bare_unshare(cmd: list[str], runs: int, rootfs: Path) -> list[float]:
    argv = ["unshare", "--mount", "--pid", "--net", "--uts", "--ipc", "--fork", "--root", str(rootfs), *cmd]
    return [await timed_cmd(argv) for _ in range(runs)]


async def bare_runsc(cmd: list[str], runs: int, rootfs: Path, runsc: str) -> list[float]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-runsc-"))
    spec = {
        "ociVersion": "1.0.2",
        "process": {"user": {"uid": 0, "gid": 0}, "args": cmd, "env": ["PATH=/usr/bin:/bin"], "cwd": "/"},
        "root": {"path": str(rootfs), "readonly": True},
        "hostname": "bare",
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network")]},
    }
    (tmp / "config.json").write_text(json.dumps(spec))
    out = []
    try:
        for _ in range(runs):
            cid = f"bench-{uuid.uuid4().hex[:8]}"
            out.append(await timed_cmd([runsc, "--root", str(tmp / "state"), "--platform=systrap", "--network=none",
                                        "--ignore-cgroups", "run", "--bundle", str(tmp), cid]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


async def run_once(rt, script: list[str], warm: bool) -> tuple[float, float]:
    if warm:
        await rt.pool.wait_full()
    t = time.perf_counter()
    sb = await rt.create(SandboxSpec(sandbox_id=f"b-{uuid.uuid4().hex[:8]}", limits=rt.default_limits))
    proc = await sb.spawn(script)
    st = await proc.wait()
    start_exit = (time.perf_counter() - t) * 1000
    if st.exit_code != 0:
        raise RuntimeError(f"{script} exited {st.exit_code}: {proc.errors}")
    t = time.perf_counter()
    await sb.destroy()
    return start_exit, (time.perf_counter() - t) * 1000


async def bench_backend(name: str, runs: int) -> dict[str, object]:
    data = tempfile.mkdtemp(prefix=f"bench-{name}-")
    results: dict[str, object] = {}
    rootfs = resolve_image(load_settings(data_dir=data), "standard").rootfs
    for mode, pool in (("warm", 2), ("cold", 0)):
        settings = load_settings(data_dir=data, pool_size=pool)
        rt = create_runtime(settings, name=name)
        await rt.start()
        try:
            for label, cmd in (("true", ["true"]), ("python", ["python3", "-c", "print(1)"])):
                await run_once(rt, cmd, mode == "warm")  # warm-up
                samples = [await run_once(rt, cmd, mode == "warm") for _ in range(runs)]
                results[f"{mode}:{label}"] = [s[0] for s in samples]
                results[f"{mode}:{label}:destroy"] = [s[1] for s in samples]
            if mode == "warm":
                sb = await rt.create(SandboxSpec(sandbox_id="exec-bench", limits=rt.default_limits))
                execs = []
                for _ in range(runs + 1):
                    t = time.perf_counter()
                    r = await sb.exec(["true"])
                    execs.append((time.perf_counter() - t) * 1000)
                    assert r.exit_code == 0
                results["exec"] = execs[1:]
                await sb.destroy()
                idle = [await rt.create(SandboxSpec(sandbox_id=f"idle-{i}", limits=rt.default_limits)) for i in range(5)]
                await asyncio.sleep(1.0)
                mems = [(await s.stats()).memory_bytes for s in idle]
                results["idle_memory_mb"] = statistics.mean(mems) / 2**20
                for s in idle:
                    await s.destroy()
        finally:
            await rt.close()
    if name == "namespaces":
        results["bare:true"] = await bare_unshare(["true"], runs, rootfs)
        results["bare:python"] = await bare_unshare(["python3", "-c", "print(1)"], runs, rootfs)
        results["bare_name"] = "unshare --mount --pid --net --uts --ipc --fork --root <image> CMD"
    else:
        runsc = shutil.which("runsc") or "runsc"
        results["bare:true"] = await bare_runsc(["true"], runs, rootfs, runsc)
        results["bare:python"] = await bare_runsc(["python3", "-c", "print(1)"], runs, rootfs, runsc)
        results["bare_name"] = "runsc --platform=systrap --network=none run (read-only image root)"
    shutil.rmtree(data, ignore_errors=True)
    return results


def report(name: str, r: dict[str, object]) -> None:
    print(f"\n=== {name} ===  (bare primitive: {r['bare_name']})")
    for label in ("true", "python"):
        bare = pct(r[f"bare:{label}"], 50)  # type: ignore[arg-type]
        print(f"  {label:7s} bare        {fmt(r[f'bare:{label}'])}")  # type: ignore[arg-type]
        for mode in ("warm", "cold"):
            xs: list[float] = r[f"{mode}:{label}"]  # type: ignore[assignment]
            print(f"  {label:7s} {mode:4s} start→exit {fmt(xs)}   ratio to bare p50 {pct(xs, 50) / bare:5.2f}x"
                  f"   (teardown p50 {pct(r[f'{mode}:{label}:destroy'], 50):.1f} ms, off the critical path)")  # type: ignore[arg-type]
    print(f"  exec into running sandbox       {fmt(r['exec'])}")  # type: ignore[arg-type]
    print(f"  memory per idle sandbox         {r['idle_memory_mb']:.1f} MiB (cgroup memory usage)")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--backend", default="all", choices=["all", "namespaces", "gvisor"])
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    backends = ["namespaces", "gvisor"] if args.backend == "all" else [args.backend]
    print(f"mags runtime benchmark: {args.runs} runs each, {os.cpu_count()} CPUs")
    for b in backends:
        report(b, await bench_backend(b, args.runs))


if __name__ == "__main__":
    asyncio.run(main())
