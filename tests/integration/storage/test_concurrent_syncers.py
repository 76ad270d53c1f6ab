"""Several syncer processes on one host share the store and the host cache safely."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

from mags.storage.local import LocalObjectStore
from mags.storage.sync import restore
from mags.storage.sync.treediff import describe, diff_trees


def test_parallel_syncers_share_cache_and_store(tmp_path: Path) -> None:
    rng = random.Random(5)
    shared = rng.randbytes(2 << 20)  # the same content in every workspace: dedup races
    uppers = []
    for w in range(4):
        upper = tmp_path / f"ws{w}"
        for i in range(30):
            p = upper / f"d{i % 3}" / f"f{i}"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(rng.randbytes(rng.choice([10, 50_000])))
        (upper / "shared.bin").write_bytes(shared)
        uppers.append(upper)
    common = ["--local-root", str(tmp_path / "objects"), "--cache", str(tmp_path / "cache")]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "mags.storage.syncer", *common, "snapshot", "--upper", str(u)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for u in uppers
    ]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
        results.append(json.loads(out))
    store = LocalObjectStore(tmp_path / "objects")
    for upper, res in zip(uppers, results, strict=True):
        dest = tmp_path / f"restored-{upper.name}"
        restore(store, res["snapshot_id"], dest, tmp_path / f"fresh-{upper.name}")
        assert diff_trees(describe(upper), describe(dest)) == []
