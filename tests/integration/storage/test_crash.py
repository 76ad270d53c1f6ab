"""SIGKILL the syncer anywhere: the head always restores to exactly the last committed tree.

Each round mutates an upper dir at random, runs ``python -m mags.storage.syncer snapshot
--head-db`` (which commits by CAS itself) and kills it either at a named step (via
``MAGS_STORAGE_KILL_AT``) or after a random delay.  Afterwards the current head is restored —
on a fresh host and on this host — and must equal, byte for byte and in every piece of
metadata, the tree as it was when the sync that committed it started.  GC runs now and then,
so syncs also start from a host index that names deleted packs.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mags.storage.local import LocalObjectStore
from mags.storage.sync import SQLiteHeadStore, cleanup_leftovers, gc, restore
from mags.storage.sync.killpoints import ENV
from mags.storage.sync.treediff import describe, diff_trees

ROUNDS = 26
SEED = int(os.environ.get("MAGS_CRASH_SEED", "20240607"))
KILL_STEPS = [
    "scanned",
    "pack_uploaded",
    "pack_uploaded:2",
    "packs_uploaded",
    "root_written",
    "cache_updated",
    "before_commit",
    "after_commit",
]
IS_ROOT = os.geteuid() == 0


def _mutate(root: Path, rng: random.Random, serial: int) -> None:
    files = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    dirs = [root] + [p for p in root.rglob("*") if p.is_dir() and not p.is_symlink()]
    for _ in range(rng.randint(1, 6)):
        op = rng.choice(
            ["add", "add", "add_big", "modify", "append", "delete", "rename", "mkdir", "rmtree", "chmod",
             "symlink", "hardlink", "xattr", "touch", "whiteout"]
        )  # fmt: skip
        d = rng.choice(dirs)
        if not d.exists():
            continue
        name = d / f"n{serial}-{rng.randrange(10**6)}"
        if op == "add":
            name.write_bytes(rng.randbytes(rng.choice([0, 10, 4000, 70_000, 300_000])))
        elif op == "add_big":
            name.write_bytes(rng.randbytes(rng.randint(1, 3) << 20))
        elif op == "mkdir":
            name.mkdir()
            (name / "inner").write_bytes(rng.randbytes(1000))
        elif op == "symlink":
            os.symlink(rng.choice(["../x", "/abs/target", "inner"]), name)
        elif op == "whiteout" and IS_ROOT:
            os.mknod(name, stat.S_IFCHR, os.makedev(0, 0))
        elif op == "rmtree" and d != root:
            shutil.rmtree(d)
            dirs = [x for x in dirs if x.exists()]
        elif files:
            f = rng.choice(files)
            if not f.exists():
                continue
            if op == "modify" and f.stat().st_size:
                with open(f, "r+b") as fh:
                    fh.seek(rng.randrange(f.stat().st_size))
                    fh.write(rng.randbytes(100))
            elif op == "append":
                with open(f, "ab") as fh:
                    fh.write(rng.randbytes(rng.randint(1, 5000)))
            elif op == "delete":
                f.unlink()
            elif op == "rename":
                f.rename(name)
            elif op == "chmod":
                f.chmod(rng.choice([0o600, 0o644, 0o755, 0o700]))
            elif op == "hardlink":
                os.link(f, name)
            elif op == "xattr":
                os.setxattr(f, "user.crash", rng.randbytes(8))
            elif op == "touch":
                os.utime(f, ns=(rng.randrange(10**18), rng.randrange(10**18)))
        files = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]


def _syncer(args: list[str], env_kill: str | None, delay: float | None) -> tuple[int, dict[str, Any] | None]:
    env = dict(os.environ)
    env.pop(ENV, None)
    if env_kill:
        env[ENV] = env_kill
    proc = subprocess.Popen(
        [sys.executable, "-m", "mags.storage.syncer", *args], env=env, stdout=subprocess.PIPE, text=True
    )
    if delay is not None:
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=120)
    line = out.strip().splitlines()[-1] if out.strip() else ""
    return proc.returncode, (json.loads(line) if line else None)


def test_sigkill_never_loses_the_last_commit(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "seed").write_bytes(rng.randbytes(50_000))
    objects, cache, heads_db = tmp_path / "objects", tmp_path / "host-cache", tmp_path / "heads.db"
    store = LocalObjectStore(objects)
    heads = SQLiteHeadStore(heads_db)
    common = ["--local-root", str(objects), "--cache", str(cache)]
    expected: dict[str, dict[str, Any]] = {}
    last_gen, last_head = 0, None
    kills = commits = 0
    for rnd in range(ROUNDS):
        _mutate(upper, rng, rnd)
        tree = describe(upper)
        kill_at = KILL_STEPS[rnd % len(KILL_STEPS)] if rnd % 3 != 2 else None
        delay = rng.uniform(0.05, 0.5) if kill_at is None and rnd % 2 == 0 else None
        code, out = _syncer(
            [*common, "snapshot", "--upper", str(upper), "--head-db", str(heads_db), "--workspace", "ws"],
            kill_at,
            delay,
        )
        kills += code == -signal.SIGKILL
        head, gen = heads.get_head("ws")
        if gen != last_gen:
            assert gen == last_gen + 1 and head is not None
            expected[head] = tree
            last_gen, last_head = gen, head
            commits += 1
        else:
            assert head == last_head
            assert code != 0 or (out is not None and not out["changed"]), out
        if head is None:
            continue
        # The head restores exactly: on a fresh host, and on this host (with its cache).
        for label, host_cache in (("fresh", tmp_path / f"fresh-{rnd}"), ("same", cache)):
            dest = tmp_path / f"restore-{rnd}-{label}"
            restore(store, head, dest, host_cache)
            problems = diff_trees(expected[head], describe(dest))
            assert not problems, f"round {rnd} ({label} host, kill at {kill_at or delay}):\n" + "\n".join(
                problems[:20]
            )
            shutil.rmtree(dest)
        shutil.rmtree(tmp_path / f"fresh-{rnd}")
        if rnd % 5 == 4:
            gc(store, {head}, grace_seconds=0)  # no sync in flight now: collect the debris of killed ones
    assert commits >= 4, (commits, kills)
    assert kills >= 10, (commits, kills)


@pytest.mark.parametrize("kill_at", ["restore_data_written", "restore_before_rename", "0.12", "0.18", "0.24"])
def test_killed_restore_leaves_no_partial_tree(tmp_path: Path, kill_at: str) -> None:
    upper = tmp_path / "upper"
    upper.mkdir()
    rng = random.Random(7)
    for i in range(40):
        (upper / f"f{i}").write_bytes(rng.randbytes(rng.choice([100, 300_000])))
    common = ["--local-root", str(tmp_path / "objects"), "--cache", str(tmp_path / "cache")]
    code, out = _syncer([*common, "snapshot", "--upper", str(upper)], None, None)
    assert code == 0 and out is not None
    dest = tmp_path / "parent" / "dest"
    delay = float(kill_at) if kill_at[0].isdigit() else None
    code, _ = _syncer(
        [*common, "restore", "--snapshot", out["snapshot_id"], "--dest", str(dest)],
        None if delay else kill_at,
        delay,
    )
    assert code == -signal.SIGKILL or (delay and code == 0)  # a delay may come too late
    if dest.exists():  # the kill came after the final rename: then it must be whole
        assert not diff_trees(describe(upper), describe(dest))
        shutil.rmtree(dest)
    cleanup_leftovers(dest.parent)
    assert not dest.parent.exists() or list(dest.parent.iterdir()) == []
    restore(LocalObjectStore(tmp_path / "objects"), out["snapshot_id"], dest, tmp_path / "cache")
    assert not diff_trees(describe(upper), describe(dest))
