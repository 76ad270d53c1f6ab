"""Benchmark the sandbox runtimes against the bare isolation primitives, in one run.

As root (or with sudo):

    .venv/bin/python bench/runtime.py [--runs 30] [--backend namespaces|namespaces-no-userns|gvisor|all]

For each backend it prints start→exit of `true` and of `python3 -c 'print(1)'` (p50/p95):
*warm* (a pre-started sandbox from the pool, the product's normal path) and *cold* (pool
disabled: cgroup + overlay + namespaces + init built for the run), exec into a running
sandbox, teardown, memory per idle sandbox, and the ratio to the bare primitive measured in
the same run, each bare run right after a cold start (`unshare` for namespaces, `runsc run`
for gVisor; see BareRunsc for what the bare run does not do).
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
from benchlib import pct  # noqa: E402



def fmt(xs: list[float]) -> str:
    return f"p50 {pct(xs, 50):7.2f} ms  p95 {pct(xs, 95):7.2f} ms"


async def timed_cmd(argv: list[str]) -> float:
    t = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rc = await proc.wait()
    if rc != 0:
        raise RuntimeError(f"{argv[:3]} failed with {rc}")
    return (time.perf_counter() - t) * 1000


class BareUnshare:
    """The bare primitive of the namespaces backend."""

    name = "unshare --mount --pid --net --uts --ipc --fork --root <image> CMD"

    def __init__(self, rootfs: Path) -> None:
        self.rootfs = rootfs

    async def once(self, cmd: list[str]) -> float:
        return await timed_cmd(["unshare", "--mount", "--pid", "--net", "--uts", "--ipc", "--fork",
                                "--root", str(self.rootfs), *cmd])

    def close(self) -> None:
        pass


class BareRunsc:
    """The bare primitive of the gvisor backend: `runsc run` of CMD in the image root.

    Not the same work as a sandbox: no network (loopback only, where a sandbox has its own
    namespace + veth served by netstack), the image root read-only (no overlay, no cgroup),
    CMD is the container's only process (no init, no protocol), and runsc's own teardown is
    inside the number (a sandbox's teardown is measured apart).
    """

    name = ("runsc --platform=systrap --network=none run (read-only image root, "
            "no netns/overlay/cgroup/init; includes runsc's teardown)")

    def __init__(self, rootfs: Path, runsc: str) -> None:
        self.rootfs, self.runsc = rootfs, runsc
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-runsc-"))
        self.bundles: dict[tuple[str, ...], Path] = {}

    def _bundle(self, cmd: list[str]) -> Path:
        b = self.bundles.get(tuple(cmd))
        if b is None:
            b = self.bundles[tuple(cmd)] = self.tmp / f"b{len(self.bundles)}"
            b.mkdir()
            spec = {
                "ociVersion": "1.0.2",
                "process": {"user": {"uid": 0, "gid": 0}, "args": cmd, "env": ["PATH=/usr/bin:/bin"], "cwd": "/"},
                "root": {"path": str(self.rootfs), "readonly": True},
                "hostname": "bare",
                "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
                "linux": {"namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network")]},
            }
            (b / "config.json").write_text(json.dumps(spec))
        return b

    async def once(self, cmd: list[str]) -> float:
        cid = f"bench-{uuid.uuid4().hex[:8]}"
        return await timed_cmd([self.runsc, "--root", str(self.tmp / "state"), "--platform=systrap", "--network=none",
                                "--ignore-cgroups", "run", "--bundle", str(self._bundle(cmd)), cid])

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


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


# what a name on the command line runs: (runtime, setting overrides)
VARIANTS: dict[str, tuple[str, dict[str, object]]] = {
    "namespaces": ("namespaces", {}),
    # the same runtime without a user namespace (guest root = host root): what it costs
    "namespaces-no-userns": ("namespaces", {"userns": False}),
    "gvisor": ("gvisor", {}),
}


async def bench_backend(variant: str, runs: int) -> dict[str, object]:
    name, overrides = VARIANTS[variant]
    data = tempfile.mkdtemp(prefix=f"bench-{variant}-")
    results: dict[str, object] = {}
    rootfs = resolve_image(load_settings(data_dir=data), "standard").rootfs
    bare: BareUnshare | BareRunsc
    bare = BareUnshare(rootfs) if name == "namespaces" else BareRunsc(rootfs, shutil.which("runsc") or "runsc")
    results["bare_name"] = bare.name
    try:
        for mode, pool in (("warm", 2), ("cold", 0)):
            settings = load_settings(data_dir=data, pool_size=pool, **overrides)
            rt = create_runtime(settings, name=name)
            await rt.start()
            try:
                for label, cmd in (("true", ["true"]), ("python", ["python3", "-c", "print(1)"])):
                    await run_once(rt, cmd, mode == "warm")  # warm-up
                    samples, bare_samples = [], []
                    if mode == "cold":
                        await bare.once(cmd)  # warm-up
                    for _ in range(runs):
                        samples.append(await run_once(rt, cmd, mode == "warm"))
                        if mode == "cold":
                            # interleaved with the cold starts, so both see the same machine
                            bare_samples.append(await bare.once(cmd))
                    results[f"{mode}:{label}"] = [s[0] for s in samples]
                    results[f"{mode}:{label}:destroy"] = [s[1] for s in samples]
                    if mode == "cold":
                        results[f"bare:{label}"] = bare_samples
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
    finally:
        bare.close()
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
    ap.add_argument("--backend", default="all", choices=["all", *VARIANTS])
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    backends = list(VARIANTS) if args.backend == "all" else [args.backend]
    print(f"mags runtime benchmark: {args.runs} runs each, {os.cpu_count()} CPUs")
    for b in backends:
        report(b, await bench_backend(b, args.runs))


if __name__ == "__main__":
    asyncio.run(main())
