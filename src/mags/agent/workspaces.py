"""Local copies of workspaces on an agent's host: size-limited disks, restore, sync, base layers.

A workspace's writable layer lives on its own sparse ext4 disk under
``<data_dir>/workspaces/<key>/`` (``disk.img``, mounted on ``mnt/`` while a sandbox uses it,
``meta.json`` with what the local copy corresponds to).  Persistent workspaces are synced to
the object store by the syncer subprocess (``python -m mags.storage.syncer``) under prefix
``ws/<key>/``; the control plane commits each snapshot with a compare-and-swap.

Local copy validity: ``synced_snapshot_id`` is the snapshot the local copy was restored from
or last synced to.  A run that starts from head H reuses the local copy when it is H (plus,
possibly, changes not yet synced: never thrown away); otherwise the head moved on another
host, and the local copy is replaced by a restore of H.

Base layers (``--base``) are restored once per host onto the *layer cache*: one more sparse
ext4 disk (``<data_dir>/layers/disk.img``, ``layer_cache_gb``) mounted ``nosuid,nodev`` on
``layers/mnt`` inside the server's private mount namespace, with setuid/setgid bits and
``security.*`` xattrs stripped (a base is another tenant-controlled tree; on the host it is
data, never a program to trust).  When a restore does not fit, the least recently used layers
no sandbox needs are evicted.  Every disk reserves its full size in the host's
:class:`~mags.runtime.diskspace.DiskBudget`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mags.agent.models import LayerRef, SyncResult, WorkspaceInfo, WorkspaceRef
from mags.config import Settings
from mags.errors import Conflict, NotFound, StorageError, ValidationError
from mags.runtime.disk import GB, Disk, is_mounted
from mags.runtime.diskspace import host_budget
from mags.runtime.spawn import run as run_process
from mags.storage.sync.restore import cleanup_leftovers

log = logging.getLogger(__name__)


@dataclass
class WorkspaceMeta:
    key: str
    mode: str = "local"
    synced_snapshot_id: str | None = None
    last_used: float = field(default_factory=time.time)
    layers: list[dict[str, str]] = field(default_factory=list)


RELEASE_WAIT_S = 300.0
# a layer handed out this recently may be about to be mounted: never evicted before
LAYER_GRACE_S = 120.0
LAYER_MARK = ".complete"  # its mtime: when the layer was last handed out (LRU order)
# what may sit in <data_dir>/layers besides the cache disk (everything else is a layer of the
# old layout, restored on the host's root filesystem with its setuid bits: removed at start)
LAYER_CACHE_FILES = frozenset({"disk.img", "disk.img.new", "mnt"})


def store_prefix(key: str) -> str:
    return f"ws/{key}/"


class SyncerError(StorageError):
    def __init__(self, message: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.result = result or {}

    @property
    def no_space(self) -> bool:
        return self.result.get("type") == "NoSpace"


class WorkspaceManager:
    """Owns every local workspace copy and base layer of this agent."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.data_dir / "workspaces"
        self.cache_dir = settings.data_dir / "cache" / "sync"
        self.budget = host_budget(settings.data_dir, settings.disk_free_margin_gb)
        self.layer_cache = Disk(settings.data_dir / "layers", self.budget, "the base-layer cache")
        self._locks: dict[str, asyncio.Lock] = {}
        self._in_use: dict[str, str] = {}  # key -> sandbox id
        self._layer_locks: dict[str, asyncio.Lock] = {}
        self._cache_lock = asyncio.Lock()  # creating the layer cache, evicting from it
        self._layer_pins: Counter[Path] = Counter()  # layer dir -> workspaces acquired on it
        self._pinned_by: dict[str, list[Path]] = {}  # workspace key -> its pinned layer dirs
        # the layer dirs live sandboxes use (set by the agent); without it, LAYER_GRACE_S and
        # the pins of acquired workspaces keep layers in use from being evicted
        self.live_layers: Callable[[], Iterable[Path]] | None = None

    @property
    def layers_root(self) -> Path:
        """Where restored base layers live: ``<key>/<snapshot>/upper`` on the layer cache."""
        return self.layer_cache.mnt

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """After a restart no sandbox uses any disk: unmount what a crash left mounted.

        Every disk image found is counted in the disk budget; the layer cache is mounted again
        (its layers are still good) and half-restored layers are dropped.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        for d in self.root.iterdir():
            if d.is_dir():
                Disk(d).umount()
                (d / "disk.img.new").unlink(missing_ok=True)  # a create cut short
                self.budget.track(d / "disk.img")
        self._start_layer_cache()

    def _start_layer_cache(self) -> None:
        cache = self.layer_cache
        cache.dir.mkdir(parents=True, exist_ok=True)
        cache.umount()
        for entry in cache.dir.iterdir():
            if entry.name not in LAYER_CACHE_FILES:
                log.warning("removing %s: base layers now live on the layer cache disk", entry)
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        (cache.dir / "disk.img.new").unlink(missing_ok=True)
        if not cache.exists():
            return
        self.budget.track(cache.image)
        try:
            cache.mount()
        except Exception as exc:  # noqa: BLE001 - a broken cache is only a cache
            log.warning("layer cache unusable (%s): making a new one", exc)
            cache.destroy()
            return
        for d in cache.mnt.glob("*/*"):
            if d.is_dir() and not (d / LAYER_MARK).exists():
                shutil.rmtree(d, ignore_errors=True)

    def close(self) -> None:
        for d in self.root.iterdir() if self.root.exists() else []:
            if d.is_dir() and d.name not in self._in_use:
                Disk(d).umount()
        self.layer_cache.umount()

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def check_key(key: str) -> str:
        if not key or "/" in key or key.startswith(".") or len(key) > 200:
            raise ValidationError(f"bad workspace id {key!r}")
        return key

    def _dir(self, key: str) -> Path:
        return self.root / self.check_key(key)

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def _meta(self, key: str) -> WorkspaceMeta | None:
        try:
            raw = json.loads((self._dir(key) / "meta.json").read_text())
        except (OSError, ValueError):
            return None
        return WorkspaceMeta(**{k: v for k, v in raw.items() if k in WorkspaceMeta.__dataclass_fields__})

    def _save_meta(self, meta: WorkspaceMeta) -> None:
        d = self._dir(meta.key)
        tmp = d / "meta.json.tmp"
        tmp.write_text(json.dumps(asdict(meta)))
        os.replace(tmp, d / "meta.json")

    def disk(self, key: str) -> Disk:
        return Disk(self._dir(key), self.budget, "the workspace disk")

    def in_use_by(self, key: str) -> str | None:
        return self._in_use.get(key)

    # ------------------------------------------------------------------ syncer
    def _store_args(self, key: str) -> list[str]:
        s = self.settings
        # one repository (prefix) and one host cache per workspace: a cache shared across
        # prefixes could make a snapshot reference another workspace's packs
        args = ["--prefix", store_prefix(key), "--cache", str(self.cache_dir / key)]
        if s.object_store == "s3":
            args = ["--store", "s3", "--s3-endpoint", s.s3_endpoint or "", "--s3-bucket", s.s3_bucket,
                    "--s3-region", s.s3_region, *args]
        else:
            args = ["--store", "local", "--local-root", str(s.local_store_root), *args]
        return args

    async def _syncer(self, key: str, *op: str) -> dict[str, Any]:
        env = dict(os.environ)
        if self.settings.s3_access_key:
            env["MAGS_S3_ACCESS_KEY"] = self.settings.s3_access_key
        if self.settings.s3_secret_key:
            env["MAGS_S3_SECRET_KEY"] = self.settings.s3_secret_key
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        code, out, err = await run_process(
            [sys.executable, "-m", "mags.storage.syncer", *self._store_args(key), *op], env=env
        )
        lines = [ln for ln in out.decode(errors="replace").splitlines() if ln.startswith("{")]
        try:
            result = json.loads(lines[-1]) if lines else {}
        except ValueError:
            result = {}
        if code != 0 or not result.get("ok"):
            msg = result.get("error") or err.decode(errors="replace").strip()[-500:] or f"exit {code}"
            raise SyncerError(f"workspace sync failed: {msg}", result)
        return result

    # ------------------------------------------------------------------ acquire / release
    async def acquire(self, ref: WorkspaceRef, disk_gb: int, sandbox_id: str) -> tuple[Path, list[Path]]:
        """Prepare the workspace for a sandbox: (writable dir with upper/work, base layer dirs)."""
        key = self.check_key(ref.workspace_id)
        await self._wait_released(key, sandbox_id)
        async with self._lock(key):
            holder = self._in_use.get(key)
            if holder is not None and holder != sandbox_id:
                raise Conflict(f"workspace is in use by sandbox {holder}")
            layer_dirs = [await self._layer(layer) for layer in ref.layers]
            disk = self.disk(key)
            meta = self._meta(key)
            fresh = meta is None or not disk.exists()
            wanted = ref.snapshot_id if ref.mode == "persistent" else None
            if not fresh and ref.mode == "persistent" and wanted is not None:
                assert meta is not None
                if meta.synced_snapshot_id != wanted:
                    # the head moved on (another host) or this copy is of something else
                    log.info("workspace %s: local copy is %s, head is %s: restoring", key,
                             meta.synced_snapshot_id, wanted)
                    await asyncio.to_thread(disk.destroy)
                    fresh = True
            if fresh:
                await asyncio.to_thread(disk.create, disk_gb)
                meta = WorkspaceMeta(key=key, mode=ref.mode)
            assert meta is not None
            if disk.size_bytes != disk_gb * GB:
                await asyncio.to_thread(disk.resize, disk_gb)
            await asyncio.to_thread(disk.mount)
            await asyncio.to_thread(cleanup_leftovers, disk.mnt)  # temp dirs of killed restores
            if fresh and wanted is not None:
                try:
                    await self._syncer(key, "restore", "--snapshot", wanted,
                                       "--dest", str(disk.upper), "--replace")
                except Exception:
                    await asyncio.to_thread(disk.destroy)
                    raise
                meta.synced_snapshot_id = wanted
            meta.mode = ref.mode
            meta.last_used = time.time()
            meta.layers = [lr.model_dump() for lr in ref.layers]
            self._save_meta(meta)
            self._in_use[key] = sandbox_id
            self._pin_layers(key, [d.parent for d in layer_dirs])
            return disk.mnt, layer_dirs

    async def _wait_released(self, key: str, sandbox_id: str, timeout: float = RELEASE_WAIT_S) -> None:
        """Wait while another sandbox still holds the workspace.

        The control plane never runs two sandboxes on a workspace, so a holder here is one
        that is ending (its final sync of a big workspace can take a while).
        """
        deadline = time.monotonic() + timeout
        while self._in_use.get(key) not in (None, sandbox_id) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def release(self, key: str, sandbox_id: str) -> None:
        async with self._lock(key):
            if self._in_use.get(key) != sandbox_id:
                return
            del self._in_use[key]
            self._pin_layers(key, [])
            meta = self._meta(key)
            if meta is not None:
                meta.last_used = time.time()
                self._save_meta(meta)
            await asyncio.to_thread(self.disk(key).umount)

    # ------------------------------------------------------------------ base layers
    async def _layer(self, layer: LayerRef) -> Path:
        """A base snapshot restored read-only (stripped), shared by every fork on this host."""
        self.check_key(layer.workspace_id)
        if not layer.snapshot_id or "/" in layer.snapshot_id or layer.snapshot_id.startswith("."):
            raise ValidationError(f"bad snapshot id {layer.snapshot_id!r}")
        await self._ensure_layer_cache()
        d = self.layers_root / layer.workspace_id / layer.snapshot_id
        lock = self._layer_locks.setdefault(str(d), asyncio.Lock())
        async with lock:
            mark = d / LAYER_MARK
            if mark.exists():
                os.utime(mark)  # most recently used
                return d / "upper"
            await asyncio.to_thread(d.mkdir, parents=True, exist_ok=True)
            args = ("restore", "--snapshot", layer.snapshot_id, "--dest", str(d / "upper"), "--replace",
                    "--strip-privileges")  # fmt: skip
            try:
                await self._syncer(layer.workspace_id, *args, "--check-space")
            except SyncerError as exc:
                if not exc.no_space:
                    raise
                needed = int(exc.result.get("needed_bytes", 0))
                await self._evict_layers(needed, keep=d)
                try:
                    await self._syncer(layer.workspace_id, *args, "--check-space")
                except SyncerError as again:
                    if not again.no_space:
                        raise
                    await asyncio.to_thread(shutil.rmtree, d, True)
                    raise StorageError(self._too_big(needed)) from again
            mark.write_text(str(time.time()))
            return d / "upper"

    def _too_big(self, needed: int) -> str:
        size = self.layer_cache.size_bytes if self.layer_cache.exists() else 0
        return (
            f"the base workspace ({needed / GB:.1f} GB) does not fit in this host's layer cache "
            f"({size / GB:.0f} GB, with the layers in use): the operator can raise layer_cache_gb"
        )

    async def _ensure_layer_cache(self) -> None:
        """Create (sized to the setting, at most half of what the host can promise) and mount it."""
        cache = self.layer_cache
        if cache.exists() and is_mounted(cache.mnt):
            return
        async with self._cache_lock:
            if not cache.exists():
                available = max(0, self.budget.available_bytes())
                size_gb = max(1, min(self.settings.layer_cache_gb, available // 2 // GB))
                await asyncio.to_thread(cache.create, size_gb)
                log.info("layer cache created: %d GB", size_gb)
            await asyncio.to_thread(cache.mount)

    def _pin_layers(self, key: str, dirs: list[Path]) -> None:
        """Record the layers workspace ``key`` runs on (until released): never evicted."""
        for d in self._pinned_by.pop(key, []):
            self._layer_pins[d] -= 1
            if self._layer_pins[d] <= 0:
                del self._layer_pins[d]
        if dirs:
            self._pinned_by[key] = dirs
            self._layer_pins.update(dirs)

    def _evictable_layers(self, keep: Path) -> list[tuple[float, Path]]:
        """Complete layers no sandbox needs, least recently used first."""
        live = {Path(p).parent for p in (self.live_layers() if self.live_layers is not None else ())}
        cutoff = time.time() - LAYER_GRACE_S
        out = []
        for d in self.layers_root.glob("*/*"):
            if d == keep or d in live or self._layer_pins.get(d):
                continue
            try:
                used = (d / LAYER_MARK).stat().st_mtime
            except OSError:
                continue  # being restored
            if used < cutoff:
                out.append((used, d))
        return sorted(out)

    def _cache_free(self) -> int:
        st = os.statvfs(self.layers_root)
        return st.f_bavail * st.f_frsize

    async def _evict_layers(self, needed: int, keep: Path) -> int:
        """Delete unused layers, oldest first, until ``needed`` bytes are free; returns how many."""
        evicted = 0
        async with self._cache_lock:
            for _, d in self._evictable_layers(keep):
                if await asyncio.to_thread(self._cache_free) >= needed:
                    break
                lock = self._layer_locks.setdefault(str(d), asyncio.Lock())
                async with lock:
                    (d / LAYER_MARK).unlink(missing_ok=True)  # no longer handed out
                    await asyncio.to_thread(shutil.rmtree, d, True)
                evicted += 1
                log.info("layer cache: evicted %s", d)
        return evicted

    # ------------------------------------------------------------------ sync
    async def sync(self, key: str, parent: str | None) -> SyncResult:
        """Snapshot the workspace's upper dir (commit is the control plane's CAS)."""
        key = self.check_key(key)
        disk = self.disk(key)
        started = time.monotonic()
        mounted_here = False
        async with self._lock(key):
            if not is_mounted(disk.mnt):
                await asyncio.to_thread(disk.mount)
                mounted_here = True
            try:
                args = ["snapshot", "--upper", str(disk.upper)]
                if parent:
                    args += ["--parent", parent]
                res = await self._syncer(key, *args)
            finally:
                if mounted_here:
                    await asyncio.to_thread(disk.umount)
            snap = res.get("snapshot_id")
            changed = bool(res.get("changed"))
            meta = self._meta(key) or WorkspaceMeta(key=key, mode="persistent")
            if snap:
                meta.synced_snapshot_id = snap
                self._save_meta(meta)
            return SyncResult(
                workspace_id=key, snapshot_id=snap, parent_snapshot_id=parent, changed=changed,
                bytes_uploaded=int(res.get("bytes_uploaded", 0)), files=int(res.get("files", 0)),
                seconds=round(time.monotonic() - started, 3),
            )

    # ------------------------------------------------------------------ admin
    def info(self, key: str) -> WorkspaceInfo:
        meta = self._meta(key)
        disk = self.disk(key)
        if meta is None or not disk.exists():
            raise NotFound(f"no local copy of workspace {key} on this agent")
        used = disk.used_bytes() if is_mounted(disk.mnt) else os.stat(disk.image).st_blocks * 512
        return WorkspaceInfo(
            workspace_id=key, mode=meta.mode if meta.mode in ("local", "persistent") else "local",  # type: ignore[arg-type]
            disk_gb=disk.size_bytes // GB, used_bytes=used, in_use=key in self._in_use,
            synced_snapshot_id=meta.synced_snapshot_id, last_used=meta.last_used,
        )

    def list(self) -> list[WorkspaceInfo]:
        out = []
        for d in sorted(self.root.iterdir()) if self.root.exists() else []:
            if d.is_dir():
                try:
                    out.append(self.info(d.name))
                except NotFound:
                    continue
        return out

    async def resize(self, key: str, disk_gb: int) -> WorkspaceInfo:
        key = self.check_key(key)
        async with self._lock(key):
            if key in self._in_use:
                raise Conflict(f"workspace {key} is in use by sandbox {self._in_use[key]}: stop it first")
            disk = self.disk(key)
            if not disk.exists():
                raise NotFound(f"no local copy of workspace {key} on this agent")
            await asyncio.to_thread(disk.resize, disk_gb)
        return self.info(key)

    async def delete(self, key: str) -> None:
        key = self.check_key(key)
        async with self._lock(key):
            if key in self._in_use:
                raise Conflict(f"workspace {key} is in use by sandbox {self._in_use[key]}: stop it first")
            d = self._dir(key)
            if not d.exists():
                raise NotFound(f"no local copy of workspace {key} on this agent")
            await asyncio.to_thread(self.disk(key).destroy)
            layers = self.layers_root / key if is_mounted(self.layers_root) else None
            for extra in (layers, self.cache_dir / key):
                if extra is not None and extra.exists():
                    await asyncio.to_thread(shutil.rmtree, extra, True)
