"""The agent's base-layer cache: stripped restores, LRU eviction of layers no sandbox needs.

The syncer subprocess and the cache disk are replaced here (their own tests cover them);
what is checked is the workspace manager's choice of what to evict and when.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from mags.agent.models import LayerRef
from mags.agent.workspaces import LAYER_GRACE_S, LAYER_MARK, SyncerError, WorkspaceManager
from mags.config import Settings
from mags.errors import StorageError

MB = 1024**2


def manager(tmp_path: Path) -> WorkspaceManager:
    return WorkspaceManager(Settings(data_dir=tmp_path / "data", image_dir=tmp_path / "images"))


def layer(wm: WorkspaceManager, key: str, snap: str, age_s: float, size: int = 100 * MB) -> Path:
    d = wm.layers_root / key / snap
    (d / "upper").mkdir(parents=True)
    (d / "upper" / "size").write_text(str(size))
    mark = d / LAYER_MARK
    mark.write_text("")
    t = time.time() - age_s
    os.utime(mark, (t, t))
    return d


class FakeCache:
    """Free space of the cache disk: a capacity minus the layers still there."""

    def __init__(self, wm: WorkspaceManager, capacity: int) -> None:
        self.wm = wm
        self.capacity = capacity

    def __call__(self) -> int:
        used = sum(int(p.read_text()) for p in self.wm.layers_root.glob("*/*/upper/size"))
        return self.capacity - used


async def test_eviction_takes_the_least_recently_used_layers_nobody_needs(tmp_path: Path) -> None:
    wm = manager(tmp_path)
    oldest = layer(wm, "u1-a", "s1", age_s=5000)
    pinned = layer(wm, "u1-b", "s1", age_s=4000)  # a fork runs on it (acquired)
    live = layer(wm, "u1-c", "s1", age_s=3000)  # an ephemeral sandbox on it (the agent's hook)
    older = layer(wm, "u2-d", "s1", age_s=2000)
    old = layer(wm, "u2-e", "s1", age_s=1000)
    recent = layer(wm, "u2-f", "s1", age_s=LAYER_GRACE_S / 2)  # just handed out: about to be mounted
    wm._pin_layers("u1-fork", [pinned])
    wm.live_layers = lambda: [live / "upper"]
    wm._cache_free = FakeCache(wm, capacity=650 * MB)  # type: ignore[method-assign]
    keep = wm.layers_root / "u3-new" / "s9"

    assert await wm._evict_layers(200 * MB, keep) == 2  # 50 MB free: two layers of 100 MB go
    assert not oldest.exists() and not older.exists()
    assert all(d.exists() for d in (pinned, live, old, recent))
    # asking for more than can be freed evicts every candidate, never the protected ones
    assert await wm._evict_layers(10_000 * MB, keep) == 1
    assert not old.exists() and all(d.exists() for d in (pinned, live, recent))
    # released: the fork's layer is fair game again
    wm._pin_layers("u1-fork", [])
    assert await wm._evict_layers(10_000 * MB, keep) == 1 and not pinned.exists()


async def test_a_layer_that_does_not_fit_makes_room_then_restores_stripped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wm = manager(tmp_path)
    stale = layer(wm, "u1-a", "s1", age_s=5000, size=300 * MB)
    wm._cache_free = FakeCache(wm, capacity=400 * MB)  # type: ignore[method-assign]
    calls: list[tuple[str, ...]] = []

    async def ensure() -> None:
        wm.layers_root.mkdir(parents=True, exist_ok=True)

    async def syncer(key: str, *op: str) -> dict[str, Any]:
        calls.append(op)
        if "--check-space" in op and wm._cache_free() < 200 * MB:
            raise SyncerError("workspace sync failed: not enough space", {"type": "NoSpace", "needed_bytes": 200 * MB})
        dest = Path(op[op.index("--dest") + 1])
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "size").write_text(str(200 * MB))
        return {"ok": True}

    monkeypatch.setattr(wm, "_ensure_layer_cache", ensure)
    monkeypatch.setattr(wm, "_syncer", syncer)
    path = await wm._layer(LayerRef(workspace_id="u1-gold", snapshot_id="snapA"))
    assert path == wm.layers_root / "u1-gold" / "snapA" / "upper"
    assert not stale.exists()  # evicted to make room
    assert len(calls) == 2 and all("--strip-privileges" in c and "--check-space" in c for c in calls)
    assert (path.parent / LAYER_MARK).exists()
    # handed out again: no restore, just marked as recently used
    assert await wm._layer(LayerRef(workspace_id="u1-gold", snapshot_id="snapA")) == path
    assert len(calls) == 2

    # bigger than the whole cache (nothing left to evict): a clear error, nothing left behind
    async def too_big(key: str, *op: str) -> dict[str, Any]:
        raise SyncerError("workspace sync failed: not enough space", {"type": "NoSpace", "needed_bytes": 5 * 1024 * MB})

    monkeypatch.setattr(wm, "_syncer", too_big)
    with pytest.raises(StorageError, match=r"the base workspace \(5.0 GB\) does not fit in this host's layer cache"):
        await wm._layer(LayerRef(workspace_id="u1-huge", snapshot_id="snapB"))
    assert not (wm.layers_root / "u1-huge" / "snapB").exists()


async def test_bad_snapshot_ids_never_reach_the_filesystem(tmp_path: Path) -> None:
    wm = manager(tmp_path)
    for snap in ("", "../x", ".hidden", "a/b"):
        with pytest.raises(Exception, match="bad snapshot id"):
            await wm._layer(LayerRef(workspace_id="u1-gold", snapshot_id=snap))
